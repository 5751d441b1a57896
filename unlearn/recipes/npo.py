"""Negative Preference Optimization: DPO with only a losing response, bounded where gradient ascent is not.

Zhang, Lin, Bai & Mei, "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning"
(arXiv:2404.05868), Eq. 3, plus the retain NLL of their NPO-RT variant (weight `retain_weight`):

    L_NPO = -(2 / beta) E_{(x,y) in D_f} [ log sigmoid( -beta * log( p_theta(y|x) / p_ref(y|x) ) ) ]

log p(y|x) sums over answer tokens. p_ref is the model before unlearning (the adapter disabled); its log-probs
of the forget set are computed once before training, so a step costs one forward pass.
Defaults (beta=0.1, weights 1/1) follow the paper's TOFU setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F

from ..config import UnlearnConfig
from ..trainer import UnlearnTrainer
from .registry import register


@dataclass
class NPOConfig(UnlearnConfig):
    recipe: str = field(default="npo", metadata={"help": "Recipe name."})
    beta: float = field(default=0.1, metadata={"help": "Inverse temperature of Eq. 3."})
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retain NLL (NPO-RT; 0 = plain NPO)."})


@register
class NPOTrainer(UnlearnTrainer):
    _name = "npo"
    _paper = {
        "title": "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
        "id": "2404.05868",
    }
    config_class = NPOConfig
    data_needs = "forget (+ retain when retain_weight > 0): QA pairs or text"
    needs_reference = True

    def forget_loss(self, logps, n_tokens, index):
        log_ratio = logps - self.reference_logps[index]  # (B_f,)
        return -2.0 / self.args.beta * F.logsigmoid(-self.args.beta * log_ratio).mean()
