"""Gradient ascent: raise the forget set's negative log-likelihood.

Jang et al., "Knowledge Unlearning for Mitigating Privacy Risks in Language Models" (arXiv:2210.01504), Eq. 1;
the TOFU baseline "Gradient Ascent" (Maini et al., arXiv:2401.06121, Sec. 5):

    L_GA = -E_{(x,y) in D_f} [ NLL_theta(y | x) ],   NLL = per-token mean of -log p_theta(y_t | x, y_<t)

Unbounded below: the loss can be driven to -inf, which is why the NPO family exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import UnlearnConfig
from ..trainer import UnlearnTrainer, mean_nll
from .registry import register


@dataclass
class GAConfig(UnlearnConfig):
    recipe: str = field(default="ga", metadata={"help": "Recipe name."})
    retain_weight: float = field(default=0.0, metadata={"help": "Plain GA ignores the retain set."})


@register
class GATrainer(UnlearnTrainer):
    _name = "ga"
    _paper = {"title": "Knowledge Unlearning for Mitigating Privacy Risks in Language Models", "id": "2210.01504"}
    config_class = GAConfig
    data_needs = "forget: QA pairs or text"

    def forget_loss(self, logps, n_tokens, index):
        return -mean_nll(logps, n_tokens)
