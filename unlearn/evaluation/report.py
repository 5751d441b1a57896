"""The Markdown report and PNG plots of an evaluation, and the trade-off chart across runs (`unlearn compare`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def direction(spec: dict[str, Any], higher_is_better: bool) -> str:
    """The arrow the reader wants: on a forget set, knowledge should go down."""
    from .metrics import METRICS

    metric = METRICS.get(spec["metric"])
    if spec.get("role") == "forget" and metric is not None and metric.knowledge:
        higher_is_better = not higher_is_better
    return "↑" if higher_is_better else "↓"


def write_report(result, out: Path) -> None:
    lines = [
        f"# Evaluation: suite `{result.suite}`",
        "",
        f"Model: `{result.meta.get('model')}` (fingerprint {result.meta.get('model_fingerprint')})",
        "",
    ]
    if result.meta.get("reference"):
        lines += [f"Reference: `{result.meta['reference']}`", ""]
    lines += ["| metric | data | value | better |", "|---|---|---|---|"]
    for name, r in result.metrics.items():
        spec = result.specs[name]
        lines.append(f"| {name} | {spec.get('data', '')} | {r.agg_value:.4g} | {direction(spec, r.higher_is_better)} |")
    if "forget_quality" in result.metrics and result.metrics["forget_quality"].extra.get("reference_samples"):
        _truth_ratio_plot(result, out / "truth_ratio.png")
        lines += ["", "![forget-set truth ratios, model vs reference](truth_ratio.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _truth_ratio_plot(result, path: Path) -> None:
    from .metrics import dependencies
    from .reference import reference_values

    (key,) = dependencies(result.specs["forget_quality"])
    mine = np.asarray(result.metrics[key].values)
    from .reference import load_reference

    ref = np.asarray(reference_values(load_reference(result.meta["reference"]), key))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, max(float(mine.max()), float(ref.max()), 1.0), 30)
    ax.hist(ref, bins=bins, alpha=0.5, label="reference (retain-only)", density=True)
    ax.hist(mine, bins=bins, alpha=0.5, label="model", density=True)
    ax.set_xlabel("truth ratio R (forget set)")
    ax.set_ylabel("density")
    ax.set_title(f"forget quality (KS p-value) = {result.metrics['forget_quality'].agg_value:.3g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in both coordinates (higher is better in both)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return front


def compare(run_dirs: list[str], out: str | Path, x: str = "forget_quality", y: str = "model_utility") -> Path:
    """Draw `x` against `y` for several evaluations (each a directory holding SUMMARY.json); mark the Pareto front."""
    from ..errors import UnlearnError

    rows = []
    for d in run_dirs:
        path = Path(d) / "SUMMARY.json" if Path(d).is_dir() else Path(d)
        if not path.is_file():
            raise UnlearnError(f"`{d}` holds no SUMMARY.json; run `unlearn eval ... --out {d}` first.")
        summary = json.loads(path.read_text())
        missing = [m for m in (x, y) if m not in summary["metrics"]]
        if missing:
            raise UnlearnError(f"`{path}` has no {missing} (it has {sorted(summary['metrics'])}).")
        rows.append((str(d), summary["metrics"][x], summary["metrics"][y]))
    front = set(pareto_front([(a, b) for _, a, b in rows]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, (name, a, b) in enumerate(rows):
        ax.scatter(a, b, marker="*" if i in front else "o", s=120 if i in front else 40)
        ax.annotate(Path(name).name, (a, b), fontsize=8, xytext=(4, 4), textcoords="offset points")
    if x == "forget_quality":
        ax.set_xscale("log")
    ordered = sorted((rows[i][1], rows[i][2]) for i in front)
    ax.plot([p[0] for p in ordered], [p[1] for p in ordered], "--", lw=1, label="Pareto front")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "compare.png", dpi=100)
    plt.close(fig)
    table = ["| run | " + x + " | " + y + " | Pareto |", "|---|---|---|---|"]
    table += [f"| {n} | {a:.4g} | {b:.4g} | {'*' if i in front else ''} |" for i, (n, a, b) in enumerate(rows)]
    (out / "compare.md").write_text("\n".join(table) + "\n\n![trade-off](compare.png)\n")
    return out
