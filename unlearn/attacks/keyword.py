"""Keyword emphasis: re-ask with the prompt words that carry the answer made prominent.

Following "Understanding the Dilemma of Unlearning for Large Language Models": score each prompt
word's contribution to the answer, log p(answer | prompt) - log p(answer | prompt without the word), take the
`top` words, and re-ask with them emphasized: repeated after the question, quoted inside it, or named first
("Focus on: ..."). Words rather than subword tokens are scored, so that a removal leaves a readable prompt; all
ablated prompts of all questions are scored in shared batches. Reported: per variant, and the best variant per
question (the attacker keeps what works).
"""

from __future__ import annotations

from .common import AttackResult, best_per_sample, grouped_loglik, prompts_for, score_prompts

VARIANTS = {
    "repeat": lambda q, words: f"{q} {' '.join(words)}",
    "quote": lambda q, words: " ".join(f'"{w}"' if w in words else w for w in q.split()),
    "focus": lambda q, words: f"Focus on: {', '.join(words)}. {q}",
}


def keyword_contributions(model, tokenizer, rows, batch_size: int = 8) -> list[list[tuple[str, float]]]:
    """For each question, (word, contribution to the answer log-likelihood) for every word, largest first."""
    groups = []
    for r in rows:
        words = r["question"].split()
        variants = [r["question"]] + [" ".join(words[:j] + words[j + 1 :]) for j in range(len(words))]
        groups.append([(p, " " + r["answer"]) for p in prompts_for(tokenizer, variants)])
    out = []
    for r, ll in zip(rows, grouped_loglik(model, tokenizer, groups, batch_size), strict=True):
        contrib = [ll[0] - x for x in ll[1:]]
        out.append(sorted(zip(r["question"].split(), contrib, strict=True), key=lambda wc: -wc[1]))
    return out


def keyword(models, tokenizer, forget, retain, before, original, top: int = 3, **_):
    contributions = keyword_contributions(models.unlearned, tokenizer, forget)
    answers = [r["answer"] for r in forget]
    per_variant = {}
    for name, make in VARIANTS.items():
        questions = [make(r["question"], [w for w, _ in c[:top]]) for r, c in zip(forget, contributions, strict=True)]
        per_variant[name] = score_prompts(models.unlearned, tokenizer, prompts_for(tokenizer, questions), answers)
    after, best = best_per_sample(per_variant)
    result = AttackResult(
        "keyword",
        before,
        after,
        original,
        {
            "top_words": [[w for w, _ in c[:top]] for c in contributions],
            "per_variant": {n: {m: r.agg_value for m, r in v.items()} for n, v in per_variant.items()},
            "best_variant": best,
        },
    )
    result.details["summary"] = "best of " + ", ".join(
        f"{n} {v['probability']:.3f}" for n, v in result.details["per_variant"].items()
    )
    return result
