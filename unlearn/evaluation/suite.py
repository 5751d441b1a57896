"""Evaluation suites: small YAML files naming datasets and the metrics computed on them.

    include: tofu.yaml            # optional: merge another suite first (list or string)
    params: {forget_split: forget10, limit: null}
    datasets:
      forget: {path: "tofu:{forget_split}_perturbed", paraphrased_key: paraphrased_answer, perturbed_key: perturbed_answer}
    metrics:
      forget_probability: {metric: probability, data: forget, role: forget}

A dataset may take `start` and `limit` (its rows start..start+limit; the `limit` parameter is the default of every
dataset's). Strings may use `{param}`; `params` can be overridden by the caller. Suites are looked up as a path,
then by name in the shipped suites (the repository's `eval/` folder, installed as `unlearn.suites`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import UnlearnError, unknown_name
from ..resources import shipped

SUITE_DIR = shipped("suites")  # the repository's eval/, shipped in the package as unlearn.suites
DATASET_KEYS = {
    "path",
    "name",
    "split",
    "question_key",
    "answer_key",
    "text_key",
    "paraphrased_key",
    "perturbed_key",
    "start",
    "limit",
    "prefix_tokens",
}


def dataset_rows(spec: dict[str, Any]):
    """The rows a suite dataset evaluates: its source read, then sliced to `start` (default 0) and `limit`."""
    from ..data import load_records

    ds = load_records({k: spec[k] for k in ("path", "name", "split") if k in spec})
    start = int(spec.get("start") or 0)
    stop = len(ds) if spec.get("limit") is None else min(len(ds), start + int(spec["limit"]))
    if not 0 <= start < len(ds):
        raise UnlearnError(
            f"Suite dataset {spec['path']!r} has {len(ds)} rows; `start: {start}` "
            + ("leaves none." if start >= 0 else "must be >= 0 (the first row is 0).")
        )
    return ds if (start, stop) == (0, len(ds)) else ds.select(range(start, stop))


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml")) if SUITE_DIR.is_dir() else []


def _find(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    candidates = [Path(name_or_path)]
    if relative_to is not None:
        candidates.insert(0, relative_to / str(name_or_path))
    candidates.append(SUITE_DIR / f"{name_or_path}.yaml")
    candidates.append(SUITE_DIR / str(name_or_path))
    for path in candidates:
        if path.is_file():
            return path
    raise UnlearnError(unknown_name("evaluation suite", str(name_or_path), available_suites()))


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise UnlearnError(f"Suite `{path}` includes itself (via {' -> '.join(map(str, seen))}).")
    raw = yaml.safe_load(path.read_text()) or {}
    merged: dict[str, Any] = {"params": {}, "datasets": {}, "metrics": {}}
    includes = raw.pop("include", [])
    for inc in [includes] if isinstance(includes, str) else includes:
        _merge(merged, _read(_find(inc, path.parent), (*seen, path)))
    for section, key in (("datasets", "path"), ("metrics", "include_path")):  # `./x` is relative to this file
        for spec in (raw.get(section) or {}).values():
            if isinstance(spec, dict) and str(spec.get(key, "")).startswith("./"):
                spec[key] = str((path.parent / spec[key]).resolve())
    unknown = set(raw) - {"name", "description", "params", "datasets", "metrics"}
    if unknown:
        raise UnlearnError(
            f"Suite `{path}` has unknown sections {sorted(unknown)}; allowed: name, description, "
            "include, params, datasets, metrics."
        )
    _merge(merged, raw)
    return merged


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = {**into[key], **value}
        else:
            into[key] = value


def _substitute(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, str):
        try:
            return value.format(**params)
        except KeyError as e:
            raise UnlearnError(
                f"Suite value {value!r} uses parameter {e} that is not set; pass it as a param."
            ) from None
    if isinstance(value, dict):
        return {k: _substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, params) for v in value]
    return value


def load_suite(name_or_path: str | Path, **params: Any) -> dict[str, Any]:
    """The resolved suite: includes merged, `{param}` filled in, datasets and metrics checked."""
    from .metrics import METRICS

    path = _find(name_or_path)
    suite = _read(path)
    unknown = set(params) - set(suite["params"])
    if unknown:
        raise UnlearnError(
            f"Suite `{path.stem}` has no parameter(s) {sorted(unknown)}; it takes: "
            f"{', '.join(sorted(suite['params'])) or 'none'}."
        )
    values = {**suite["params"], **params}
    missing = [k for k, v in values.items() if v is None and k != "limit"]
    if missing:
        raise UnlearnError(f"Suite `{path.stem}` needs parameter(s) {missing}, e.g. --param {missing[0]}=...")
    resolved = {
        "name": suite.get("name", path.stem),
        "params": values,
        "datasets": _substitute(suite["datasets"], values),
        "metrics": _substitute(suite["metrics"], values),
    }
    for dname, spec in resolved["datasets"].items():
        bad = set(spec) - DATASET_KEYS
        if bad or "path" not in spec:
            raise UnlearnError(
                f"Dataset `{dname}` in suite `{path.stem}` needs `path` and may have "
                f"{sorted(DATASET_KEYS - {'path'})}; got {sorted(spec)}."
            )
        if values.get("limit") is not None:
            spec.setdefault("limit", values["limit"])
    for mname, spec in resolved["metrics"].items():
        if spec.get("metric") not in METRICS:
            raise UnlearnError(
                f"In suite `{path.stem}`, metric entry `{mname}`: "
                + unknown_name("metric", str(spec.get("metric")), list(METRICS))
            )
        for key in ("data", "holdout"):
            if key in spec and spec[key] not in resolved["datasets"]:
                raise UnlearnError(
                    f"Metric `{mname}` refers to dataset `{spec[key]}`, which suite `{path.stem}` "
                    f"does not define (it has: {', '.join(resolved['datasets'])})."
                )
    return resolved
