"""GS-LoRA: forgetting confined to few LoRA groups by a group-sparse penalty.

Following GS-LoRA in "Practical Continual Forgetting for Pre-trained Vision Models" (Zhao et al.; the CVPR 2024
"Continual Forgetting for Pre-trained Vision Models", arXiv:2403.16569), adapted to language models:

    L = NLL(retain) + forget_weight * ReLU(bound - NLL(forget)) + alpha * sum_g || theta_g ||_2

The forget term is bounded: once the forget NLL passes `bound` (nats/token) it stops pushing, where plain gradient
ascent would diverge. theta_g are the LoRA B matrices of group g (a decoder layer, or with `group_by: module` each
adapted module): the update B_g A_g of a group vanishes exactly when B_g does, and B starts at zero, so a group is
active only if forgetting needs it (A's random initialization is not activity). The group lasso is optimized by a proximal step after every optimizer step,
theta_g <- theta_g * max(0, 1 - lr * alpha / ||theta_g||), which sets whole groups exactly to zero (with AdamW this is
the usual proximal approximation). `active_groups()` reports the groups that stay non-zero.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback

from ..config import UnlearnConfig
from ..errors import UnlearnError
from ..trainer import UnlearnTrainer, mean_nll
from .registry import register


@dataclass
class GSLoRAConfig(UnlearnConfig):
    recipe: str = field(default="gslora", metadata={"help": "Recipe name."})
    bound: float = field(
        default=3.0, metadata={"help": "Forget NLL (nats/token) beyond which forgetting stops pushing."}
    )
    group_lasso: float = field(default=1e-3, metadata={"help": "alpha: weight of the group-sparse penalty."})
    group_by: str = field(default="layer", metadata={"help": "`layer` (one group per decoder layer) or `module`."})
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retain NLL."})

    def __post_init__(self):
        super().__post_init__()
        if self.group_by not in ("layer", "module"):
            raise UnlearnError(f"`group_by` must be layer or module, got {self.group_by!r}.")
        if self.adapter != "lora":
            raise UnlearnError("`gslora` penalizes groups of LoRA parameters: it needs `adapter: lora`.")


def lora_groups(model, group_by: str) -> dict[str, list[torch.nn.Parameter]]:
    groups = defaultdict(list)
    for name, p in model.named_parameters():
        if "lora_B" not in name or not p.requires_grad:
            continue
        layer = re.search(r"layers\.(\d+)\.", name)
        key = f"layer {layer.group(1)}" if layer else "other"
        if group_by == "module":
            key = name.split(".lora_B")[0].split("layers.")[-1]
        groups[key].append(p)
    return dict(groups)


class _GroupProx(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, model=None, lr_scheduler=None, **kwargs):
        lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else args.learning_rate
        with torch.no_grad():
            for params in lora_groups(model, args.group_by).values():
                norm = torch.sqrt(sum(p.square().sum() for p in params))
                shrink = torch.clamp(1 - lr * args.group_lasso / norm.clamp(min=1e-12), min=0.0)
                for p in params:
                    p.mul_(shrink)


@register
class GSLoRATrainer(UnlearnTrainer):
    _name = "gslora"
    _paper = {
        "title": "Practical Continual Forgetting for Pre-trained Vision Models (GS-LoRA; CVPR version)",
        "id": "2403.16569",
    }
    config_class = GSLoRAConfig
    data_needs = "forget + retain: QA pairs or text"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(_GroupProx(self))

    def forget_loss(self, logps, n_tokens, index):
        return torch.relu(self.args.bound - mean_nll(logps, n_tokens))

    def group_norms(self) -> dict[str, float]:
        return {
            g: float(torch.sqrt(sum(p.detach().square().sum() for p in ps)))
            for g, ps in lora_groups(self.model, self.args.group_by).items()
        }

    def active_groups(self, tol: float = 0.0) -> list[str]:
        return [g for g, n in self.group_norms().items() if n > tol]
