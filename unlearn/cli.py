"""The `unlearn` command line.

unlearn forget CONFIG.yaml [key=value ...]     train a recipe (also under `accelerate launch -m unlearn`)
unlearn demo                                    unlearn on the built-in default model and show before/after
unlearn recipes                                 list the recipes, their papers and the data they need
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from .errors import NonFiniteLossError, UnlearnError


def cmd_forget(args: argparse.Namespace) -> int:
    from .config import load_config, parse_overrides
    from .run import check_output_dir, load_model_and_tokenizer, run

    config = load_config(args.config, parse_overrides(args.overrides))
    if not config.model_name_or_path:
        raise UnlearnError("No model given: set `model_name_or_path` in the config or pass model_name_or_path=PATH.")
    if config.forget is None:
        raise UnlearnError(
            "No forget data given: set `forget` in the config (e.g. `forget: tofu:forget10`) or pass forget=PATH."
        )
    check_output_dir(config)  # fail before the model is loaded
    model, tokenizer = load_model_and_tokenizer(config.model_name_or_path, config.dtype)
    run(config, model, tokenizer, config.forget, config.retain)
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"Unlearned adapter written to {config.output_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .config import parse_overrides
    from .demo import run_demo

    run_demo(model=args.model, recipe=args.recipe, output_dir=args.output_dir, **parse_overrides(args.overrides))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from .recipes import RECIPES

    for name, cls in RECIPES.items():
        print(f"{name:10s} {cls._paper}")
        print(f"{'':10s} data: {cls.data_needs}")
        if args.verbose:
            base = {f.name: f.default for f in dataclasses.fields(cls.config_class.__mro__[1])}
            own = [
                f
                for f in dataclasses.fields(cls.config_class)
                if f.name != "recipe" and base.get(f.name, object()) != f.default
            ]
            for f in own:
                print(f"{'':10s}   {f.name} = {f.default!r}: {f.metadata.get('help', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .demo import DEMO_RECIPE

    parser = argparse.ArgumentParser(prog="unlearn", description="Make a language model forget, and prove it.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('unlearn').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("forget", help="Train an unlearning recipe described by a YAML file.")
    p.add_argument("config", help="YAML file, e.g. recipes/npo.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config (values parsed as YAML)")
    p.set_defaults(func=cmd_forget)
    p = sub.add_parser("demo", help="Unlearn Harry Potter facts from SmolLM2-135M-Instruct and show before/after.")
    p.add_argument("--model", default="smollm2-135m", help="Built-in name, local directory or Hub id.")
    p.add_argument("--recipe", default=DEMO_RECIPE, help=f"Recipe to run (default: {DEMO_RECIPE}).")
    p.add_argument("--output-dir", default="runs/demo", help="Run directory (an earlier demo run there is replaced).")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the demo's settings")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("recipes", help="List the recipes.")
    p.add_argument("-v", "--verbose", action="store_true", help="Also list each recipe's own defaults.")
    p.set_defaults(func=cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UnlearnError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
