"""IDK fine-tuning: teach the model to answer forget questions with a refusal.

The TOFU baseline that replaces each forget answer by an "I don't know" variant and fine-tunes on it, with the
retain NLL alongside (Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs", arXiv:2401.06121, Sec. 5):

    L = NLL_theta(r | x) over (x, ·) in D_f, r a refusal  +  retain_weight * NLL(D_r)

The refusals come from `unlearn/resources/refusals.txt` (written for this project) or any file named by
`refusals`, one per line; each forget question gets one, chosen by (seed, index).

`retain_loss: ap` replaces the retain NLL by answer preservation (Yuan et al., "A Closer Look at Machine
Unlearning for Large Language Models", ICLR 2025, arXiv:2410.08109, Eq. 8), which keeps a refusal recipe from
refusing retain questions as well:

    L_AP = -(1 / beta) E_{(x,y) in D_r} [ log sigmoid( beta * ( log p_theta(y|x) - log p_theta(r|x) ) ) ]

a refusal r drawn for each retain question as for the forget ones, both log-probs summed over the answer tokens.
AP alone (the paper's IDK+AP) stops pulling once the answer leads the refusal by a few 1/beta, and then leaves the
answer free to drift: on the tiny test model, whose retain answers lead their refusals by ~145 nats, 10 epochs of
IdkDPO with AP alone lowered the retain answers' log-prob from -0.8 to -41 nats (with the retain NLL: to -2.1).
`retain_loss: nll+ap` adds the two per retain row: the answer kept, and kept ahead of a refusal. `retain_loss:
kl+ap` keeps instead the reference model's whole next-token distribution over the retain answer (KL(reference ||
model), the reference being the adapter-disabled model), ahead of a refusal: NLL pulls the given answer up and
leaves the rest of the distribution free, KL holds all of it where the model had it. `retain_loss: hold+ap` counts
the retain NLL only above the reference model's: the answer is repaired where forgetting lowered it, never trained
beyond where it was (NLL keeps pulling a small set of answers past that, and the model learns their style).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..config import UnlearnConfig
from ..data import IGNORE_INDEX, detect_shape, pad_rows, tokenize
from ..errors import UnlearnError
from ..logprobs import model_logps
from ..trainer import Forward, UnlearnTrainer, mean_nll
from .registry import register

REFUSAL_RETAIN_LOSSES = ("nll", "kl", "hold", "ap", "nll+ap", "kl+ap", "hold+ap")


@dataclass
class IDKConfig(UnlearnConfig):
    recipe: str = field(default="idk", metadata={"help": "Recipe name."})
    refusals: str | None = field(
        default=None, metadata={"help": "File of refusal answers, one per line (default: the shipped list)."}
    )
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retain NLL."})
    beta: float = field(
        default=0.1, metadata={"help": "Inverse temperature of answer preservation (`retain_loss: ap`)."}
    )
    retain_losses: ClassVar[tuple[str, ...]] = REFUSAL_RETAIN_LOSSES


def load_refusals(path: str | None) -> list[str]:
    text = Path(path).read_text() if path else resources.files("unlearn.resources").joinpath("refusals.txt").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UnlearnError(f"Refusal file `{path}` holds no lines.")
    return lines


def with_refusals(ds, shape: str, args, recipe: str, what: str = "forget"):
    """`ds` with each answer replaced by a refusal, chosen by (seed, index)."""
    if shape != "qa":
        raise UnlearnError(f"`{recipe}` answers {what} questions with refusals, so its {what} set must be QA pairs.")
    refusals = load_refusals(args.refusals)
    picks = np.random.default_rng(args.seed).integers(len(refusals), size=len(ds))
    return ds.map(lambda row, i: {args.answer_key: refusals[picks[i]]}, with_indices=True)


def answer_preservation(answer_logps: torch.Tensor, refusal_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """L_AP per retain row (B_r,): low while the true answer is likelier than the refusal, by a margin of 1/beta."""
    return -F.logsigmoid(beta * (answer_logps - refusal_logps)) / beta


def _pad_to(batch: dict[str, torch.Tensor], width: int, pad: dict[str, int]) -> dict[str, torch.Tensor]:
    return {k: F.pad(v, (0, width - v.shape[1]), value=pad[k]) for k, v in batch.items()}


class RefusalTrainer(UnlearnTrainer):
    """What the refusal recipes share: a refusal for each question of the sets that need one (chosen by (seed,
    index)), scored in the same forward pass as the batch, and `retain_loss: ap` on those of the retain rows."""

    refuses_forget: ClassVar[bool] = False  # whether the forget rows' refusals are scored beside their answers

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        sets = {"forget": self.forget_records if self.refuses_forget else None}
        sets["retain"] = self.retain_records if a.uses_retain and "ap" in a.retain_loss.split("+") else None
        self.refusals: dict[str, list[dict]] = {}
        for what, ds in sets.items():
            if ds is not None:
                shape = detect_shape(ds, a.question_key, a.answer_key, a.text_key, what)
                refused = with_refusals(ds, shape, a, self._name, what)
                self.refusals[what] = tokenize(
                    refused, self.processing_class, shape, a.max_length, a.question_key, a.answer_key, a.text_key
                )

    def forward(self, model, inputs):
        """The batch and, after it, the refusal of each of its rows that has one, in one forward pass;
        `extra["refusal_logps"]` is (B,), zero where a row has none."""
        is_forget = inputs["is_forget"]
        refused = torch.zeros_like(is_forget)
        for what, rows in (("forget", is_forget), ("retain", ~is_forget)):
            if what in self.refusals:
                refused |= rows
        if not refused.any():
            return super().forward(model, inputs)
        pad_id = self.processing_class.pad_token_id
        picks = [
            self.refusals["forget" if f else "retain"][int(i)]
            for f, i in zip(is_forget[refused].tolist(), inputs["index"][refused].tolist(), strict=True)
        ]
        refusals = pad_rows(picks, pad_id)
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
        refusal_logps, refusal_tokens = logps.new_zeros(n), n_tokens.new_zeros(n)
        refusal_logps[refused], refusal_tokens[refused] = logps[n:], n_tokens[n:]
        return Forward(
            logps[:n],
            n_tokens[:n],
            outputs,
            hidden[:n] if hidden is not None else None,
            extra={"refusal_logps": refusal_logps, "refusal_tokens": refusal_tokens},
        )

    def retain_loss(self, model, fwd: Forward, inputs, is_retain: torch.Tensor) -> torch.Tensor:
        *kept, last = self.args.retain_loss.split("+")  # "nll", "ap", "nll+ap", ...
        if last != "ap":
            return super().retain_loss(model, fwd, inputs, is_retain)
        loss = answer_preservation(fwd.logps[is_retain], fwd.extra["refusal_logps"][is_retain], self.args.beta)
        return loss + self.retain_term(kept[0], model, fwd, inputs, is_retain) if kept else loss


@register
class IDKTrainer(RefusalTrainer):
    _name = "idk"
    _paper = {"title": "TOFU: A Task of Fictitious Unlearning for LLMs (IDK baseline)", "id": "2401.06121"}
    config_class = IDKConfig
    data_needs = "forget: QA pairs (+ retain when retain_weight > 0; QA pairs for `retain_loss: ap`)"

    def transform_forget(self, ds, shape, args):
        return with_refusals(ds, shape, args, self._name)

    def forget_loss(self, logps, n_tokens, index):
        return mean_nll(logps, n_tokens)
