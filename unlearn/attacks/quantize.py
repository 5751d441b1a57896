"""Quantization: does rounding the weights erase the unlearning?

Zhang et al., "Catastrophic Failure of LLM Unlearning via Quantization" (arXiv:2410.16454): unlearning that lives
in small weight changes is undone when the merged model is loaded in 4-bit (or 8-bit), because the changes are
smaller than the rounding step. The merged unlearned model is reloaded with bitsandbytes and re-scored.
"""

from __future__ import annotations

import tempfile

from .common import AttackResult, forget_metrics


def quantize(
    models,
    tokenizer,
    forget,
    retain,
    before,
    original,
    bits: tuple[int, ...] | list[int] = (8, 4),
    generate: bool = True,
    **_,
):
    """Reload the merged unlearned model in each of `bits` and re-score (`generate=False`: probability only)."""
    from transformers import AutoModelForCausalLM

    from ..loading import quantization_config

    per_bits = {}
    with tempfile.TemporaryDirectory(prefix="unlearn-quant-") as tmp:
        models.merged_copy().save_pretrained(tmp)
        for b in bits:
            q = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=quantization_config(int(b)))
            per_bits[int(b)] = forget_metrics(models.rewrap(q), tokenizer, forget, generate=generate)
            del q
    worst = max(per_bits, key=lambda b: per_bits[b]["probability"].agg_value)
    result = AttackResult(
        "quantize",
        before,
        per_bits[worst],
        original,
        {
            "per_bits": {f"{b}bit": {m: r.agg_value for m, r in v.items()} for b, v in per_bits.items()},
            "worst": f"{worst}bit",
        },
    )
    result.details["summary"] = ", ".join(f"{b}: {v['probability']:.3f}" for b, v in result.details["per_bits"].items())
    return result
