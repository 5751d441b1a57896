"""Running a recipe end to end: model loading, the output directory, training, and the saved result.

The output directory is safe to interrupt at any point:
- `unlearn_config.yaml` is written first and marks the directory as an unlearn run;
- checkpoints (`checkpoint-N/`) let `resume: true` continue; a checkpoint counts only once its `trainer_state.json`
  (written last by the Trainer) parses;
- the final adapter is saved to a staging folder and moved in with `adapter_config.json` last, so plain `peft`
  never sees a half-written adapter; `run.json` (status, metadata) is written last, atomically, and is what marks
  the run complete.
"""

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

from .config import RUN_CONTROL_FIELDS, UnlearnConfig, build_config
from .data import DataSource, fingerprint
from .errors import NonFiniteLossError, UnlearnError, require
from .models import resolve_model
from .recipes import get_recipe
from .trainer import paper

logger = logging.getLogger(__name__)

CONFIG_FILE = "unlearn_config.yaml"
RUN_FILE = "run.json"
LOG_FILE = "train_log.jsonl"
LOADED_LAST = ("adapter_config.json", "config.json")  # the files loaders look for: moved in last
PACKAGES = ("unlearn-toolkit", "torch", "transformers", "peft", "accelerate", "datasets", "trl")


# ---- model ------------------------------------------------------------------------------------------------------


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


class _OncePerMessage(logging.Filter):
    """Lets each distinct log message through once (bitsandbytes warns about the same cast on every 8-bit matmul)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


_BNB_LOGGER = logging.getLogger("bitsandbytes.autograd._functions")


def quantization_config(bits: int, compute_dtype: torch.dtype = torch.float32):
    """The bitsandbytes config for loading a model in 8 or 4 bits (4: NF4, as in QLoRA)."""
    require("bitsandbytes", "quant")
    from transformers import BitsAndBytesConfig

    if not any(isinstance(f, _OncePerMessage) for f in _BNB_LOGGER.filters):
        _BNB_LOGGER.addFilter(_OncePerMessage())

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    raise UnlearnError(f"Quantization to {bits} bits is not supported; use 4 or 8.")


def load_model_and_tokenizer(
    name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False, quantization: str = "none"
):
    """A causal LM and its tokenizer from a local directory or the Hub.

    A path that does not exist fails at once; with `HF_HUB_OFFLINE=1` a Hub id is looked up in the local cache
    only, so nothing waits on network retries. `quantization` `4bit`/`8bit` loads the weights with bitsandbytes
    (QLoRA's base model).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name_or_path = resolve_model(name_or_path)
    local = Path(name_or_path).expanduser()
    is_hub_id = not local.exists() and name_or_path.count("/") <= 1 and not name_or_path.startswith((".", "/", "~"))
    if not local.exists() and not is_hub_id:
        raise UnlearnError(f"Model path `{name_or_path}` does not exist. Give a local model directory or a Hub id.")
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    if quantization != "none":
        compute = torch_dtype if isinstance(torch_dtype, torch.dtype) else torch.float32
        kwargs["quantization_config"] = quantization_config(int(quantization.removesuffix("bit")), compute)
    if is_hub_id and _offline():
        kwargs["local_files_only"] = True
    source = str(local) if local.exists() else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, **{k: v for k, v in kwargs.items() if k != "quantization_config"}
        )
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except OSError as e:
        where = (
            "in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
            if kwargs.get("local_files_only")
            else "on the Hub"
        )
        raise UnlearnError(f"Could not load model `{name_or_path}` {where}: {e}") from e
    if quantization == "4bit":
        _keep_cpu_4bit_layout(model)
    return model, tokenizer


def _keep_cpu_4bit_layout(model: torch.nn.Module) -> None:
    """Turn off bitsandbytes' CPU repacking of 4-bit weights for inference.

    bitsandbytes 0.50 repacks a `Linear4bit` weight for AVX512-BF16 kernels at its first no-grad forward in eval
    mode, and unpacks it again in `state_dict()` without updating the module's copy of the quantization state:
    after the first checkpoint save, every forward computes with the wrong layout (measured: logits off by ~2 on
    the tiny test model). Training saves checkpoints while evaluating between them, so the repack stays off.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def load_model_or_adapter(path: str, dtype: str = "float32"):
    """A model, or an adapter directory (as written by `unlearn forget`, or pushed to the Hub by `unlearn push`) on
    top of its base model."""
    from peft import PeftModel

    local = Path(path).expanduser()
    if not local.exists() and path.count("/") == 1 and not path.startswith((".", "/", "~")):
        from .hub import download_adapter

        local = download_adapter(path) or local  # a Hub adapter repo (the local cache only, with HF_HUB_OFFLINE)
    if not (local / "adapter_config.json").is_file():
        return load_model_and_tokenizer(path, dtype)
    run_file = local / RUN_FILE
    bases = [json.loads(run_file.read_text()).get("base_model") if run_file.is_file() else None,
             json.loads((local / "adapter_config.json").read_text()).get("base_model_name_or_path")]  # fmt: skip
    bases = [b for b in bases if b]
    # A pushed run may record a base path of the machine it was trained on; then the adapter config's base is tried.
    base = next((b for b in bases if not Path(b).is_absolute() or Path(b).exists()), bases[0] if bases else None)
    if not base:
        raise UnlearnError(
            f"Adapter `{path}` does not say which base model it belongs to (no base_model_name_or_path)."
        )
    model, tokenizer = load_model_and_tokenizer(base, dtype)
    if (local / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(local)
    return PeftModel.from_pretrained(model, local).eval(), tokenizer


def ensure_pad_token(tokenizer) -> None:
    """Padding needs a pad token; borrow EOS (padding is masked out of attention and loss) or explain."""
    if tokenizer.pad_token is not None:
        return
    if tokenizer.eos_token is None:
        raise UnlearnError(
            "The tokenizer has neither a pad token nor an EOS token to pad with. Add one: "
            "`tokenizer.add_special_tokens({'pad_token': '<pad>'})` then `model.resize_token_embeddings(len(tokenizer))`."
        )
    logger.warning("The tokenizer has no pad token; padding with EOS (%r), which is masked out.", tokenizer.eos_token)
    tokenizer.pad_token = tokenizer.eos_token


# ---- output directory -------------------------------------------------------------------------------------------


def last_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint whose `trainer_state.json` (the Trainer writes it last) is complete."""
    ckpts = sorted(
        out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1
    )
    for ckpt in reversed(ckpts):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
            return ckpt
        except (OSError, ValueError):
            logger.warning("Skipping incomplete checkpoint %s.", ckpt)
    return None


def _comparable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in yaml.safe_load(yaml.safe_dump(values)).items() if k not in RUN_CONTROL_FIELDS}


def check_output_dir(config: UnlearnConfig) -> Path | None:
    """Read-only checks of `output_dir`; returns the checkpoint to resume from, if any."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise UnlearnError(f"`output_dir` `{out}` is a file, not a directory.")
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if not entries:
        if config.resume:
            raise UnlearnError(f"`resume` was set but `{out}` holds no run to resume. Drop `resume` to start one.")
        return None
    if CONFIG_FILE not in entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise UnlearnError(
            f"`output_dir` `{out}` is not empty and holds files not written by unlearn ({shown}). Choose a new or "
            "empty directory; `overwrite` only replaces an earlier unlearn run, never other files."
        )
    complete = RUN_FILE in entries
    if config.overwrite:
        return None
    if not config.resume:
        state = "a completed" if complete else "an unfinished"
        hint = "`overwrite=true` to replace it" + ("" if complete else ", `resume=true` to continue it")
        raise UnlearnError(
            f"`output_dir` `{out}` holds {state} unlearn run. Pass {hint}, or choose another output_dir."
        )
    if complete:
        raise UnlearnError(
            f"The run in `{out}` is already complete; nothing to resume. Pass `overwrite=true` to redo it."
        )
    saved = _comparable(yaml.safe_load((out / CONFIG_FILE).read_text()) or {})
    now = _comparable(config.to_yaml_dict())
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if changed:
        diffs = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:8])
        raise UnlearnError(f"Cannot resume `{out}` with a different config ({diffs}). Resume with the same settings.")
    return last_checkpoint(out)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
        _write_atomic(out / RUN_FILE, json.dumps(_metadata(trainer, config, started, sources), indent=2))
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
        return {"source": str(source) if isinstance(source, os.PathLike) else source,
                "rows": len(records), "fingerprint": fingerprint(records)}  # fmt: skip

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
        "evaluation": (trainer.suite_evaluation.summary(trainer.state)
                       if getattr(trainer, "suite_evaluation", None) else None),  # fmt: skip
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
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        if not (out / CONFIG_FILE).exists():
            _write_atomic(out / CONFIG_FILE, yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
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
    evaluate(model, tokenizer, suite=config.eval_suite, reference=config.eval_reference,
             out=Path(config.output_dir) / "eval", skip=skip, **params)  # fmt: skip


def forget(
    model: torch.nn.Module,
    tokenizer,
    forget: DataSource,
    retain: DataSource | None = None,
    recipe: str = "ga",
    output_dir: str | os.PathLike | None = None,
    **overrides: Any,
):
    """Unlearn `forget` from an already loaded model; returns the `PeftModel` (or the model, with `adapter="none"`).

    `overrides` are config keys of the recipe (`unlearn recipes` lists them; e.g. `learning_rate=1e-4`). With
    `output_dir`, the run directory is written as by the CLI; without it, nothing is saved.
    """
    config_class = get_recipe(recipe).config_class
    values = {"recipe": recipe, **overrides}
    if output_dir is not None:
        return run(
            build_config({**values, "output_dir": str(output_dir)}, config_class), model, tokenizer, forget, retain
        )
    with tempfile.TemporaryDirectory(prefix="unlearn-") as tmp:
        config = build_config({**values, "output_dir": tmp, "save_strategy": "no"}, config_class)
        return run(config, model, tokenizer, forget, retain, save=False)
