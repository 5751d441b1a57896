"""Loading a model: a built-in name, a local directory or a Hub id -> (model, tokenizer); an adapter directory on
top of its base; quantized bases for QLoRA; the pad token padding needs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from .delta import apply_delta, delta_base, is_delta_dir
from .errors import UnlearnError, require
from .hub import download_adapter
from .locations import is_hub_id, offline
from .models import resolve_model
from .precheck import check_model
from .rundir import RUN_FILE

logger = logging.getLogger(__name__)


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

    check_model(name_or_path)  # before a built-in model is converted
    name_or_path = resolve_model(name_or_path)
    local = Path(name_or_path).expanduser()
    hub_id = is_hub_id(name_or_path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    if quantization != "none":
        compute = torch_dtype if isinstance(torch_dtype, torch.dtype) else torch.float32
        kwargs["quantization_config"] = quantization_config(int(quantization.removesuffix("bit")), compute)
    if hub_id and offline():
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
    top of its base model, or a sparse weight delta (`unlearn.delta`) applied to its base."""
    from peft import PeftModel

    local = Path(path).expanduser()
    if is_hub_id(path, namespaced=True):
        local = download_adapter(path) or local  # a Hub adapter repo (the local cache only, with HF_HUB_OFFLINE)
    if is_delta_dir(local):  # a sparse weight delta on its base (training-free recipes: `unlearn.delta`)
        model, tokenizer = load_model_and_tokenizer(delta_base(local), dtype)
        return apply_delta(model, local).eval(), _run_tokenizer(local, tokenizer)
    if not (local / "adapter_config.json").is_file():
        return load_model_and_tokenizer(path, dtype)
    run_file = local / RUN_FILE
    bases = [
        json.loads(run_file.read_text()).get("base_model") if run_file.is_file() else None,
        json.loads((local / "adapter_config.json").read_text()).get("base_model_name_or_path"),
    ]
    bases = [b for b in bases if b]
    # A pushed run may record a base path of the machine it was trained on; then the adapter config's base is tried.
    base = next((b for b in bases if not Path(b).is_absolute() or Path(b).exists()), bases[0] if bases else None)
    if not base:
        raise UnlearnError(
            f"Adapter `{path}` does not say which base model it belongs to (no base_model_name_or_path)."
        )
    model, tokenizer = load_model_and_tokenizer(base, dtype)
    return PeftModel.from_pretrained(model, local).eval(), _run_tokenizer(local, tokenizer)


def _run_tokenizer(run: Path, base_tokenizer):
    """The tokenizer a run saved beside its weights (it may add tokens), else its base model's."""
    if not (run / "tokenizer_config.json").is_file():
        return base_tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(run)


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
