"""Does the risk-controlled pick keep its promise on SmolLM2? Issue 17's empirical check on real rows.

    python benchmarks/risk_check.py --bench runs/benchmark/tofu_smollm2_cpu --out benchmarks/results/risk_smollm2

The candidates are the unlearned entries of a benchmark run directory (each a configuration chosen on the suite's
first rows). Each, and the target, is scored on a pool of retain rows the suite never read (`retain_perturbed`
rows `--start` to `--start + --rows`; cached as benchmark steps under `risk/`), which gives every candidate a
per-row utility loss, max(0, 1 - P_unlearned / P_target) as `unlearn sweep`'s utility budget defines it. Then, for
each budget level and calibration size, over random calibration/test splits of the pool: Learn-then-Test
(`unlearn.risk.certify`, fixed-sequence in the order of the suite rows' risk, which the pool does not contain)
certifies candidates, the pick is the certified one with the best forget quality (as the sweep picks), and
`unlearn.sweeping.empirical_check` counts how often the pick's risk on the pool, and its mean on the test rows,
is above the level. The guarantee bounds the first by about delta.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SUITE = """\
# written by benchmarks/risk_check.py: the calibration pool, retain rows the benchmark suite does not read
name: retain_pool
datasets:
  pool: {{path: "tofu:retain_perturbed", start: {start}, limit: {rows}}}
metrics:
  pool_probability: {{metric: probability, data: pool}}
"""


def score(bench: Path, start: int, rows: int) -> dict[str, Any]:
    """Per candidate: the pool probabilities, the suite rows' retain probabilities and forget quality."""
    from unlearn.benchmarking.steps import Steps
    from unlearn.evaluation import evaluate
    from unlearn.loading import ensure_pad_token, load_model_or_adapter

    suite = bench / "risk" / "suite.yaml"
    suite.parent.mkdir(parents=True, exist_ok=True)
    suite.write_text(SUITE.format(start=start, rows=rows))
    step = json.loads((bench / "target" / "STEP.json").read_text())
    models = {"target": (step["result"]["model"], step["key"])}  # name -> (model or run, the step that made it)
    for d in sorted((bench / "entries").iterdir()):
        if (d / "train" / "STEP.json").is_file() and (d / "eval" / "STEP.json").is_file():
            step = json.loads((d / "train" / "STEP.json").read_text())
            models[d.name] = (step["result"]["run"], step["key"])
    steps = Steps(bench)
    out = {}
    for name, (path, key) in models.items():

        def fn(d: Path, path: str = path) -> dict[str, Any]:
            model, tokenizer = load_model_or_adapter(path)
            ensure_pad_token(tokenizer)
            result = evaluate(model, tokenizer, suite=suite, out=d)
            return {"values": result.metrics["pool_probability"].values}

        started = time.time()
        rec = steps.run(f"risk/{name}", {"model": path, "train": key, "suite": suite.read_text()}, fn, "evaluation")
        print(f"{name}: pool scored ({time.time() - started:.0f} s)", flush=True)
        eval_dir = bench / ("eval/target" if name == "target" else f"entries/{name}/eval")
        log = json.loads((eval_dir / "EVAL.json").read_text())
        by = log["retain_probability"]["value_by_index"]
        out[name] = {
            "pool": np.array(rec["result"]["values"], dtype=float),
            "suite_rows": np.array([by[str(i)]["score"] for i in range(len(by))], dtype=float),
            "forget_quality": float(log["forget_quality"]["agg_value"]),
            "model_utility": float(log["model_utility"]["agg_value"]),
        }
    return out


ORDERS = ("rest", "suite")


def check(
    scored: dict[str, Any],
    levels: list[float],
    sizes: list[int],
    delta: float,
    splits: int,
    correction: str = "fixed_sequence",
    order_by: str = "rest",
) -> dict:
    """Per level and calibration size, the empirical check over `splits` random splits of the pool. Fixed-sequence
    testing orders the candidates by their risk on the rows outside each split's calibration rows (`rest`: as the
    sweep orders by its search rows) or on the benchmark suite's rows (`suite`: rows the entries were trained on)."""
    from unlearn.risk import Budget, certify
    from unlearn.sweeping import BudgetSpec, empirical_check

    target = scored["target"]
    names = [n for n in scored if n != "target"]

    def loss(values: np.ndarray, ref: np.ndarray) -> np.ndarray:  # the sweep's utility loss per row
        return BudgetSpec("utility", "retain_probability", "pool", 1.0, max_drop=1.0).losses(values, ref, ref)

    pool = [loss(scored[n]["pool"], target["pool"]) for n in names]
    suite_risk = [float(loss(scored[n]["suite_rows"], target["suite_rows"]).mean()) for n in names]
    suite_order = [int(i) for i in np.argsort(suite_risk, kind="stable")]
    fq = [scored[n]["forget_quality"] for n in names]
    candidates = [
        {
            "entry": n,
            "pool_risk": float(pool[j].mean()),
            "suite_risk": suite_risk[j],
            "forget_quality": fq[j],
            "model_utility": scored[n]["model_utility"],
        }
        for j, n in enumerate(names)
    ]
    n_pool = len(pool[0])

    def best(cert) -> int | None:  # the certified candidate with the best forget quality, as the sweep picks
        ok = [j for j, c in enumerate(cert.certified) if c]
        return max(ok, key=lambda j: fq[j]) if ok else None

    per_row = [{"utility": rows} for rows in pool]
    runs = []
    for alpha in levels:
        budget = Budget("utility", alpha, "")
        spec = BudgetSpec("utility", "retain_probability", "pool", alpha, max_drop=alpha)

        def run(cal: dict[str, np.ndarray], budget: Budget = budget):
            losses = [{"utility": rows[cal["pool"]]} for rows in pool]
            order = suite_order
            if order_by == "rest":
                rest = np.setdiff1d(np.arange(n_pool), cal["pool"])
                order = [int(i) for i in np.argsort([rows[rest].mean() for rows in pool], kind="stable")]
            return certify(losses, [budget], delta, correction, order=order)

        for n_cal in sizes:
            picks: dict[str, int] = {}

            def counted(cert, picks: dict[str, int] = picks) -> int | None:
                j = best(cert)
                if j is not None:
                    picks[names[j]] = picks.get(names[j], 0) + 1
                return j

            res = empirical_check(
                per_row,
                [spec],
                run,
                counted,
                {"pool": n_pool},
                splits=splits,
                fraction=n_cal / n_pool,
                seed=0,
                delta=delta,
            )
            above = [c["entry"] for c in candidates if c["pool_risk"] > alpha]
            runs.append({"level": alpha, "calibration_rows": n_cal, **res, "picks": picks, "above_level": above})
            rate = "n/a" if res["violation_rate"] is None else f"{res['violation_rate']:.3f}"
            print(
                f"level {alpha:g}, {n_cal} calibration rows: a pick in {res['certified_a_pick']}/{splits}, pool "
                f"violations {res['pool_violations']} ({res['pool_violation_rate']:.3f}), test-row violations "
                f"{res['violations']} (rate {rate}); picks {picks}",
                flush=True,
            )
    return {
        "delta": delta,
        "correction": correction,
        "order_by": order_by,
        "splits": splits,
        "pool_rows": n_pool,
        "candidates": candidates,
        "runs": runs,
    }


def markdown(result: dict, command: str, start: int) -> str:
    how = (
        "Bonferroni over the candidates"
        if result["correction"] == "bonferroni"
        else "fixed-sequence over the candidates in the order of their risk on "
        + (
            "the pool rows outside each split's calibration rows (as the sweep orders by its search rows)"
            if result["order_by"] == "rest"
            else "the suite's rows (rows the entries trained on)"
        )
    )
    lines = [
        "# Risk-controlled pick on SmolLM2 TOFU: the observed violation rate (issue 17)",
        "",
        f"Made with `{command}`.",
        "",
        f"Candidates: the {len(result['candidates'])} unlearned entries of the benchmark run. Pool: "
        f"{result['pool_rows']} rows of `retain_perturbed` from row {start} (the suite read rows 0-{start - 1}, "
        "on which the entries were chosen). Utility loss per row: max(0, 1 - P_unlearned / P_target), capped at 1 "
        f"(the sweep's `max_drop` budget). Learn-then-Test, Hoeffding-Bentkus p-values, {how}, delta "
        f"{result['delta']:g}; the pick is the "
        f"certified candidate with the best forget quality. {result['splits']} random calibration/test splits per "
        "row.",
        "",
        "| candidate | pool risk | suite-row risk | FQ | MU |",
        "|---|---|---|---|---|",
    ]
    for c in sorted(result["candidates"], key=lambda c: c["pool_risk"]):
        lines.append(
            f"| {c['entry']} | {c['pool_risk']:.3f} | {c['suite_risk']:.3f} | {c['forget_quality']:.3g} | "
            f"{c['model_utility']:.3f} |"
        )
    lines += [
        "",
        "| level | calibration rows | splits with a pick | pick's pool risk > level | rate (bound ~delta) | "
        "pick's test mean > level (of picks) | picks |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        rate = "n/a" if r["violation_rate"] is None else f"{r['violation_rate']:.3f}"
        picks = ", ".join(f"{k} x{v}" for k, v in sorted(r["picks"].items(), key=lambda kv: -kv[1])) or "none"
        lines.append(
            f"| {r['level']:g} | {r['calibration_rows']} | {r['certified_a_pick']} | {r['pool_violations']} | "
            f"{r['pool_violation_rate']:.3f} | {r['violations']} ({rate}) | {picks} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", type=Path, default=Path("runs/benchmark/tofu_smollm2_cpu"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/risk_smollm2"))
    ap.add_argument("--start", type=int, default=40, help="first pool row of retain_perturbed")
    ap.add_argument("--rows", type=int, default=360, help="pool rows")
    ap.add_argument("--levels", default="0.05,0.06,0.08,0.1,0.15,0.2", help="utility budget levels (max_drop)")
    ap.add_argument("--calibration", default="50,100,180", help="calibration rows per split")
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--splits", type=int, default=1000)
    ap.add_argument("--correction", default="fixed_sequence", choices=("fixed_sequence", "bonferroni"))
    ap.add_argument("--order-by", default="rest", choices=ORDERS, help="fixed-sequence order (see check)")
    args = ap.parse_args()
    scored = score(args.bench, args.start, args.rows)
    result = check(
        scored,
        [float(x) for x in args.levels.split(",")],
        [int(x) for x in args.calibration.split(",")],
        args.delta,
        args.splits,
        args.correction,
        args.order_by,
    )
    from unlearn.rundir import write_atomic

    command = "python benchmarks/risk_check.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v != ap.get_default(k)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "results.json", json.dumps(result, indent=2))
    write_atomic(args.out / "RESULTS.md", markdown(result, command.strip(), args.start))
    print(f"wrote {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
