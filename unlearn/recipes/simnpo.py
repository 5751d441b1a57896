"""SimNPO: NPO without the reference model, with length-normalized log-likelihood and a reward margin.

Fan, Liu, Lin, Jia, Zhang, Mei & Liu, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
Unlearning" (arXiv:2410.07163), Eq. 4, plus a retain NLL term:

    L_SimNPO = -(2 / beta) E_{(x,y) in D_f} [ log sigmoid( -(beta / |y|) log p_theta(y|x) - gamma ) ]

Defaults (beta=4.5, gamma=0, forget weight 0.125, retain weight 1) are open-unlearning's TOFU settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F

from ..config import UnlearnConfig
from ..trainer import UnlearnTrainer
from .registry import register


@dataclass
class SimNPOConfig(UnlearnConfig):
    recipe: str = field(default="simnpo", metadata={"help": "Recipe name."})
    beta: float = field(default=4.5, metadata={"help": "Inverse temperature of Eq. 4."})
    gamma: float = field(default=0.0, metadata={"help": "Reward margin of Eq. 4."})
    forget_weight: float = field(default=0.125, metadata={"help": "Weight of the forget loss."})
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retain NLL."})


@register
class SimNPOTrainer(UnlearnTrainer):
    _name = "simnpo"
    _paper = {
        "title": "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
        "id": "2410.07163",
    }
    config_class = SimNPOConfig
    data_needs = "forget (+ retain when retain_weight > 0): QA pairs or text"

    def forget_loss(self, logps, n_tokens, index):
        avg_logp = logps / n_tokens.clamp(min=1)  # (B_f,)
        return -2.0 / self.args.beta * F.logsigmoid(-self.args.beta * avg_logp - self.args.gamma).mean()
