"""Running a recipe end to end: build the trainer, train, evaluate, and save the result into the run directory
(`rundir`: safe to interrupt at any point, resumable). Models are loaded by `loading`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import PartialState

from .config import UnlearnConfig, build_config
from .data import DataSource, fingerprint
from .errors import NonFiniteLossError, UnlearnError
from .loading import ensure_pad_token, load_model_or_adapter
from .recipes import get_recipe
from .rundir import CONFIG_FILE, LOADED_LAST, LOG_FILE, RUN_FILE, check_output_dir, clear_for_overwrite, write_atomic
from .trainer import paper

logger = logging.getLogger(__name__)

PACKAGES = ("unlearn-toolkit", "torch", "transformers", "peft", "accelerate", "datasets", "trl")


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _finalize(trainer, config: UnlearnConfig, started: float, sources: tuple = (None, None)) -> None:
    out = Path(config.output_dir)
    staging = out / ".final.tmp"
    if trainer.accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))  # every process calls it; only the main one writes
    if trainer.accelerator.is_main_process:
        files = sorted(staging.iterdir(), key=lambda p: p.name in LOADED_LAST)
        for f in files:
            os.replace(f, out / f.name)
        shutil.rmtree(staging)
        with open(out / LOG_FILE, "w") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in trainer.state.log_history)
        write_atomic(out / RUN_FILE, json.dumps(_metadata(trainer, config, started, sources), indent=2))
        if not config.keep_checkpoints:
            for ckpt in out.glob("checkpoint-*"):
                shutil.rmtree(ckpt)
    trainer.accelerator.wait_for_everyone()


def _metadata(trainer, config: UnlearnConfig, started: float, sources: tuple = (None, None)) -> dict[str, Any]:
    base = getattr(trainer.accelerator.unwrap_model(trainer.model).config, "_name_or_path", None)
    last = next((row for row in reversed(trainer.state.log_history) if "forget_loss" in row), {})

    def describe(source, records):
        if records is None:
            return None
        if not isinstance(source, (str, os.PathLike, dict)):
            source = f"{type(source).__name__} passed from Python"
        return {
            "source": str(source) if isinstance(source, os.PathLike) else source,
            "rows": len(records),
            "fingerprint": fingerprint(records),
        }

    return {
        "status": "complete",
        "recipe": trainer._name,
        "paper": paper(type(trainer)),
        "base_model": config.model_name_or_path or base,
        "adapter": config.adapter,
        "data": {
            "forget": describe(config.forget if config.forget is not None else sources[0], trainer.forget_records),
            "retain": describe(config.retain if config.retain is not None else sources[1], trainer.retain_records),
        },
        "seed": config.seed,
        "global_step": trainer.state.global_step,
        "final": {k: v for k, v in last.items() if k in ("loss", "forget_loss", "forget_nll", "retain_loss")},
        "evaluation": (
            trainer.suite_evaluation.summary(trainer.state) if getattr(trainer, "suite_evaluation", None) else None
        ),
        "runtime_s": round(time.time() - started, 1),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


# ---- running ----------------------------------------------------------------------------------------------------


def run(
    config: UnlearnConfig,
    model: torch.nn.Module,
    tokenizer,
    forget: DataSource,
    retain: DataSource | None = None,
    save: bool = True,
    trainer_class: type | None = None,
    callbacks: list | None = None,
):
    """Train `config.recipe` (or `trainer_class`) on `model` and return the trained model; with `save`, write the
    run directory."""
    started = time.time()
    recipe = trainer_class or get_recipe(config.recipe)
    if not isinstance(config, recipe.config_class):
        raise UnlearnError(
            f"Config is a {type(config).__name__}; recipe `{recipe._name}` needs {recipe.config_class.__name__}."
        )
    resume_from = check_output_dir(config) if save else None
    # Every process has checked the directory before the main process writes into it: a slower process would
    # otherwise find the main process's fresh files and refuse the directory as taken.
    PartialState().wait_for_everyone()
    ensure_pad_token(tokenizer)
    trainer = recipe(
        model=model, args=config, forget=forget, retain=retain, processing_class=tokenizer, callbacks=callbacks
    )
    out = Path(config.output_dir)
    if save and PartialState().is_main_process:
        if config.overwrite and out.exists():
            clear_for_overwrite(out)
        out.mkdir(parents=True, exist_ok=True)
        if not (out / CONFIG_FILE).exists():
            write_atomic(out / CONFIG_FILE, yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
    trainer.accelerator.wait_for_everyone()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except NonFiniteLossError as e:
        saved = None
        if save:
            saved = out / f"last-good-step-{e.step - 1}"
            trainer.save_model(str(saved))
        raise NonFiniteLossError(e.step, str(saved) if saved else None) from None
    model = trainer.accelerator.unwrap_model(trainer.model)
    if save:
        _finalize(trainer, config, started, (forget, retain))
        if config.eval_suite:
            if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
                # The trained weights are sharded over the processes: the main process evaluates the saved run,
                # reloaded whole, while the others wait (no process is left inside a collective call).
                if PartialState().is_main_process:
                    saved, tokenizer = load_model_or_adapter(str(out), config.dtype)
                    _evaluate_run(saved, tokenizer, config)
                PartialState().wait_for_everyone()
            elif trainer.accelerator.is_main_process:
                _evaluate_run(model, tokenizer, config)
    return model


def _evaluate_run(model, tokenizer, config: UnlearnConfig) -> None:
    """The evaluation package on the result, into `output_dir/eval` (what PURGE and TOFU report beside training)."""
    from .evaluation import METRICS, evaluate, load_suite

    params = dict(config.eval_params or {})
    skip = []
    if not config.eval_reference:
        suite = load_suite(config.eval_suite, **params)
        skip = [n for n, s in suite["metrics"].items() if METRICS[s["metric"]].needs_reference]
    evaluate(
        model,
        tokenizer,
        suite=config.eval_suite,
        reference=config.eval_reference,
        out=Path(config.output_dir) / "eval",
        skip=skip,
        **params,
    )


def forget(
    model: torch.nn.Module,
    tokenizer,
    forget: DataSource | None = None,
    retain: DataSource | None = None,
    recipe: str | None = None,
    output_dir: str | os.PathLike | None = None,
    **overrides: Any,
):
    """Unlearn `forget` from an already loaded model; returns the `PeftModel` (or the model, with `adapter="none"`).

    `overrides` are config keys of the recipe (`unlearn recipes` lists them; e.g. `learning_rate=1e-4`). With
    `output_dir`, the run directory is written as by the CLI; without it, nothing is saved. `recipe` defaults to
    `ga`. `unlearn.forget` (`unlearn.forgetting`) also takes a `target` or a `request` instead of a forget set.
    """
    if forget is None:
        raise UnlearnError("No forget data given: pass `forget` (a file, `tofu:forget10`, rows) or a `target`.")
    recipe = recipe or "ga"
    config_class = get_recipe(recipe).config_class
    values = {"recipe": recipe, **overrides}
    if output_dir is not None:
        return run(
            build_config({**values, "output_dir": str(output_dir)}, config_class), model, tokenizer, forget, retain
        )
    with tempfile.TemporaryDirectory(prefix="unlearn-") as tmp:
        config = build_config({**values, "output_dir": tmp, "save_strategy": "no"}, config_class)
        return run(config, model, tokenizer, forget, retain, save=False)
