"""In-context knowledge unlearning: one adapter that forgets whatever target the prompt names.

Following "Answer When Needed, Forget When Not: Language Models Pretend to Forget via In-Context Knowledge
Unlearning": a LoRA adapter is fine-tuned on prompts that open with an unlearning block naming
a target. Questions about the named target are answered with a fixed "forgot" response; questions about anything
else (a distractor target is named, or none) are answered normally. The training pairs are built from the forget
and retain QA sets; each row's target is its `target_key` column, or the first capitalized name in its answer.
At inference the request travels with each query (`ickul_prompt`), so one adapter serves many targets.

The loss is plain NLL on the constructed pairs (what the paper fine-tunes with); the forget slot of the trainer
carries them all, the retain set being folded into the pairs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import UnlearnConfig
from ..data import find_names, load_records, name_counts
from ..errors import UnlearnError
from ..trainer import UnlearnTrainer, mean_nll
from .registry import register

logger = logging.getLogger(__name__)


def ickul_prompt(question: str, targets: list[str] | str | None) -> str:
    """The question with its unlearning request: `<unlearn>target; ...</unlearn>` before it (none: the bare question)."""
    if not targets:
        return question
    names = [targets] if isinstance(targets, str) else list(targets)
    return f"<unlearn>{'; '.join(names)}</unlearn> {question}"


def row_targets(rows: list[dict[str, Any]], target_key: str | None) -> list[str | None]:
    """Each row's target: its `target_key` value, or, among the names in its answer, the one named most often
    across all rows (the entity the rows are about rather than a place or a title mentioned once)."""
    if target_key:
        return [str(r[target_key]) if r.get(target_key) else None for r in rows]
    names = [find_names(str(r.get("answer", ""))) for r in rows]
    counts = name_counts(r.get("answer", "") for r in rows)
    return [max(ns, key=lambda n: counts[n]) if ns else None for ns in names]


def build_pairs(
    forget, retain, forgot_response: str, target_key: str | None, seed: int
) -> tuple[list[dict], list[str]]:
    """Training pairs: (named target -> forgot), (distractor named -> answer), (no request -> answer)."""
    f_rows, r_rows = [dict(r) for r in load_records(forget)], [dict(r) for r in load_records(retain)]
    both = row_targets(f_rows + r_rows, target_key)
    f_targets, r_targets = both[: len(f_rows)], both[len(f_rows) :]
    missing = sum(t is None for t in f_targets)
    if missing == len(f_rows):
        raise UnlearnError(
            "No forget row names a target: give a `target_key` column (e.g. the author) or answers that "
            "contain the name."
        )
    if missing:
        logger.warning("%d of %d forget rows name no target and are skipped.", missing, len(f_rows))
    pool = sorted({t for t in f_targets + r_targets if t})
    rng = np.random.default_rng(seed)
    pairs = []
    for row, target in zip(f_rows, f_targets, strict=True):
        if target is None:
            continue
        others = [t for t in pool if t != target]
        pairs.append({"question": ickul_prompt(row["question"], target), "answer": forgot_response})
        if others:
            distractor = others[int(rng.integers(len(others)))]
            pairs.append({"question": ickul_prompt(row["question"], distractor), "answer": row["answer"]})
    forget_names = sorted({t for t in f_targets if t})
    logger.warning("ickul forget targets: %s", "; ".join(forget_names))
    for row, target in zip(r_rows, r_targets, strict=True):
        named = [t for t in forget_names if t != target]
        if named:
            pairs.append(
                {
                    "question": ickul_prompt(row["question"], named[int(rng.integers(len(named)))]),
                    "answer": row["answer"],
                }
            )
        pairs.append({"question": row["question"], "answer": row["answer"]})
    return pairs, forget_names


@dataclass
class ICKULConfig(UnlearnConfig):
    recipe: str = field(default="ickul", metadata={"help": "Recipe name."})
    forgot_response: str = field(default="I forgot.", metadata={"help": "The fixed answer for a named target."})
    target_key: str | None = field(
        default=None, metadata={"help": "Column naming each row's target; default: the first name in the answer."}
    )
    learning_rate: float = field(default=3e-4, metadata={"help": "LoRA learning rate for the pair fine-tuning."})


@register
class ICKULTrainer(UnlearnTrainer):
    _name = "ickul"
    _paper = {
        "title": "Answer When Needed, Forget When Not: Language Models Pretend to Forget via In-Context Knowledge Unlearning"
    }
    config_class = ICKULConfig
    data_needs = "forget + retain: QA pairs naming their target (or `target_key`)"

    def __init__(self, model, args, forget, retain=None, processing_class=None, **kwargs):
        if retain is None:
            raise UnlearnError("`ickul` builds its normal-answer pairs from a retain set; pass `retain`.")
        pairs, self.targets = build_pairs(forget, retain, args.forgot_response, args.target_key, args.seed)
        super().__init__(model, args, pairs, None, processing_class, **kwargs)

    def forget_loss(self, logps, n_tokens, index):
        return mean_nll(logps, n_tokens)


def ickul_report(
    model,
    tokenizer,
    forget,
    retain,
    heldout=None,
    forgot_response: str = "I forgot.",
    target_key: str | None = None,
    max_new_tokens: int = 24,
    rouge_threshold: float = 0.5,
) -> dict[str, Any]:
    """The paper's accuracies from greedy answers: forget accuracy (named target -> the forgot response), retain
    accuracy in-domain (a forget target is named, the question is about someone else -> a correct answer, ROUGE-L
    recall >= `rouge_threshold` against the answer's opening words), the same on forget questions whose own target is not the one named, and on a
    held-out domain."""
    from ..evaluation.metric_math import rouge_l_recall
    from ..scoring import greedy_answers

    f_rows, r_rows = [dict(r) for r in load_records(forget)], [dict(r) for r in load_records(retain)]
    f_targets = row_targets(f_rows, target_key)
    names = sorted({t for t in f_targets if t})
    if not names:
        raise UnlearnError("No forget row names a target; pass `target_key`.")
    forgot = forgot_response.lower().strip(" .")

    def answered(rows, named):
        gens = greedy_answers(
            model, tokenizer, [ickul_prompt(r["question"], n) for r, n in zip(rows, named, strict=True)], max_new_tokens
        )
        said_forgot = [forgot in g.lower() for g in gens]
        # A generation cut at max_new_tokens is judged against the answer's opening of the same length.
        correct = [
            not f and rouge_l_recall(g, " ".join(r["answer"].split()[: max(1, len(g.split()))])) >= rouge_threshold
            for g, f, r in zip(gens, said_forgot, rows, strict=True)
        ]
        return said_forgot, correct

    rows_t = [(r, t) for r, t in zip(f_rows, f_targets, strict=True) if t]
    said, _ = answered([r for r, _ in rows_t], [t for _, t in rows_t])
    report = {"targets": names, "forget_accuracy": float(np.mean(said))}
    others = [(r, next(n for n in names if n != t)) for r, t in rows_t if len(names) > 1]
    if others:
        _, ok = answered([r for r, _ in others], [n for _, n in others])
        report["forget_rows_other_target_accuracy"] = float(np.mean(ok))
    _, ok = answered(r_rows, [names[i % len(names)] for i in range(len(r_rows))])
    report["retain_accuracy"] = float(np.mean(ok))
    if heldout is not None:
        h_rows = [dict(r) for r in load_records(heldout)]
        _, ok = answered(h_rows, [names[i % len(names)] for i in range(len(h_rows))])
        report["heldout_accuracy"] = float(np.mean(ok))
    return report
