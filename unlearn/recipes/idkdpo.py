"""IdkDPO: DPO with a refusal as the preferred answer and the true answer as the rejected one.

The TOFU paper's preference-optimization baseline (Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs",
arXiv:2401.06121, Sec. 5), with DPO's loss (Rafailov et al., arXiv:2305.18290, Eq. 7) scaled by 2 / beta as
in NPO and open-unlearning's DPO, so that at the start (log-ratios 0) its gradient is that of NLL(refusal) minus
NLL(answer) at the same scale as NPO's:

    L_f = -(2 / beta) E_{(x,y) in D_f} [ log sigmoid( beta * ( log p_theta(r|x) / p_ref(r|x)
                                                              - log p_theta(y|x) / p_ref(y|x) ) ) ]

r a refusal (`unlearn/resources/refusals.txt` or `refusals`, chosen per question by (seed, index), as `idk`), y the
true answer, p_ref the adapter-disabled model, whose log-probs of both are computed once. The refusal rows run in
the same forward pass as the batch. A retain NLL is added (weight `retain_weight`). Defaults: beta = 0.1, weights 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import UnlearnConfig
from ..data import IGNORE_INDEX, detect_shape, pad_rows, tokenize
from ..logprobs import model_logps
from ..trainer import Forward, Term, UnlearnTrainer, mean_nll
from .idk import with_refusals
from .registry import register


@dataclass
class IdkDPOConfig(UnlearnConfig):
    recipe: str = field(default="idkdpo", metadata={"help": "Recipe name."})
    beta: float = field(default=0.1, metadata={"help": "DPO's inverse temperature."})
    refusals: str | None = field(
        default=None, metadata={"help": "File of refusal answers, one per line (default: the shipped list)."}
    )
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retain NLL."})


def _pad_to(batch: dict[str, torch.Tensor], width: int, pad: dict[str, int]) -> dict[str, torch.Tensor]:
    return {k: F.pad(v, (0, width - v.shape[1]), value=pad[k]) for k, v in batch.items()}


@register
class IdkDPOTrainer(UnlearnTrainer):
    _name = "idkdpo"
    _paper = {"title": "TOFU: A Task of Fictitious Unlearning for LLMs (IdkDPO baseline)", "id": "2401.06121"}
    config_class = IdkDPOConfig
    data_needs = "forget: QA pairs (+ retain when retain_weight > 0)"
    needs_reference = True  # of the true answers; the refusals' at the first step

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        shape = detect_shape(self.forget_records, a.question_key, a.answer_key, a.text_key, "forget")
        refused = with_refusals(self.forget_records, shape, a, self._name)
        self.refusal_examples = tokenize(
            refused, self.processing_class, shape, a.max_length, a.question_key, a.answer_key, a.text_key
        )
        self.refusal_reference: torch.Tensor | None = None

    def forward(self, model, inputs):
        """The batch and, after it, the refusal of each forget row, in one forward pass."""
        is_forget = inputs["is_forget"]
        if not is_forget.any():
            return super().forward(model, inputs)
        pad_id = self.processing_class.pad_token_id
        refusals = pad_rows([self.refusal_examples[int(i)] for i in inputs["index"][is_forget]], pad_id)
        refusals["loss_labels"] = refusals.pop("labels")
        batch = {k: inputs[k] for k in ("input_ids", "attention_mask", "loss_labels")}
        width = max(batch["input_ids"].shape[1], refusals["input_ids"].shape[1])
        pads = {"input_ids": pad_id, "attention_mask": 0, "loss_labels": IGNORE_INDEX}
        batch, refusals = _pad_to(batch, width, pads), _pad_to(refusals, width, pads)
        logps, n_tokens, outputs, hidden = model_logps(
            model,
            *(torch.cat([batch[k], refusals[k].to(batch[k].device)]) for k in pads),
            self.loss_head(),
            self.args.loss_chunk_tokens,
        )
        n = len(inputs["input_ids"])
        if outputs.logits is not None and outputs.logits.shape[0] > n:
            outputs.logits = outputs.logits[:n]
        return Forward(
            logps[:n],
            n_tokens[:n],
            outputs,
            hidden[:n] if hidden is not None else None,
            extra={"refusal_logps": logps[n:], "refusal_tokens": n_tokens[n:]},
        )

    forget_loss = None  # the preference term reads the refusals' log-probs: `extra_losses`

    def extra_losses(self, model, inputs, fwd):
        if self.refusal_reference is None:
            self.refusal_reference = self.compute_reference_logps(model, self.refusal_examples)
        is_forget, index = inputs["is_forget"], inputs["index"]
        chosen = fwd.extra["refusal_logps"] - self.refusal_reference[index[is_forget]]
        rejected = fwd.logps[is_forget] - self.reference_logps[index[is_forget]]
        beta = self.args.beta
        loss = -2.0 / beta * F.logsigmoid(beta * (chosen - rejected)).mean()
        self.log_metric("refusal_nll", mean_nll(fwd.extra["refusal_logps"], fwd.extra["refusal_tokens"]))
        return {"forget_loss": Term(loss, self.args.forget_weight)}
