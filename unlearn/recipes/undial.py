"""UNDIAL: self-distillation to adjusted logits, unlearning whose loss is bounded and whose steps stay small.

Dong, Lin, Belkin, Huerta & Vulić, "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large
Language Models" (arXiv:2402.10052), Eq. 2-3: at every answer position t of a forget row, the frozen model's
logits z_t are made into a teacher by lowering the logit of the token to forget,

    z'_t = z_t - gamma * onehot(y_t),        L_f = mean_t KL( softmax(z'_t) || p_theta(. | x, y_<t) ),

and the model is distilled to it: the forgotten token loses probability mass to the tokens the model already
found plausible, instead of being pushed down without bound as in gradient ascent. The KL is the paper's
cross-entropy to the teacher less the teacher's entropy (a constant): the same gradient, and 0 when the student
matches. The teacher is the adapter-disabled model. A retain NLL is added (weight `retain_weight`), as in
open-unlearning's UNDIAL; `retain_weight: 0` is the paper's forget-only self-distillation.
Defaults: gamma = 10 (open-unlearning's `beta`), retain weight 1.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..config import UnlearnConfig
from ..errors import UnlearnError
from ..trainer import Term, UnlearnTrainer
from .registry import register


@dataclass
class UNDIALConfig(UnlearnConfig):
    recipe: str = field(default="undial", metadata={"help": "Recipe name."})
    undial_strength: float = field(
        default=10.0, metadata={"help": "gamma: how far the forget token's logit is lowered in the teacher."}
    )
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retain NLL (0: the paper's form)."})

    def __post_init__(self):
        super().__post_init__()
        if self.adapter == "none":
            raise UnlearnError(
                "`undial` distills to the frozen model's adjusted logits, and the frozen model is the base with the "
                "adapter disabled; with `adapter: none` there is none. Use `adapter: lora`."
            )
        if self.undial_strength <= 0:
            raise UnlearnError(f"`undial_strength` must be > 0, got {self.undial_strength}.")


def lower_target(strength: float, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The teacher of Eq. 2: `logits` (n, V) with the logit of each position's target token lowered by `strength`."""
    logits = logits.float()
    at_target = logits.gather(-1, targets[:, None]) - strength
    return logits.scatter(-1, targets[:, None], at_target)


@register
class UNDIALTrainer(UnlearnTrainer):
    _name = "undial"
    _paper = {
        "title": "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models",
        "id": "2402.10052",
    }
    config_class = UNDIALConfig
    data_needs = "forget (+ retain when retain_weight > 0): QA pairs or text"

    forget_loss = None  # the forget term reads the teacher's logits: `extra_losses`

    def extra_losses(self, model, inputs, fwd):
        adjust = functools.partial(lower_target, self.args.undial_strength)
        kl = self.reference_kl(model, fwd, inputs, inputs["is_forget"], adjust)  # the teacher: adapter disabled
        return {"forget_loss": Term(kl.mean(), self.args.forget_weight)}
