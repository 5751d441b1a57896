"""The `unlearn` command line.

unlearn forget CONFIG.yaml [key=value ...]     train a recipe (also under `accelerate launch -m unlearn`)
unlearn forget recipes/target.yaml target="Harry Potter"   forget what the model knows about a target
unlearn demo                                    unlearn on the built-in default model and show before/after
unlearn benchmark PROTOCOL.yaml                 the standard protocol: target/retain models, every recipe, attacks, RESULTS.md
unlearn sweep SWEEP.yaml [--workers N]          search a recipe's settings (Optuna), pick a risk-certified one
unlearn recipes                                 list the recipes, their papers and the data they need
unlearn push RUN_DIR --repo-id USER/NAME         upload a finished run and its model card to the Hugging Face Hub
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from .errors import NonFiniteLossError, UnlearnError


def cmd_forget(args: argparse.Namespace) -> int:
    from .precheck import parse_overrides, precheck_run, read_recipe_values

    # The settings, data files and output directory are checked before the training stack is imported.
    values = read_recipe_values(args.config, parse_overrides(args.overrides))
    precheck_run(values)

    from .loading import load_model_and_tokenizer
    from .recipes import get_recipe, recipe_config
    from .run import run
    from .rundir import check_output_dir

    config = recipe_config(values)
    check_output_dir(config)
    if config.target or config.request:
        return _forget_target(config, args)
    # What depends on the recipe's defaults (a retain set it needs) and data the precheck cannot read (CSV,
    # Parquet, a Hub dataset) is checked here, still before the model is loaded; the records are passed on.
    forget, retain = get_recipe(config.recipe).load_data(config, config.forget, config.retain)
    model, tokenizer = load_model_and_tokenizer(
        config.model_name_or_path, config.dtype, quantization=config.quantization
    )
    run(config, model, tokenizer, forget, retain)
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"Unlearned adapter written to {config.output_dir}")
    return 0


def _forget_target(config, args: argparse.Namespace) -> int:
    from .loading import load_model_and_tokenizer
    from .target_request import resolve_request
    from .targets import forget_target

    req = resolve_request(config.target, config.request)
    print(f"Request understood as: {req.describe()}.", flush=True)
    asks = config.request and not args.yes and not args.dry_run and sys.stdin.isatty()
    if asks and input("Go on? [Y/n] ").strip().lower() not in ("", "y", "yes"):
        print("Stopped; nothing was run. Pass target=NAME to name the target yourself.")
        return 1
    model, tokenizer = load_model_and_tokenizer(
        config.model_name_or_path, config.dtype, quantization=config.quantization
    )
    stop = args.stop_when_forgotten
    forget_target(
        model, tokenizer, config.target, config.request, config=config, dry_run=args.dry_run, stop_when_forgotten=stop
    )
    where = Path(config.output_dir)
    if args.dry_run:
        print(f"Dry run: review the sets in {where / 'target'}; run again without --dry-run to unlearn them.")
    else:
        print(f"Unlearned adapter written to {where}; the before/after is in {where / 'target' / 'REPORT.md'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .precheck import parse_overrides

    run_demo(
        model=args.model,
        recipe=args.recipe,
        output_dir=args.output_dir,
        attacks=not args.no_attacks,
        require_known=not args.no_check,
        **parse_overrides(args.overrides),
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .precheck import parse_overrides
    from .sweeping import load_sweep, sweep, work

    s = load_sweep(args.sweep, parse_overrides(args.overrides))
    out = Path(args.out or Path("runs") / "sweep" / s.name)
    if args.worker:  # started by `sweep --workers N`: trials only, the parent writes the report
        work(s, out)
        return 0
    if args.workers < 1:
        raise UnlearnError(f"--workers must be at least 1, got {args.workers}.")
    result = sweep(s, out=out, workers=args.workers)
    print((out / "TRIALS.md").read_text())
    if result["risk"] is not None:
        print((out / "RISK.md").read_text())
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmarking import benchmark, load_protocol
    from .precheck import parse_overrides

    protocol = load_protocol(args.protocol, parse_overrides(args.overrides))
    out = Path(args.out or Path("runs") / "benchmark" / protocol.name)
    benchmark(protocol, out=out, only=args.only)
    if args.only:
        print(f"Target and retain models and their evaluations written to {out}")
    else:
        print((out / "RESULTS.md").read_text())
        print(f"Benchmark written to {out} (RESULTS.md, results.json, tradeoff.png, relearn_curves.png)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate
    from .loading import ensure_pad_token, load_model_or_adapter

    params = _suite_params(args)
    model, tokenizer = load_model_or_adapter(args.model)
    ensure_pad_token(tokenizer)
    out = args.out or str(Path("runs") / "eval" / Path(args.model).name)
    result = evaluate(
        model,
        tokenizer,
        suite=args.suite,
        reference=args.reference,
        out=out,
        skip=_split(args.skip),
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        **_generation_batch(args),
        **params,
    )
    print((Path(out) / "report.md").read_text())
    print(f"Evaluation written to {out}")
    return 0 if result.metrics else 1


def cmd_reference(args: argparse.Namespace) -> int:
    from .evaluation import METRICS, evaluate, load_suite
    from .finetuning import finetune
    from .loading import ensure_pad_token, load_model_and_tokenizer
    from .precheck import parse_overrides

    params = _suite_params(args)
    suite = load_suite(args.suite, **params)  # fail on a bad suite before training
    skip = [n for n, s in suite["metrics"].items() if METRICS[s["metric"]].needs_reference]
    out = Path(args.out)
    overrides = parse_overrides(args.overrides)
    if args.full:
        model, tokenizer = load_model_and_tokenizer(args.model)
        ensure_pad_token(tokenizer)
        finetune(model, tokenizer, args.full, output_dir=out / "target", **overrides)
        print(f"Target model (trained on {args.full}) written to {out / 'target'}")
    model, tokenizer = load_model_and_tokenizer(args.model)
    ensure_pad_token(tokenizer)
    trained = finetune(model, tokenizer, args.retain, output_dir=out / "retain_model", **overrides)
    evaluate(
        trained,
        tokenizer,
        suite=args.suite,
        out=out,
        skip=skip,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        **_generation_batch(args),
        **params,
    )
    print(f"Reference (retain-only model and its evaluation log) written to {out}; use --reference {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .evaluation import compare

    out = compare(args.runs, args.out, x=args.x, y=args.y)
    print((out / "compare.md").read_text())
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from .attacks import attack
    from .loading import ensure_pad_token, load_model_and_tokenizer, load_model_or_adapter
    from .precheck import parse_overrides

    model, tokenizer = load_model_or_adapter(args.model)
    ensure_pad_token(tokenizer)
    original = load_model_and_tokenizer(args.original)[0] if args.original else None
    out = args.out or str(Path("runs") / "attacks" / Path(args.model).name)
    attack(
        model,
        tokenizer,
        args.name,
        forget=args.forget,
        retain=args.retain,
        original=original,
        out=out,
        limit=args.limit,
        **parse_overrides(args.options),
    )
    print((Path(out) / "ATTACKS.md").read_text())
    print(f"Robustness report written to {out}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    import os

    from .hub import push_to_hub

    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise UnlearnError(
                f"`--token-env {args.token_env}`: that environment variable is not set or empty. "
                f"Export the token in it, or leave `--token-env` out to use `hf auth login`/HF_TOKEN."
            )
    url = push_to_hub(args.run_dir, args.repo_id, private=args.private, token=token, include_data=args.include_data)
    print(f"Pushed {args.run_dir} to {url}")
    return 0


def cmd_sae_train(args: argparse.Namespace) -> int:
    from .data import load_records
    from .models import resolve_model
    from .recipes.sae import train_sae

    ds = load_records(args.text)
    if "text" in ds.column_names:
        texts = [str(t) for t in ds["text"]]
    elif {"question", "answer"} <= set(ds.column_names):
        texts = [f"{q} {a}" for q, a in zip(ds["question"], ds["answer"], strict=True)]
    else:
        raise UnlearnError(f"`--text` needs a `text` column or question/answer columns; found {ds.column_names}.")
    train_sae(resolve_model(args.model), texts, args.layer, args.out, args.d_sae, args.tokens)
    print(f"SAE for layer {args.layer} written to {args.out}; use it with recipe `sae`, sae_path={args.out}")
    return 0


def _suite_params(args: argparse.Namespace) -> dict:
    from .precheck import parse_overrides

    params = parse_overrides(args.param)
    if args.forget_split:
        params["forget_split"] = args.forget_split
    return params


def _generation_batch(args: argparse.Namespace) -> dict:
    return {"generation_batch_size": args.generation_batch_size} if args.generation_batch_size else {}


def _split(items: list[str]) -> list[str]:
    return [x for item in items for x in item.split(",") if x]


def cmd_recipes(args: argparse.Namespace) -> int:
    if not args.verbose:  # read from the recipe sources: no training stack is imported
        from .recipe_catalogue import catalogue

        for r in catalogue():
            print(f"{r['name']:10s} {r['paper']}")
            print(f"{'':10s} data: {r['data_needs']}")
        return 0
    from .recipes import RECIPES
    from .trainer import paper

    for name, cls in RECIPES.items():
        print(f"{name:10s} {paper(cls)}")
        print(f"{'':10s} data: {cls.data_needs}")
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
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="With target=... or request=...: build and write the forget/neighbor/retain sets, then stop",
    )
    p.add_argument("--yes", action="store_true", help="Do not ask to confirm how a request=... was understood")
    p.add_argument(
        "--stop-when-forgotten",
        action="store_true",
        help="With target=... or request=...: stop training at the first epoch after which no trained fact is stated",
    )
    p.set_defaults(func=cmd_forget)
    p = sub.add_parser("demo", help="Unlearn Harry Potter facts from SmolLM2-135M-Instruct and show before/after.")
    p.add_argument("--model", default="smollm2-135m", help="Built-in name, local directory or Hub id.")
    p.add_argument("--recipe", default=DEMO_RECIPE, help=f"Recipe to run (default: {DEMO_RECIPE}).")
    p.add_argument("--output-dir", default="runs/demo", help="Run directory (an earlier demo run there is replaced).")
    p.add_argument("--no-attacks", action="store_true", help="Skip the robustness table (attacks).")
    p.add_argument("--no-check", action="store_true", help="Run even if the model does not know the demo facts.")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the demo's settings")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser(
        "benchmark",
        help="Run a benchmark protocol (e.g. benchmarks/protocols/tofu_smollm2_cpu.yaml): "
        "target and retain models, each recipe x settings, evaluation, attacks, RESULTS.md.",
    )
    p.add_argument("protocol", help="Protocol YAML file")
    p.add_argument("--out", help="Run directory (default runs/benchmark/<name>); run again to resume")
    p.add_argument(
        "--only",
        choices=["models"],
        help="Stop after the target and retain models and their evaluations (and the entries' retain files)",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides of the protocol's top-level keys (YAML values)")
    p.set_defaults(func=cmd_benchmark)
    p = sub.add_parser(
        "sweep",
        help="Search a recipe's settings on a benchmark protocol with Optuna; write every trial, the Pareto front "
        "and the chosen (optionally risk-certified) configuration as a recipe file.",
    )
    p.add_argument("sweep", help="Sweep YAML file")
    p.add_argument("--out", help="Sweep directory (default runs/sweep/<name>); run again to resume")
    p.add_argument("--workers", type=int, default=1, help="Worker processes sharing the study (default 1)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="key=value overrides of the sweep's top-level keys (YAML values)")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("eval", help="Evaluate a model or an unlearned adapter directory with a suite from eval/.")
    p.add_argument("model", help="Adapter directory from `unlearn forget`, model directory, built-in name or Hub id")
    _eval_options(p)
    p.add_argument("--reference", help="Reference evaluation (directory or EVAL.json) for forget quality / privleak")
    p.add_argument("--skip", action="append", default=[], help="Metric entries to leave out (comma-separated)")
    p.add_argument("--out", help="Output directory (default runs/eval/<model name>)")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("reference", help="Train the retain-only reference model and write its evaluation log.")
    p.add_argument("--model", required=True, help="Base model the target was fine-tuned from")
    p.add_argument("--retain", required=True, help="Retain data (e.g. tofu:retain90)")
    p.add_argument("--full", help="Also train the TOFU target on this data (e.g. tofu:full), into OUT/target")
    _eval_options(p)
    p.add_argument("--out", required=True, help="Output directory")
    p.add_argument("overrides", nargs="*", help="key=value fine-tuning settings (e.g. num_train_epochs=5)")
    p.set_defaults(func=cmd_reference)
    p = sub.add_parser(
        "compare", help="Plot forget quality vs model utility across evaluations; mark the Pareto front."
    )
    p.add_argument("runs", nargs="+", help="Evaluation directories (each with SUMMARY.json)")
    p.add_argument("--out", default="runs/compare", help="Output directory")
    p.add_argument("--x", default="forget_quality")
    p.add_argument("--y", default="model_utility")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("attack", help="Try to bring the forgotten knowledge back; write a robustness table.")
    p.add_argument("name", help="relearn, keyword, quantize, probe, latent, or all")
    p.add_argument("model", help="The unlearned model: adapter directory from `unlearn forget`, or a model")
    p.add_argument("--forget", required=True, help="Forget QA data (e.g. tofu:forget10_perturbed for latent/probe)")
    p.add_argument("--retain", help="Retain QA data (few-shot probe, relearning on related data)")
    p.add_argument("--original", help="The model before unlearning, when MODEL is not an adapter")
    p.add_argument("--limit", type=int, help="Use the first N forget questions")
    p.add_argument("--out", help="Output directory (default runs/attacks/<model name>)")
    p.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        help="key=value attack option, repeatable (e.g. --set k=4 --set steps=10)",
    )
    p.set_defaults(func=cmd_attack)
    p = sub.add_parser("sae-train", help="Train a sparse autoencoder on a layer with sae-lens (extra `sae`), offline.")
    p.add_argument("--model", required=True, help="Model directory, built-in name or Hub id")
    p.add_argument("--text", required=True, help="Local text (a `text` column) or QA data to read activations from")
    p.add_argument("--layer", type=int, required=True, help="Decoder layer whose output the SAE reads")
    p.add_argument("--out", required=True, help="Output directory")
    p.add_argument("--d-sae", type=int, default=None, help="Latents (default 4 x hidden size)")
    p.add_argument("--tokens", type=int, default=200_000, help="Training tokens")
    p.set_defaults(func=cmd_sae_train)
    p = sub.add_parser("push", help="Upload a finished run (adapter, model card, eval summaries) to the Hub.")
    p.add_argument("run_dir", help="Output directory of `unlearn forget`")
    p.add_argument("--repo-id", required=True, help="Hub model repo, USER/NAME (created if missing)")
    p.add_argument("--private", action="store_true", help="Create the repo as private")
    p.add_argument(
        "--include-data",
        action="store_true",
        help="Also upload the per-sample logs, which quote the forget questions, answers and generations",
    )
    p.add_argument("--token-env", help="Environment variable holding the token (default: `hf auth login` or HF_TOKEN)")
    p.set_defaults(func=cmd_push)
    p = sub.add_parser("recipes", help="List the recipes.")
    p.add_argument("-v", "--verbose", action="store_true", help="Also list each recipe's own defaults.")
    p.set_defaults(func=cmd_recipes)
    return parser


def _eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="tofu", help="Suite name in eval/ or a YAML path (default: tofu)")
    p.add_argument("--forget-split", help="TOFU forget split: forget01, forget05 or forget10")
    p.add_argument("--param", action="append", default=[], help="Suite parameter key=value (repeatable)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument(
        "--generation-batch-size",
        type=int,
        default=None,
        help="Questions decoded together for the generation metrics (default: unlearn.scoring.GENERATION_BATCH_SIZE)",
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UnlearnError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
