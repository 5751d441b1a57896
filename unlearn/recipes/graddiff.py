"""Gradient difference: gradient ascent on the forget set, descent on the retain set.

Liu, Liu & Stone, "Continual Learning and Private Unlearning" (arXiv:2203.12817); the TOFU baseline
"Gradient Difference" (Maini et al., arXiv:2401.06121, Sec. 5):

    L = -forget_weight * NLL(D_f) + retain_weight * L_retain(D_r)

with L_retain the retain NLL (`retain_loss: nll`) or KL(p_ref || p_theta) on retain answers (`retain_loss: kl`).
The forget term is gradient ascent's; only the defaults differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import UnlearnConfig
from ..errors import UnlearnError
from .ga import GATrainer
from .registry import register


@dataclass
class GradDiffConfig(UnlearnConfig):
    recipe: str = field(default="graddiff", metadata={"help": "Recipe name."})
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retain loss (open-unlearning: 1)."})

    def __post_init__(self):
        super().__post_init__()
        if not self.uses_retain:
            raise UnlearnError("`graddiff` needs a retain term: set `retain_weight` > 0 and `retain_ratio` >= 1.")


@register
class GradDiffTrainer(GATrainer):
    _name = "graddiff"
    _paper = {"title": "Continual Learning and Private Unlearning", "id": "2203.12817"}
    config_class = GradDiffConfig
    data_needs = "forget + retain: QA pairs or text"
