"""Are TOFU facts still stated? Issue 16's greedy-answer count on a TOFU benchmark run, from its stored answers.

    python benchmarks/tofu_stated.py runs/benchmark/tofu_smollm2_cpu

The demo's and `unlearn forget target=...`'s measure, applied to TOFU rows: a row's fact is the key term its true
answer adds to the question (`unlearn.targets.key_term`: a name or year, "Basil Mahfouz Al-Kuwaiti", "1956"), and a
greedy answer states it when one of the term's words stands in it (`unlearn.demo.states`). Only rows whose true
answer has a key term and whose target-model answer states it count (the facts the target knows). The answers are
those the suite's `forget_rouge` and `retain_rouge` generated (EVAL.json): nothing is run again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _answers(eval_dir: Path, metric: str) -> list[dict]:
    by = json.loads((eval_dir / "EVAL.json").read_text())[metric]["value_by_index"]
    return [by[str(i)] for i in range(len(by))]


def known_keys(target_dir: Path, metric: str) -> dict[int, list[str]]:
    """Row index -> the key words of the facts the target model states."""
    from unlearn.demo import states
    from unlearn.targets import key_term, key_words

    out = {}
    for i, r in enumerate(_answers(target_dir, metric)):
        key = key_term(r["ground_truth"], r["input"], "")
        words = key_words(key, r["input"]) if key else []
        if words and states(r["generation"], words):
            out[i] = words
    return out


def stated(bench: Path) -> list[dict]:
    from unlearn.demo import states

    target = bench / "eval" / "target"
    keys = {m: known_keys(target, m) for m in ("forget_rouge", "retain_rouge")}
    dirs = {"target": target, "retain": bench / "eval" / "retain"}
    dirs |= {d.name: d / "eval" for d in sorted((bench / "entries").iterdir()) if (d / "eval" / "EVAL.json").is_file()}
    rows = []
    for name, d in dirs.items():
        row = {"entry": name}
        for m, ks in keys.items():
            answers = _answers(d, m)
            row[m.split("_")[0]] = sum(states(answers[i]["generation"], w) for i, w in ks.items()) / len(ks)
            row[m.split("_")[0] + "_facts"] = len(ks)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path)
    args = ap.parse_args()
    rows = stated(args.bench)
    print(
        f"| entry | forget facts stated (of {rows[0]['forget_facts']}) | "
        f"retain facts stated (of {rows[0]['retain_facts']}) |"
    )
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['entry']} | {r['forget']:.2f} | {r['retain']:.2f} |")


if __name__ == "__main__":
    main()
