"""Sequential (continual) forgetting: several forget requests, one after another, with metrics after each.

The setting of GS-LoRA and SEFE: requests arrive over time and each must be honoured without undoing the earlier
ones or the model's utility. With `merge=True` each request trains a fresh adapter that is merged into the weights
before the next request; with `merge=False` one adapter keeps training across requests. With `output_dir`, each
request is a complete run directory (`request-<i>/`).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from .data import DataSource, load_records
from .errors import UnlearnError
from .run import forget
from .scoring import answer_nll


def sequential_forget(
    model: torch.nn.Module,
    tokenizer,
    requests: list[DataSource],
    retain: DataSource | None = None,
    recipe: str = "graddiff",
    merge: bool = True,
    output_dir: str | os.PathLike | None = None,
    **overrides: Any,
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Apply `requests` in order; returns the final model and, after each request, the mean answer NLL of every
    request so far and of the retain set."""
    if not requests:
        raise UnlearnError("`requests` is empty: give at least one forget set.")
    sets = [[dict(r) for r in load_records(req)] for req in requests]
    retain_rows = [dict(r) for r in load_records(retain)] if retain is not None else None
    history = []
    for i, rows in enumerate(sets):
        out = Path(output_dir) / f"request-{i}" if output_dir is not None else None
        model = forget(model, tokenizer, rows, retain, recipe=recipe, output_dir=out, **overrides)
        if merge and isinstance(model, PeftModel):
            model = model.merge_and_unload()
        entry: dict[str, Any] = {
            "request": i,
            "forget_nll": [statistics.fmean(answer_nll(model, tokenizer, s)) for s in sets[: i + 1]],
        }
        if retain_rows is not None:
            entry["retain_nll"] = statistics.fmean(answer_nll(model, tokenizer, retain_rows))
        history.append(entry)
    return model, history
