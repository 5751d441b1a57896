"""The PEFT adapter a recipe trains: building it from the config, and switching it off (the reference model).

The reference of NPO, SimNPO's and the KL retain loss, RMU and the evaluation's "before" is the same weights with
the adapter disabled: no second copy of the model is kept.
"""

from __future__ import annotations

import contextlib

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from .config import UnlearnConfig
from .errors import UnlearnError
from .precheck import lora_layer_indices


@contextlib.contextmanager
def reference_mode(model: torch.nn.Module):
    """The reference model: the same weights with the adapter switched off, in eval mode, without gradients."""
    was_training = model.training
    ctx = model.disable_adapter() if isinstance(model, PeftModel) else contextlib.nullcontext()
    model.eval()
    try:
        with ctx, torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def lora_config(args: UnlearnConfig, model: torch.nn.Module) -> LoraConfig:
    """The LoRA of `args` for `model` (whose layer count resolves `lora_layers`)."""
    targets = args.lora_target_modules
    layers = lora_layer_indices(args.lora_layers, getattr(model.config, "num_hidden_layers", None))
    if layers is None and args.lora_layers is not None:  # a share of a depth the config does not give
        raise UnlearnError(
            f"`lora_layers: {args.lora_layers}` is a share of the model's layers, and its config has no "
            "`num_hidden_layers`. Give the layers as indices (e.g. `0-11`)."
        )
    if layers is not None and targets == "all-linear":  # PEFT takes layer indices only with a list of names
        targets = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _in_layer(name, module)})
    elif layers is not None and isinstance(targets, str):
        raise UnlearnError(
            f"`lora_layers` picks layers by index, and `lora_target_modules: {targets}` is a pattern that PEFT "
            "matches whole. Give `lora_target_modules` as a list of module names (e.g. [gate_proj, up_proj, "
            "down_proj]) or `all-linear`, or put the layers in the pattern and drop `lora_layers`."
        )
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=list(targets) if isinstance(targets, (list, tuple)) else targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )


def _in_layer(name: str, module: torch.nn.Module) -> bool:
    """A linear module of a decoder layer: what `all-linear` gives LoRA to (the output head excluded)."""
    return isinstance(module, torch.nn.Linear) and ".layers." in name


def wrap_adapter(model: torch.nn.Module, args: UnlearnConfig) -> torch.nn.Module:
    if isinstance(model, PeftModel) or args.adapter == "none":
        return model
    if getattr(model, "is_quantized", False):
        # QLoRA: layer norms and embeddings to float32 for stable gradients through the quantized base; input
        # gradients on, so that gradient checkpointing (if asked for) still reaches the adapter.
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    try:
        return get_peft_model(model, lora_config(args, model))
    except ValueError as e:
        raise UnlearnError(f"Could not attach LoRA with `lora_target_modules={args.lora_target_modules!r}`: {e}") from e
