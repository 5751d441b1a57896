"""IdkDPO: DPO with a refusal as the preferred answer and the true answer as the rejected one.

The TOFU paper's preference-optimization baseline (Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs",
arXiv:2401.06121, Sec. 5), with DPO's loss (Rafailov et al., arXiv:2305.18290, Eq. 7) scaled by 2 / beta as
in NPO and open-unlearning's DPO, so that at the start (log-ratios 0) its gradient is that of NLL(refusal) minus
NLL(answer) at the same scale as NPO's:

    L_f = -(2 / beta) E_{(x,y) in D_f} [ log sigmoid( beta * ( log p_theta(r|x) / p_ref(r|x)
                                                              - log p_theta(y|x) / p_ref(y|x) ) ) ]

r a refusal (`unlearn/resources/refusals.txt` or `refusals`, chosen per question by (seed, index), as `idk`), y the
true answer, p_ref the adapter-disabled model, whose log-probs of both are computed once. The refusal rows run in
the same forward pass as the batch. A retain NLL is added (weight `retain_weight`), or answer preservation
(`retain_loss: ap`, `unlearn.recipes.idk`), which stops the refusal spreading to retain questions: the DPO+AP of
Yuan et al. (arXiv:2410.08109). Defaults: beta = 0.1, weights 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..config import UnlearnConfig
from ..trainer import Term, mean_nll
from .idk import REFUSAL_RETAIN_LOSSES, RefusalTrainer
from .registry import register


@dataclass
class IdkDPOConfig(UnlearnConfig):
    recipe: str = field(default="idkdpo", metadata={"help": "Recipe name."})
    beta: float = field(
        default=0.1, metadata={"help": "DPO's inverse temperature (and answer preservation's, `retain_loss: ap`)."}
    )
    refusals: str | None = field(
        default=None, metadata={"help": "File of refusal answers, one per line (default: the shipped list)."}
    )
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retain NLL."})
    retain_losses: ClassVar[tuple[str, ...]] = REFUSAL_RETAIN_LOSSES


@register
class IdkDPOTrainer(RefusalTrainer):
    _name = "idkdpo"
    _paper = {"title": "TOFU: A Task of Fictitious Unlearning for LLMs (IdkDPO baseline)", "id": "2401.06121"}
    config_class = IdkDPOConfig
    data_needs = "forget: QA pairs (+ retain when retain_weight > 0; QA pairs for `retain_loss: ap`)"
    needs_reference = True  # of the true answers; the refusals' at the first step
    reference_attrs = ("reference_logps", "refusal_reference")
    refuses_forget = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.refusal_examples = self.refusals["forget"]
        self.refusal_reference: torch.Tensor | None = None

    forget_loss = None  # the preference term reads the refusals' log-probs: `extra_losses`

    def extra_losses(self, model, inputs, fwd):
        if self.refusal_reference is None:
            self.refusal_reference = self.compute_reference_logps(model, self.refusal_examples)
        is_forget, index = inputs["is_forget"], inputs["index"]
        chosen = fwd.extra["refusal_logps"][is_forget] - self.refusal_reference[index[is_forget]]
        rejected = fwd.logps[is_forget] - self.reference_logps[index[is_forget]]
        beta = self.args.beta
        loss = -2.0 / beta * F.logsigmoid(beta * (chosen - rejected)).mean()
        refusal = fwd.extra["refusal_logps"][is_forget], fwd.extra["refusal_tokens"][is_forget]
        self.log_metric("refusal_nll", mean_nll(*refusal))
        return {"forget_loss": Term(loss, self.args.forget_weight)}
