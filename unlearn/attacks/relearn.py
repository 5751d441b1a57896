"""Relearning: fine-tune the unlearned model briefly and watch the forgotten answers come back.

Lynch et al., "Eight Methods to Evaluate Robust Unlearning in LLMs" (arXiv:2402.16835), and Hu et al., "Jogging
the Memory of Unlearned LLMs Through Targeted Relearning Attacks" (arXiv:2406.13356): a few steps on a small slice
of the forget set (or on related data) restore knowledge that unlearning only suppressed. Recovery is measured on
the forget questions *not* in the relearning slice, at several step counts; the same fine-tuning applied to a
baseline (by default the original model; pass the retain-only reference to see learning from scratch) is shown
beside it. The curve's area is the mean forget probability over the normalized steps (trapezoid rule).
"""

from __future__ import annotations

import numpy as np
from transformers import TrainerCallback

from ..errors import UnlearnError
from ..finetuning import finetune
from .common import AttackResult, forget_metrics, qa_rows


class _Curve(TrainerCallback):
    def __init__(self, tokenizer, rows, steps, wrap):
        self.tokenizer, self.rows, self.steps, self.wrap, self.points = tokenizer, rows, set(steps), wrap, {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            self.points[state.global_step] = forget_metrics(self.wrap(model), self.tokenizer, self.rows, generate=False)


def _relearn_curve(model, tokenizer, train_rows, eval_rows, steps, settings, wrap=lambda m: m):
    curve = _Curve(tokenizer, eval_rows, steps, wrap)
    curve.points[0] = forget_metrics(wrap(model), tokenizer, eval_rows, generate=False)
    trained = finetune(model, tokenizer, train_rows, callbacks=[curve], max_steps=max(steps), **settings)
    return wrap(trained), [curve.points[s]["probability"].agg_value for s in [0, *steps]]


def _area(y, x) -> float:
    y = np.asarray(y, dtype=float)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))


def _plan(forget, retain, k, data, steps, eval_every, learning_rate, adapter):
    """The relearning rows, the rows it is measured on, the step counts measured at and the fine-tuning settings."""
    if data == "forget":
        if len(forget) <= k:
            raise UnlearnError(
                f"`relearn` trains on k={k} forget examples and measures the rest; the forget set has "
                f"only {len(forget)}. Lower `k` or give more forget data."
            )
        train_rows, eval_rows = forget[:k], forget[k:]
    elif data == "retain":
        train_rows, eval_rows = qa_rows(retain, "retain")[:k], forget
    else:
        raise UnlearnError(f"`data` of relearn must be `forget` or `retain`, got {data!r}.")
    every = eval_every or max(1, steps // 5)
    checkpoints = sorted({*range(every, steps + 1, every), steps})
    settings = {
        "learning_rate": learning_rate,
        "adapter": adapter,
        "per_device_train_batch_size": min(4, k),
        "disable_tqdm": True,
        "logging_steps": steps,
        "lr_scheduler_type": "constant",
        "seed": 0,
    }
    return train_rows, eval_rows, checkpoints, settings


def baseline_curve(
    baseline,
    tokenizer,
    forget,
    retain=None,
    k: int = 4,
    data: str = "forget",
    steps: int = 10,
    eval_every: int | None = None,
    learning_rate: float = 1e-4,
    adapter: str = "lora",
    **_,
) -> list[float]:
    """The forget-probability curve of relearning `baseline` with the same rows, steps and settings as `relearn`.

    It depends only on the baseline and the options, so a benchmark computes it once and passes it to every
    entry's attack as `baseline_curve` (fine-tuning is seeded: the curve is the same as computing it each time)."""
    train_rows, eval_rows, checkpoints, settings = _plan(
        forget, retain, k, data, steps, eval_every, learning_rate, adapter
    )
    return _relearn_curve(baseline, tokenizer, train_rows, eval_rows, checkpoints, settings)[1]


def relearn(
    models,
    tokenizer,
    forget,
    retain,
    before,
    original,
    k: int = 4,
    data: str = "forget",
    steps: int = 10,
    eval_every: int | None = None,
    learning_rate: float = 1e-4,
    adapter: str = "lora",
    baseline=None,
    baseline_curve: list[float] | None = None,
    generate: bool = True,
    **_,
):
    """Fine-tune on `k` forget examples (or `data: retain`) for `steps` steps; recovery on the other forget rows.

    `generate=False` scores answer probabilities only (no greedy generations, no ROUGE): the recovered fraction is
    the same, at a fraction of the cost on a CPU. `baseline_curve` (from `baseline_curve()` with the same options)
    stands for relearning the baseline here."""
    train_rows, eval_rows, checkpoints, settings = _plan(
        forget, retain, k, data, steps, eval_every, learning_rate, adapter
    )
    attacked, curve = _relearn_curve(
        models.merged_copy(), tokenizer, train_rows, eval_rows, checkpoints, settings, models.rewrap
    )
    if baseline_curve is None:
        base = models.original_copy() if baseline is None else baseline
        _, base_curve = _relearn_curve(base, tokenizer, train_rows, eval_rows, checkpoints, settings)
    elif len(baseline_curve) != len(checkpoints) + 1:
        raise UnlearnError(
            f"`baseline_curve` has {len(baseline_curve)} points but this relearning measures at "
            f"{len(checkpoints) + 1} step counts {[0, *checkpoints]}: compute it with `baseline_curve()` and the "
            "same options."
        )
    else:
        base_curve = [float(v) for v in baseline_curve]
    x = np.asarray([0, *checkpoints], dtype=float) / steps
    area, base_area = _area(curve, x), _area(base_curve, x)
    eval_original = None
    if original is not None:
        eval_original = forget_metrics(models.original_copy(), tokenizer, eval_rows, generate=generate)
    result = AttackResult(
        "relearn",
        forget_metrics(models.unlearned, tokenizer, eval_rows, generate=generate),
        forget_metrics(attacked, tokenizer, eval_rows, generate=generate),
        eval_original,
        {
            "steps": [0, *checkpoints],
            "curve": curve,
            "baseline_curve": base_curve,
            "area": area,
            "baseline_area": base_area,
            "trained_on": f"{len(train_rows)} {data} examples",
            "measured_on": len(eval_rows),
            "baseline": "original model" if baseline is None and baseline_curve is None else "given baseline",
        },
    )
    result.details["summary"] = (
        f"{steps} steps on {len(train_rows)} {data} rows: forget probability "
        f"{curve[0]:.3f} -> {curve[-1]:.3f} (area {area:.3f}; baseline {base_area:.3f})"
    )
    return result
