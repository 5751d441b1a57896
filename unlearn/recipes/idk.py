"""IDK fine-tuning: teach the model to answer forget questions with a refusal.

The TOFU baseline that replaces each forget answer by an "I don't know" variant and fine-tunes on it, with the
retain NLL alongside (Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs", arXiv:2401.06121, Sec. 5):

    L = NLL_theta(r | x) over (x, ·) in D_f, r a refusal  +  retain_weight * NLL(D_r)

The refusals come from `unlearn/resources/refusals.txt` (written for this project) or any file named by
`refusals`, one per line; each forget question gets one, chosen by (seed, index).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..config import UnlearnConfig
from ..errors import UnlearnError
from ..trainer import UnlearnTrainer, mean_nll
from .registry import register


@dataclass
class IDKConfig(UnlearnConfig):
    recipe: str = field(default="idk", metadata={"help": "Recipe name."})
    refusals: str | None = field(
        default=None, metadata={"help": "File of refusal answers, one per line (default: the shipped list)."}
    )
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retain NLL."})


def load_refusals(path: str | None) -> list[str]:
    text = Path(path).read_text() if path else resources.files("unlearn.resources").joinpath("refusals.txt").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UnlearnError(f"Refusal file `{path}` holds no lines.")
    return lines


def with_refusals(ds, shape: str, args, recipe: str):
    """`ds` with each answer replaced by a refusal, chosen by (seed, index)."""
    if shape != "qa":
        raise UnlearnError(f"`{recipe}` answers forget questions with refusals, so its forget set must be QA pairs.")
    refusals = load_refusals(args.refusals)
    picks = np.random.default_rng(args.seed).integers(len(refusals), size=len(ds))
    return ds.map(lambda row, i: {args.answer_key: refusals[picks[i]]}, with_indices=True)


@register
class IDKTrainer(UnlearnTrainer):
    _name = "idk"
    _paper = {"title": "TOFU: A Task of Fictitious Unlearning for LLMs (IDK baseline)", "id": "2401.06121"}
    config_class = IDKConfig
    data_needs = "forget: QA pairs (+ retain when retain_weight > 0)"

    def transform_forget(self, ds, shape, args):
        return with_refusals(ds, shape, args, self._name)

    def forget_loss(self, logps, n_tokens, index):
        return mean_nll(logps, n_tokens)
