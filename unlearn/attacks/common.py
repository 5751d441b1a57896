"""What every attack shares: the three models (original, unlearned, attacked), forget-set scoring under any
prompt, and the fraction of the forgotten knowledge that came back.

Forget metrics are the evaluation package's `probability` (length-normalized answer probability) and
`rouge_l_recall` (of the greedy answer), in its per-sample log format. With prompts that an attack rewrites, the
answer is scored after the rewritten prompt, so "before" and "after" use the same scoring.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel

from ..data import format_qa, load_records, tokenize_prompts
from ..errors import UnlearnError
from ..evaluation import metric_math as mm
from ..evaluation.metrics import MetricResult
from ..scoring import greedy_answers, row_stats

NO_FORGETTING = 0.01  # original - unlearned probability below this: nothing measurable was forgotten


@dataclass
class AttackResult:
    """One attack: forget metrics of the unlearned model before and after the attack, and what came back."""

    name: str
    before: dict[str, MetricResult]  # the unlearned model
    after: dict[str, MetricResult]  # the attacked model (the strongest variant, where there are several)
    original: dict[str, MetricResult] | None  # the model before unlearning, where known
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def recovered(self) -> float | None:
        """(after - unlearned) / (original - unlearned) of the mean forget probability; None without an original,
        0 when nothing measurable was forgotten (original - unlearned below `NO_FORGETTING`)."""
        if self.original is None:
            return None
        if self.forgot_nothing:
            return 0.0
        gap = self.original["probability"].agg_value - self.before["probability"].agg_value
        return (self.after["probability"].agg_value - self.before["probability"].agg_value) / gap

    @property
    def forgot_nothing(self) -> bool:
        """The unlearned model's forget probability is within `NO_FORGETTING` of the original's (False without an
        original): there was nothing for the attack to bring back."""
        if self.original is None:
            return False
        return self.original["probability"].agg_value - self.before["probability"].agg_value < NO_FORGETTING

    def to_log(self) -> dict[str, Any]:
        def logs(metrics):
            return {k: v.to_log() for k, v in metrics.items()} if metrics is not None else None

        return {
            "attack": self.name,
            "recovered_fraction": self.recovered,
            "before": logs(self.before),
            "after": logs(self.after),
            "original": logs(self.original),
            "details": self.details,
        }

    def row(self) -> dict[str, Any]:
        p = {
            k: (v["probability"].agg_value if v is not None else None)
            for k, v in (("original", self.original), ("unlearned", self.before), ("attacked", self.after))
        }
        return {
            "attack": self.name,
            **{f"{k}_probability": v for k, v in p.items()},
            "attacked_rouge": self.after["rouge"].agg_value if "rouge" in self.after else None,
            "recovered_fraction": self.recovered,
            "forgot_nothing": self.forgot_nothing,
            "summary": self.details.get("summary", ""),
        }


def qa_rows(data, what: str = "forget", limit: int | None = None) -> list[dict]:
    """QA rows (question, answer, and any extra columns) from any data source."""
    if data is None:
        raise UnlearnError(
            f"This attack needs a {what} set (QA pairs); pass `{what}=...` (e.g. tofu:forget10_perturbed)."
        )
    ds = load_records(data)
    if not {"question", "answer"} <= set(ds.column_names):
        raise UnlearnError(f"The {what} set needs `question` and `answer` columns; it has {ds.column_names}.")
    rows = [dict(r) for r in ds]
    rows = rows[:limit] if limit else rows
    if not rows:
        raise UnlearnError(f"The {what} set is empty.")
    return rows


def prompts_for(tokenizer, questions: list[str]) -> list[str]:
    return [format_qa(tokenizer, q, "")[0] for q in questions]


def score_prompts(
    model,
    tokenizer,
    prompts: list[str],
    answers: list[str],
    generate: bool = True,
    batch_size: int = 8,
    max_new_tokens: int = 48,
) -> dict[str, MetricResult]:
    """Answer probability after each prompt (teacher forced) and, with `generate`, ROUGE-L recall of the greedy
    continuation of each prompt against its answer."""
    completions = [a if p.endswith((" ", "\n")) else " " + a for p, a in zip(prompts, answers, strict=True)]
    stats = row_stats(model, tokenize_prompts(tokenizer, prompts, completions), tokenizer.pad_token_id, batch_size)
    probs = mm.probability([s.nll for s in stats]).tolist()
    out = {"probability": MetricResult(statistics.fmean(probs), True, probs)}
    if generate:
        gens = greedy_answers(model, tokenizer, prompts, max_new_tokens, batch_size, raw=True)
        rouge = [mm.rouge_l_recall(g, a) for g, a in zip(gens, answers, strict=True)]
        out["rouge"] = MetricResult(statistics.fmean(rouge), True, rouge, {"generations": gens})
    return out


def grouped_loglik(model, tokenizer, groups: list[list[tuple[str, str]]], batch_size: int = 8) -> list[list[float]]:
    """Summed completion log-likelihood of every (prompt, completion) of every group, all in shared batches."""
    flat = [pc for group in groups for pc in group]
    examples = tokenize_prompts(tokenizer, [p for p, _ in flat], [c for _, c in flat])
    stats = iter(row_stats(model, examples, tokenizer.pad_token_id, batch_size))
    return [[-(s := next(stats)).nll * s.n_tokens for _ in group] for group in groups]


def best_per_sample(variants: dict[str, dict[str, MetricResult]]) -> tuple[dict[str, MetricResult], list[str]]:
    """Per sample, the variant that gave the highest answer probability (the attacker keeps what works)."""
    names = list(variants)
    n = len(variants[names[0]]["probability"].values)
    best = [max(names, key=lambda v: variants[v]["probability"].values[i]) for i in range(n)]
    after = {}
    for metric in variants[names[0]]:
        values = [variants[b][metric].values[i] for i, b in enumerate(best)]
        after[metric] = MetricResult(statistics.fmean(values), True, values)
    return after, best


def forget_metrics(model, tokenizer, rows: list[dict], **kw) -> dict[str, MetricResult]:
    return score_prompts(
        model, tokenizer, prompts_for(tokenizer, [r["question"] for r in rows]), [r["answer"] for r in rows], **kw
    )


class Models:
    """The unlearned model and, where it can be had, the original; copies for attacks that change weights."""

    def __init__(self, unlearned: torch.nn.Module, original: torch.nn.Module | None = None):
        from ..incontext import InContextUnlearner

        self.unlearned = unlearned
        if original is None and isinstance(unlearned, InContextUnlearner):
            original = unlearned.model  # in-context unlearning changes no weight: the weights are the original
        self._original = original
        self.is_adapter = isinstance(unlearned, PeftModel)

    def original_scores(self, tokenizer, rows, **kw) -> dict[str, MetricResult] | None:
        if self._original is not None:
            return forget_metrics(self._original, tokenizer, rows, **kw)
        if self.is_adapter:
            with self.unlearned.disable_adapter():
                return forget_metrics(self.unlearned, tokenizer, rows, **kw)
        return None

    def merged_copy(self) -> torch.nn.Module:
        """A plain model with the unlearning folded into its weights (the user's model is left as it is).

        For an in-context unlearner, the weights alone: attacks on weights re-wrap the result with `rewrap`."""
        from ..incontext import InContextUnlearner

        if isinstance(self.unlearned, InContextUnlearner):
            return copy.deepcopy(self.unlearned.model)
        model = copy.deepcopy(self.unlearned)
        return model.merge_and_unload() if self.is_adapter else model

    def rewrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """Put an attacked copy of the weights back in the unlearned model's frame (its unlearning context)."""
        from ..incontext import InContextUnlearner

        if isinstance(self.unlearned, InContextUnlearner):
            return self.unlearned.with_model(model)
        return model

    def original_copy(self) -> torch.nn.Module:
        if self._original is not None:
            return copy.deepcopy(self._original)
        if self.is_adapter:
            return copy.deepcopy(self.unlearned).unload()
        raise UnlearnError(
            "This attack compares with the original model: pass `original=` (the model before "
            "unlearning), or attack an adapter, whose base model is the original."
        )
