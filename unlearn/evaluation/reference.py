"""Reference logs: the evaluation of the retain-only model that forget quality and privacy leakage compare with.

Accepted: a directory holding `EVAL.json` (written by `unlearn eval` / `unlearn reference`) or open-unlearning's
`*_EVAL.json`, or such a file. Both map a metric name to `{agg_value, value_by_index: {i: {score}}}`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import UnlearnError

# Our metric names -> the names open-unlearning's TOFU/MUSE logs use for the same quantity.
ALIASES = {
    "forget_truth_ratio": ["forget_truth_ratio", "forget_Truth_Ratio"],
    "mia_min_k": ["mia_min_k"],
    "mia_min_k_plus_plus": ["mia_min_k_plus_plus"],
    "mia_loss": ["mia_loss"],
    "mia_zlib": ["mia_zlib"],
}


def load_reference(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        found = [p / "EVAL.json"] if (p / "EVAL.json").is_file() else sorted(p.glob("*_EVAL.json"))
        if not found:
            raise UnlearnError(
                f"Reference directory `{p}` holds no EVAL.json or *_EVAL.json. Make it with "
                "`unlearn reference ... --out DIR`."
            )
        p = found[0]
    if not p.is_file():
        raise UnlearnError(f"Reference `{p}` does not exist. Make it with `unlearn reference ... --out DIR`.")
    log = json.loads(p.read_text())
    if not isinstance(log, dict):
        raise UnlearnError(f"Reference `{p}` is not an evaluation log (a JSON object of metrics).")
    return log


def _entry(log: dict[str, Any], key: str, where: str | None) -> dict[str, Any]:
    for name in ALIASES.get(key, [key]):
        if isinstance(log.get(name), dict):
            return log[name]
    raise UnlearnError(
        f"The reference log {where or ''} has no `{key}` entry (it has: {', '.join(sorted(log)[:12])}). "
        "Evaluate the reference model with the same suite."
    )


def reference_values(log: dict[str, Any], key: str, where: str | None = None) -> list[float]:
    entry = _entry(log, key, where)
    by_index = entry.get("value_by_index")
    if not by_index:
        raise UnlearnError(f"The reference `{key}` entry has no per-sample `value_by_index` to compare with.")
    items = sorted(by_index.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else str(kv[0]))
    values = [v.get("score") if isinstance(v, dict) else v for _, v in items]
    values = [float(v) for v in values if v is not None]
    if not values:
        raise UnlearnError(f"The reference `{key}` entry holds no scores.")
    return values


def reference_agg(log: dict[str, Any], key: str, where: str | None = None) -> float:
    value = _entry(log, key, where).get("agg_value")
    if value is None:
        raise UnlearnError(f"The reference `{key}` entry has no `agg_value`.")
    return float(value)
