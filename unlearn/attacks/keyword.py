"""Keyword emphasis: re-ask with the prompt words that carry the answer made prominent.

Following "Understanding the Dilemma of Unlearning for Large Language Models" (arXiv:2509.24675): score each prompt
word's contribution to the answer, log p(answer | prompt) - log p(answer | prompt without the word), take the
`top` words, and re-ask with them emphasized: repeated after the question, quoted inside it, or named first
("Focus on: ..."). Words rather than subword tokens are scored, so that a removal leaves a readable prompt; all
ablated prompts of all questions are scored in shared batches. Reported: per variant, and the best variant per
question (the attacker keeps what works).
"""

from __future__ import annotations

import statistics

import numpy as np

from ..data import tokenize_prompts
from ..evaluation.metrics import MetricResult
from ..scoring import row_stats
from .common import AttackResult, prompts_for, score_prompts

VARIANTS = {
    "repeat": lambda q, words: f"{q} {' '.join(words)}",
    "quote": lambda q, words: " ".join(f'"{w}"' if w in words else w for w in q.split()),
    "focus": lambda q, words: f"Focus on: {', '.join(words)}. {q}",
}


def keyword_contributions(model, tokenizer, rows, batch_size: int = 8) -> list[list[tuple[str, float]]]:
    """For each question, (word, contribution to the answer log-likelihood) for every word, largest first."""
    prompts, answers, owners = [], [], []
    for i, r in enumerate(rows):
        words = r["question"].split()
        variants = [r["question"]] + [" ".join(words[:j] + words[j + 1 :]) for j in range(len(words))]
        prompts += prompts_for(tokenizer, variants)
        answers += [" " + r["answer"]] * len(variants)
        owners.append((i, len(variants)))
    stats = row_stats(model, tokenize_prompts(tokenizer, prompts, answers), tokenizer.pad_token_id, batch_size)
    out, pos = [], 0
    for i, n in owners:
        ll = [-s.nll * s.n_tokens for s in stats[pos : pos + n]]
        words = rows[i]["question"].split()
        out.append(sorted(zip(words, [ll[0] - x for x in ll[1:]], strict=True), key=lambda wc: -wc[1]))
        pos += n
    return out


def keyword(models, tokenizer, forget, retain, before, original, top: int = 3, **_):
    contributions = keyword_contributions(models.unlearned, tokenizer, forget)
    answers = [r["answer"] for r in forget]
    per_variant = {}
    for name, make in VARIANTS.items():
        questions = [make(r["question"], [w for w, _ in c[:top]]) for r, c in zip(forget, contributions, strict=True)]
        per_variant[name] = score_prompts(models.unlearned, tokenizer, prompts_for(tokenizer, questions), answers)
    best = np.argmax([[v["probability"].values[i] for v in per_variant.values()] for i in range(len(forget))], axis=1)
    names = list(per_variant)
    after = {}
    for metric in ("probability", "rouge"):
        vals = [per_variant[names[b]][metric].values[i] for i, b in enumerate(best)]
        after[metric] = MetricResult(statistics.fmean(vals), True, vals)
    result = AttackResult("keyword", before, after, original, {
        "top_words": [[w for w, _ in c[:top]] for c in contributions],
        "per_variant": {n: {m: r.agg_value for m, r in v.items()} for n, v in per_variant.items()},
        "best_variant": [names[b] for b in best],
    })  # fmt: skip
    result.details["summary"] = "best of " + ", ".join(
        f"{n} {v['probability']:.3f}" for n, v in result.details["per_variant"].items()
    )
    return result
