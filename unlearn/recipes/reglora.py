"""RegLoRA: forget while an L1 penalty keeps the update away from the weights that hold what must be kept.

Following RegLoRA in "SEFE: Superficial and Essential Forgetting Eliminator for Multimodal Continual Instruction
Tuning": the key elements of each adapted weight matrix, the top `reg_top` fraction by
importance, are found first; the forget adapter's update Delta W = scale * B A is then penalized there,

    L = -NLL(forget) + retain_weight * NLL(retain) + reg_weight * sum_m mean_{(i,j) in M_m} |Delta W_m[i, j]|

(the L1 norm over the key elements, divided by their number so that the weight does not depend on matrix size)

Importance is the diagonal Fisher information of the retain NLL, E[(dL/dW)^2] over `reg_fisher_batches` retain
batches (`importance: fisher`), or the magnitude of a knowledge adapter's update (`importance: <adapter dir>`,
e.g. the LoRA that taught the model what it must keep).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..adapter import reference_mode
from ..config import UnlearnConfig
from ..data import pad_rows
from ..errors import UnlearnError
from ..trainer import Term, UnlearnTrainer, mean_nll
from .registry import register


@dataclass
class RegLoRAConfig(UnlearnConfig):
    recipe: str = field(default="reglora", metadata={"help": "Recipe name."})
    importance: str = field(default="fisher", metadata={"help": "`fisher` (retain data), or a knowledge adapter dir."})
    reg_top: float = field(default=0.05, metadata={"help": "Fraction of each matrix's entries that are key elements."})
    reg_weight: float = field(
        default=0.5, metadata={"help": "Weight of the (per-matrix mean) L1 penalty on key elements."}
    )
    reg_fisher_batches: int = field(default=8, metadata={"help": "Retain batches for the Fisher estimate."})
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retain NLL."})

    def __post_init__(self):
        super().__post_init__()
        if self.adapter != "lora":
            raise UnlearnError("`reglora` penalizes a LoRA update: it needs `adapter: lora`.")
        if not 0 < self.reg_top < 1:
            raise UnlearnError(f"`reg_top` must be in (0, 1), got {self.reg_top}.")


def _top_mask(score: torch.Tensor, frac: float) -> torch.Tensor:
    k = max(1, int(score.numel() * frac))
    threshold = score.flatten().topk(k).values[-1]
    return score >= threshold


@register
class RegLoRATrainer(UnlearnTrainer):
    _name = "reglora"
    _paper = {
        "title": "SEFE: Superficial and Essential Forgetting Eliminator for Multimodal Continual Instruction Tuning (RegLoRA)"
    }
    config_class = RegLoRAConfig
    data_needs = "forget + retain: QA pairs or text (or a knowledge adapter for the key elements)"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lora_modules = {
            n: m for n, m in self.model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A
        }
        importance = self._fisher() if self.args.importance == "fisher" else self._adapter_importance()
        self.key_masks = {n: _top_mask(importance[n], self.args.reg_top) for n in self.lora_modules}

    def _fisher(self) -> dict[str, torch.Tensor]:
        """Diagonal Fisher of the retain NLL per adapted base weight. Each weight's gradient is squared into its
        sum as soon as backward produces it and then dropped, so at most one weight's gradient exists at a time."""
        weights = {n: m.base_layer.weight for n, m in self.lora_modules.items()}
        fisher = {n: torch.zeros_like(w) for n, w in weights.items()}

        def accumulate(name: str, w: torch.Tensor) -> None:
            fisher[name] += w.grad.square()
            w.grad = None

        hooks = []
        for name, w in weights.items():
            w.requires_grad_(True)
            hooks.append(w.register_post_accumulate_grad_hook(functools.partial(accumulate, name)))
        bs = self.args.per_device_train_batch_size
        rows = self.retain_examples[: bs * self.args.reg_fisher_batches]
        try:
            with reference_mode(self.model), torch.enable_grad():
                for start in range(0, len(rows), bs):
                    batch = {
                        k: v.to(self.args.device)
                        for k, v in pad_rows(rows[start : start + bs], self.processing_class.pad_token_id).items()
                    }
                    batch["loss_labels"] = batch.pop("labels")
                    fwd = self.forward(self.model, batch)  # the step's output-head chunking: no (B, T, V) logits
                    torch.autograd.backward(mean_nll(fwd.logps, fwd.n_tokens), inputs=list(weights.values()))
        finally:
            for hook in hooks:
                hook.remove()
            for w in weights.values():
                w.requires_grad_(False)
                w.grad = None
        return fisher

    def _adapter_importance(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        path = Path(self.args.importance) / "adapter_model.safetensors"
        if not path.is_file():
            raise UnlearnError(f"`importance` must be `fisher` or a LoRA adapter directory; `{path}` does not exist.")
        state = load_file(path)
        out = {}
        for name in self.lora_modules:
            key = name.split("base_model.model.")[-1]
            a = next((v for k, v in state.items() if k.endswith(f"{key}.lora_A.weight")), None)
            b = next((v for k, v in state.items() if k.endswith(f"{key}.lora_B.weight")), None)
            if a is None or b is None:
                raise UnlearnError(
                    f"The knowledge adapter `{self.args.importance}` has no LoRA for module `{key}`; "
                    "give one adapting the same modules, or use `importance: fisher`."
                )
            out[name] = (b.float() @ a.float()).abs().to(self.args.device)
        return out

    def delta_w(self, name: str) -> torch.Tensor:
        m = self.lora_modules[name]
        return (m.lora_B["default"].weight @ m.lora_A["default"].weight) * m.scaling["default"]

    def forget_loss(self, logps, n_tokens, index):
        return -mean_nll(logps, n_tokens)

    def extra_losses(self, model, inputs, fwd):
        penalty = sum(self.delta_w(n).abs()[self.key_masks[n]].mean() for n in self.lora_modules)
        return {"key_element_penalty": Term(penalty, self.args.reg_weight)}
