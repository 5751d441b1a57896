"""In-context unlearning: forget without changing a weight.

Pawelczyk, Neel & Lakkaraju, "In-Context Unlearning: Language Models as Few Shot Unlearners" (arXiv:2310.07579):
the forget examples are shown in the context with altered labels, followed by correctly labelled retain examples,
then the query. For QA the altered label is a refusal (`label="refusal"`), a perturbed answer (`"perturbed"`, from
the `perturbed_answer` column), or another example's answer (`"random"`, the paper's label flipping).

`InContextUnlearner` wraps a causal LM: `forward` and `generate` put the context before every row and return
logits / sequences aligned with the caller's inputs, so the evaluation package and every attack run on it
unchanged. Which examples, how many and which labels are the paper's ablations, exposed as arguments.
"""

from __future__ import annotations

import copy
import hashlib
from types import SimpleNamespace

import numpy as np
import torch

from .data import DataSource, load_records
from .errors import UnlearnError
from .recipes.idk import load_refusals

LABELS = ("refusal", "perturbed", "random")


def build_context(
    forget: DataSource,
    retain: DataSource | None = None,
    n_forget: int = 4,
    n_retain: int = 4,
    label: str = "refusal",
    seed: int = 0,
    refusals: str | None = None,
) -> str:
    """The demonstrations: `n_forget` forget questions with altered answers, then `n_retain` retain questions
    with their answers, as "Question: ...\\nAnswer: ...\\n\\n" blocks."""
    if label not in LABELS:
        raise UnlearnError(f"`label` must be one of {', '.join(LABELS)}; got {label!r}.")
    rows = [dict(r) for r in load_records(forget)]
    if not rows:
        raise UnlearnError("The forget set is empty: in-context unlearning needs examples to show.")
    rng = np.random.default_rng(seed)
    shown = [rows[i] for i in rng.permutation(len(rows))[:n_forget]]
    if label == "perturbed":
        if not all(r.get("perturbed_answer") for r in shown):
            raise UnlearnError("`label: perturbed` needs a `perturbed_answer` column in the forget set.")
        answers = [
            r["perturbed_answer"][0] if isinstance(r["perturbed_answer"], list) else r["perturbed_answer"]
            for r in shown
        ]
    elif label == "random":
        answers = [rows[(i + 1) % len(rows)]["answer"] for i in range(len(shown))]
    else:
        pool = load_refusals(refusals)
        answers = [pool[int(rng.integers(len(pool)))] for _ in shown]
    blocks = [(r["question"], a) for r, a in zip(shown, answers, strict=True)]
    if n_retain:
        if retain is None:
            raise UnlearnError("`n_retain` > 0 needs a retain set (or pass n_retain=0).")
        kept = [dict(r) for r in load_records(retain)]
        blocks += [(r["question"], r["answer"]) for r in (kept[i] for i in rng.permutation(len(kept))[:n_retain])]
    return "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in blocks)


class InContextUnlearner(torch.nn.Module):
    """A causal LM that always reads `context` first; logits and generations are aligned with the caller's rows."""

    def __init__(self, model: torch.nn.Module, tokenizer, context: str):
        super().__init__()
        self.model, self.context = model, context
        self.pad_token_id = tokenizer.pad_token_id
        self.bos_token_id = tokenizer.bos_token_id
        self.context_ids = tokenizer(context, add_special_tokens=True)["input_ids"]
        tag = hashlib.sha256(context.encode()).hexdigest()[:12]
        self.config = copy.copy(model.config)
        self.config._name_or_path = f"{getattr(model.config, '_name_or_path', '')}#icul-{tag}"

    def _rows(self, input_ids, attention_mask):
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        rows = []
        for ids, m in zip(input_ids.tolist(), mask.tolist(), strict=True):
            ids = [t for t, keep in zip(ids, m, strict=True) if keep]
            if ids and self.bos_token_id is not None and ids[0] == self.bos_token_id:
                ids = ids[1:]  # the context already starts the sequence
            rows.append(self.context_ids + ids)
        return rows

    def _batch(self, rows, left: bool):
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
            span = slice(width - len(r), width) if left else slice(0, len(r))
            ids[b, span], mask[b, span] = torch.tensor(r), 1
        device = next(self.model.parameters()).device
        return ids.to(device), mask.to(device)

    def forward(self, input_ids, attention_mask=None, output_hidden_states: bool = False, **kwargs):
        """Teacher-forced pass; `logits` (and `hidden_states`) are returned at the caller's positions."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        rows = self._rows(input_ids, attention_mask)
        ids, mask = self._batch(rows, left=False)
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=output_hidden_states, **kwargs)

        # Row b's real tokens sit at [len(context), ...) here and at the positions where attention_mask is 1 there.
        def realign(t):
            aligned = t.new_zeros((*input_ids.shape, t.shape[-1]))
            for b, m in enumerate(attention_mask.bool()):
                n = int(m.sum())
                aligned[b, m] = t[b, len(rows[b]) - n : len(rows[b])]
            return aligned

        hidden = tuple(realign(h) for h in out.hidden_states) if output_hidden_states else None
        return SimpleNamespace(logits=realign(out.logits), hidden_states=hidden)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, **kwargs):
        """Generate after the context; returns the caller's `input_ids` followed by the new tokens."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ids, mask = self._batch(self._rows(input_ids, attention_mask), left=True)
        out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        return torch.cat([input_ids.to(out.device), out[:, ids.shape[1] :]], dim=1)

    def with_model(self, model: torch.nn.Module) -> InContextUnlearner:
        """The same context in front of other weights (e.g. an attacked copy)."""
        other = copy.copy(self)
        other._modules = {**self._modules, "model": model}
        return other

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()

    def get_decoder(self):
        return self.model.get_decoder()


def icul(model, tokenizer, forget: DataSource, retain: DataSource | None = None, **options) -> InContextUnlearner:
    """Wrap `model` so that it unlearns `forget` in context (see `build_context` for the options)."""
    return InContextUnlearner(model, tokenizer, build_context(forget, retain, **options))
