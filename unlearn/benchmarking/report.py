"""The benchmark's results: `results.json`, `RESULTS.md`, the forget-quality / model-utility chart and the
relearning curves, all read from the step records (nothing is recomputed here)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from ..evaluation.report import _plt, pareto_front
from ..rundir import write_atomic
from .protocol import Protocol
from .steps import Steps

COLUMNS = [  # (key in a row, header, format)
    ("forget_quality", "FQ ↑", "{:.3g}"),
    ("model_utility", "MU ↑", "{:.3f}"),
    ("mu_ratio", "MU / target", "{:.2f}"),
    ("forget_truth_ratio", "forget TR", "{:.3f}"),
    ("forget_probability", "forget P ↓", "{:.3f}"),
    ("forget_rouge", "forget ROUGE ↓", "{:.3f}"),
    ("privleak", "privleak", "{:.1f}"),
    ("relearn", "relearned ↓", "{:.2f}"),
    ("quantize", "4-bit ↓", "{:.2f}"),
    ("minutes", "min", "{:.1f}"),
    ("peak_gb", "peak GB", "{:.2f}"),
]
# Entries that lowered the forget probability by less than this: their recovered fractions are not read.
SMALL_GAP = 0.05
METRIC_KEYS = (
    "forget_quality",
    "model_utility",
    "forget_truth_ratio",
    "forget_probability",
    "forget_rouge",
    "privleak",
)


def _row(name: str, recipe: str, settings: dict, metrics: dict[str, float], records: list[dict]) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, "recipe": recipe, "settings": settings}
    row.update({k: metrics.get(k) for k in METRIC_KEYS})
    row["minutes"] = round(sum(r["minutes"] for r in records), 2)
    peaks = [r["peak_gb"] for r in records if r.get("peak_gb") is not None]
    row["peak_gb"] = max(peaks) if peaks else None
    return row


def collect(p: Protocol, steps: Steps, models: dict[str, Any]) -> list[dict[str, Any]]:
    rec = steps.records
    target_mu = rec["eval/target"]["result"]["metrics"]["model_utility"]
    rows = []
    for label, model_step in (("target", "target"), ("retain", "retain")):
        records = [r for r in (rec.get(model_step), rec[f"eval/{label}"]) if r is not None]
        row = _row(label, label, {"model": models[label]}, rec[f"eval/{label}"]["result"]["metrics"], records)
        rows.append(row)
    for entry in p.entries:
        base = f"entries/{entry.name}"
        records = [rec[f"{base}/train"], rec[f"{base}/eval"]] + [rec[f"{base}/attack-{a}"] for a in p.attacks]
        row = _row(entry.name, entry.recipe, entry.settings, rec[f"{base}/eval"]["result"]["metrics"], records)
        for a in p.attacks:
            row[a] = rec[f"{base}/attack-{a}"]["result"]["recovered"]
        row["attacks"] = {a: rec[f"{base}/attack-{a}"]["result"] for a in p.attacks}
        row["steps"] = rec[f"{base}/train"]["result"].get("global_step")
        rows.append(row)
    target_p = rows[0]["forget_probability"]
    for row in rows:
        row["mu_ratio"] = row["model_utility"] / target_mu if target_mu else None
        if target_p is not None and row["forget_probability"] is not None and row["name"] != "target":
            row["forgotten"] = target_p - row["forget_probability"]  # the gap every recovered fraction divides by
    entries = [r for r in rows if r["name"] not in ("target", "retain")]
    front = pareto_front([(r["forget_quality"], r["model_utility"]) for r in entries])
    for i, r in enumerate(entries):
        r["pareto"] = i in front
    floor = p.select["utility_floor"]
    for recipe in dict.fromkeys(r["recipe"] for r in entries):
        ok = [
            r
            for r in entries
            if r["recipe"] == recipe and (r["mu_ratio"] or 0) >= floor and (r.get("forgotten") or 0) >= SMALL_GAP
        ]  # kept its utility, and forgot something
        if ok:
            max(ok, key=lambda r: r["forget_quality"])["recommended"] = True
    return rows


def _cost(steps: Steps) -> dict[str, Any]:
    by_phase: dict[str, float] = {}
    for r in steps.records.values():
        by_phase[r["phase"]] = round(by_phase.get(r["phase"], 0.0) + r["minutes"], 2)
    peaks = [r["peak_gb"] for r in steps.records.values() if r.get("peak_gb") is not None]
    return {"minutes": round(sum(by_phase.values()), 2), "by_phase": by_phase, "peak_gb": max(peaks, default=None)}


def write_results(p: Protocol, root: Path, steps: Steps, models: dict[str, Any]) -> dict[str, Any]:
    rows = collect(p, steps, models)
    sanity = json.loads((root / "eval" / "sanity.json").read_text())
    results = {
        "protocol": p.to_dict(),
        "rows": rows,
        "sanity": sanity,
        "cost": _cost(steps),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "ran_now": steps.ran,
    }
    write_atomic(root / "results.json", json.dumps(results, indent=2, default=str))
    _tradeoff_plot(rows, root / "tradeoff.png")
    _relearn_plot(rows, root / "relearn_curves.png")
    write_atomic(root / "RESULTS.md", _markdown(p, results))
    return results


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else spec.format(value)


def _markdown(p: Protocol, results: dict[str, Any]) -> str:
    rows, sanity, cost = results["rows"], results["sanity"], results["cost"]
    command = f"unlearn benchmark {p.source}" if p.source else "unlearn.benchmark(...)"
    command += "".join(f" '{k}={json.dumps(v)}'" for k, v in p.overrides.items())
    lines = [
        f"# Benchmark `{p.name}`",
        "",
        *([p.description.strip(), ""] if p.description.strip() else []),
        f"Made with `{command}`.",
        "",
        f"Suite `{p.suite}` {json.dumps(p.suite_params)}; forget quality against the retain model; "
        f"attacks: {', '.join(f'{a} {json.dumps(o)}' for a, o in p.attacks.items()) or 'none'}. "
        "relearned / 4-bit: the fraction of the forget-set probability removed by unlearning that the attack "
        "brings back (0 = none, 1 = all). ★ Pareto front of (FQ, MU) among the entries; ✓ the recommended "
        f"setting of its recipe (best FQ with MU >= {p.select['utility_floor']:g} x the target's, among entries that "
        f"lowered the forget probability by at least {SMALL_GAP:g}). Recovered "
        f"fractions in parentheses belong to entries that removed less than {SMALL_GAP:g} of the target's forget "
        "probability: a ratio of two small differences, noise rather than a measurement.",
        "",
    ]
    if not sanity["passed"]:
        lines += [
            "**Sanity check failed: " + "; ".join(sanity["problems"]) + ". The rows below do not measure "
            "unlearning of knowledge the target had.**",
            "",
        ]
    else:
        lines += [
            f"Sanity: the target's forget quality against the retain model is {sanity['target_forget_quality']:.3g} "
            f"(< {sanity['max_forget_quality']:g}); forget probability target "
            f"{_fmt(sanity['target_forget_probability'], '{:.3f}')} vs retain "
            f"{_fmt(sanity['retain_forget_probability'], '{:.3f}')}.",
            "",
        ]
    attacks = set(p.attacks)
    cols = [c for c in COLUMNS if c[0] not in ("relearn", "quantize") or c[0] in attacks]
    cols = [c for c in cols if c[0] != "privleak" or any(r.get("privleak") is not None for r in rows)]
    lines += ["| entry | " + " | ".join(h for _, h, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        mark = ("★" if r.get("pareto") else "") + ("✓" if r.get("recommended") else "")
        cells = [_fmt(r.get(k), f) for k, _, f in cols]
        if (r.get("forgotten") or 0) < SMALL_GAP:  # a ratio of two small differences: shown, not to be read
            cells = [f"({c})" if k in attacks and c != "n/a" else c for c, (k, _, _) in zip(cells, cols, strict=True)]
        lines.append(f"| {r['name']} {mark} | " + " | ".join(cells) + " |")
    phases = ", ".join(f"{k} {v:.1f}" for k, v in cost["by_phase"].items())
    lines += [
        "",
        f"Cost: {cost['minutes']:.1f} min of steps ({phases}); peak memory {_fmt(cost['peak_gb'], '{:.2f}')} GB "
        f"({results['machine']['processor']}, {results['machine']['platform']}). Minutes and peaks are "
        "per step as first run; cached steps keep theirs.",
        "",
        "![forget quality vs model utility](tradeoff.png)",
        "",
        *(["![relearning curves](relearn_curves.png)", ""] if "relearn" in p.attacks else []),
    ]
    return "\n".join(lines)


def _tradeoff_plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in rows:
        fq, mu = r["forget_quality"], r["model_utility"]
        if fq is None or mu is None:
            continue
        marker = {"target": "X", "retain": "P"}.get(r["name"], "*" if r.get("pareto") else "o")
        ax.scatter(max(fq, 1e-30), mu, marker=marker, s=140 if marker != "o" else 50)
        ax.annotate(r["name"], (max(fq, 1e-30), mu), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.axvline(0.05, ls=":", lw=1, color="gray")
    ax.set_xlabel("forget quality (KS p-value vs retain model, log)")
    ax.set_ylabel("model utility")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _relearn_plot(rows: list[dict[str, Any]], path: Path) -> None:
    curves = [(r["name"], r["attacks"]["relearn"]["details"]) for r in rows if "relearn" in r.get("attacks", {})]
    if not curves:
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, d in curves:
        ax.plot(d["steps"], d["curve"], "o-", ms=3, label=name)
    d = curves[0][1]
    ax.plot(d["steps"], d["baseline_curve"], "k--", lw=2, label="retain model (never saw the forget set)")
    ax.set_xlabel("relearning steps")
    ax.set_ylabel("forget probability on the held-out half")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
