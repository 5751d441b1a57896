"""Which targets does a model know, and does `unlearn forget target=...` forget them? (issue 18's measurement)

    python benchmarks/target_survey.py --probe                 # known-fact counts of unlearn.targets.WELL_KNOWN
    python benchmarks/target_survey.py --probe Paris "Star Wars"   # of these
    python benchmarks/target_survey.py --run "Harry Potter" "Albert Einstein" --out runs/targets
    python benchmarks/target_survey.py --run "Harry Potter" --set learning_rate=5e-4 --set retain_ratio=4

`--probe` asks each candidate the template and model-written questions and counts the facts the knowledge check
keeps (no neighbors, no training); `--run` does the whole flow per target (`recipes/target.yaml`: probe, neighbors,
IdkDPO with answer preservation, before/after, relearn + 4-bit attacks) and writes RESULTS.md + results.json with
one row per target: known facts, stated before -> after for the trained, held-out, neighbor and retain facts, the
recovered fractions and the minutes. `--set KEY=VALUE` overrides a setting of the recipe (a row per target and
settings; rows of earlier invocations in the same `--out` are kept), `--label NAME` names the rows instead (a
change of the code rather than of a setting), `--no-attacks` skips the attacks (a settings
search reads the stated fractions first), `--stop` stops training once no trained fact is stated
(`forget_target(stop_when_forgotten=True)`).

    python benchmarks/target_survey.py --stability runs/targets/star-wars-v13 runs/targets/paris-v13

`--stability` reads finished runs: it draws `--samples` answers (temperature `--temperature`) from the base model
to each neighbor fact and counts, for facts stated in at least `unlearn.targets.STABLE_SHARE` of the draws and for
the others, how many the run still stated after unlearning (the measurement behind `check_stable`'s draw rule).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def probe(model, tokenizer, names: list[str]) -> list[dict]:
    from unlearn import targets as T

    rows = []
    for name in names:
        started = time.time()
        found = T.candidates(model, tokenizer, name)
        T.check_knowledge(model, tokenizer, found, [r["key_term"] for r in found if r["key_term"]])
        known = [r for r in found if r["known"]]
        rows.append({"target": name, "probed": len(found), "known": len(known), "seconds": time.time() - started})
        print(f"{name}: {len(known)} of {len(found)} known ({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


def run(
    names: list[str],
    out: Path,
    model_name: str,
    settings: dict[str, Any],
    attacks: bool = True,
    label: str | None = None,
    stop: bool = False,
) -> list[dict]:
    from unlearn.demo import states
    from unlearn.loading import load_model_and_tokenizer
    from unlearn.precheck import read_recipe_values
    from unlearn.recipes import recipe_config
    from unlearn.targets import DEFAULT_ATTACKS, forget_target

    label = label or " ".join([*(f"{k}={v}" for k, v in settings.items()), *(["stop"] if stop else [])]) or "recipe"
    results = out / "results.json"
    rows = json.loads(results.read_text()) if results.exists() else []
    for name in names:
        started = time.time()
        model, tokenizer = load_model_and_tokenizer(model_name)
        slug = name.lower().replace(" ", "-") + ("" if label == "recipe" else "-" + re.sub(r"[^\w.+-]", "", label))
        values = {**read_recipe_values("recipes/target.yaml"), **settings, "output_dir": str(out / slug)}
        values.update(model_name_or_path=model_name, target=name, disable_tqdm=True, overwrite=True)
        chosen = DEFAULT_ATTACKS if attacks else ()
        result = forget_target(
            model, tokenizer, name, config=recipe_config(values), attacks=chosen, stop_when_forgotten=stop
        )
        s = result.sets.summary()
        new = result.sets.new_facts()
        rows = [r for r in rows if (r["target"], r.get("settings", "recipe")) != (name, label)]
        rows.append(
            {
                "target": name,
                "settings": label,
                "known": s["known"],
                "forget": s["forget"],
                "heldout": s["heldout"],
                "neighbors_heldout": s["neighbors_heldout"],
                "neighbors_heldout_in_forget_forms": s["neighbors_heldout_in_forget_forms"],
                "neighbor_entities": s["neighbor_entities"],
                "before": result.before["stated"],
                "after": result.after["stated"],
                "known_before": result.before["known"],
                "known_after": result.after["known"],
                "passages": s["passages"],
                "heldout_in_passages": s["heldout_in_passages"],
                "new_facts": len(new),  # held out, their key stated by no trained row (`TargetSets.new_facts`)
                "new_facts_stated": sum(states(result.after["all_answers"][f["question"]], f["key"]) for f in new),
                "attacks": {a["attack"]: a["recovered_fraction"] for a in result.attacks or []},
                "epochs": result.epochs[-1][0] if result.epochs else values.get("num_train_epochs"),
                "minutes": (time.time() - started) / 60,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        results.write_text(json.dumps(rows, indent=2))
        (out / "RESULTS.md").write_text(table(rows))
    return rows


def table(rows: list[dict]) -> str:
    sets = ("forget", "heldout", "neighbors", "neighbors_trained", "retain")
    checked = ("forget", "heldout", "neighbors")  # `known` (the knowledge check after), where the run measured it
    head = (
        "| target | settings | known | "
        + " | ".join(f"{s} stated" for s in sets)
        + " | "
        + " | ".join(f"{s} known" for s in checked)
        + " | new held-out facts stated | epochs | relearned | 4-bit | min |"
    )
    lines = [
        "# `unlearn forget recipes/target.yaml target=...` on SmolLM2-135M-Instruct",
        "",
        "Made with `python benchmarks/target_survey.py --run ...`. stated: fraction of greedy answers that contain the"
        " fact's key term, before -> after; neighbors are the held-out neighbor facts (never trained on),"
        " neighbors_trained those trained on as retain rows. known: fraction of the facts that still pass the"
        " knowledge check, before -> after (- where the run predates it). new held-out facts: the held-out facts"
        " whose key no trained row states, still stated after. epochs: those trained (fewer where"
        " `--stop` ended training once no trained fact was stated).",
        "",
        head,
        "|" + "---|" * (len(sets) + len(checked) + 8),
    ]
    for r in rows:
        cells = [f"{r['before'].get(s, float('nan')):.2f} -> {r['after'].get(s, float('nan')):.2f}" for s in sets]
        kb, ka = r.get("known_before", {}), r.get("known_after", {})
        cells += [f"{kb[s]:.2f} -> {ka[s]:.2f}" if s in ka else "-" for s in checked]
        cells.append(f"{r['new_facts_stated']} / {r['new_facts']}" if "new_facts" in r else "-")
        a = r["attacks"]
        lines.append(
            f"| {r['target']} | {r.get('settings', 'recipe')} | {r['known']} | "
            + " | ".join(cells)
            + f" | {r.get('epochs') or '-'} | {a.get('relearn', float('nan')):.2f} | "
            f"{a.get('quantize', float('nan')):.2f} | {r['minutes']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def stability(model, tokenizer, runs: list[Path], samples: int, temperature: float) -> dict[str, dict[str, int]]:
    """Per neighbor set (trained, held out) and per side of `STABLE_SHARE`: facts, and those stated after the run."""
    from unlearn.demo import states
    from unlearn.scoring import sampled_answers
    from unlearn.targets import STABLE_SHARE

    facts = []
    for run_dir in runs:
        after = json.loads((run_dir / "target" / "result.json").read_text())["after"]["all_answers"]
        for name in ("neighbors", "neighbors_heldout"):
            for line in (run_dir / "target" / f"{name}.jsonl").read_text().splitlines():
                fact = json.loads(line)
                facts.append((name, fact, states(after[fact["question"]], fact["key"])))
    questions = list(dict.fromkeys(f["question"] for _, f, _ in facts))
    drawn = dict(zip(questions, sampled_answers(model, tokenizer, questions, samples, temperature), strict=True))
    counts: dict[str, dict[str, int]] = {}
    for name, fact, kept in facts:
        share = sum(states(a, fact["key"]) for a in drawn[fact["question"]]) / samples
        side = counts.setdefault(f"{name} {'>=' if share >= STABLE_SHARE else '<'} {STABLE_SHARE}", {"facts": 0})
        side["facts"] += 1
        side["kept"] = side.get("kept", 0) + kept
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--probe", nargs="*", metavar="TARGET", help="Known-fact counts of these targets (default: the well-known ones)"
    )
    parser.add_argument("--run", nargs="*", help="Targets to forget, one whole flow each")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="A recipe setting to override")
    parser.add_argument("--label", help="The rows' settings column (default: the --set values, else 'recipe')")
    parser.add_argument("--no-attacks", action="store_true", help="Skip the relearn and 4-bit attacks")
    parser.add_argument("--stop", action="store_true", help="Stop training once no trained fact is stated")
    parser.add_argument("--stability", nargs="*", metavar="RUN_DIR", help="Neighbors kept, by their share of draws")
    parser.add_argument("--samples", type=int, default=None, help="Draws per fact (default: STABLE_SAMPLES)")
    parser.add_argument("--temperature", type=float, default=None, help="Default: STABLE_TEMPERATURE")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", default="runs/targets")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.probe is not None:
        from unlearn.loading import load_model_and_tokenizer
        from unlearn.targets import WELL_KNOWN

        model, tokenizer = load_model_and_tokenizer(args.model)
        rows = sorted(probe(model, tokenizer, args.probe or list(WELL_KNOWN)), key=lambda r: -r["known"])
        (out / "survey.json").write_text(json.dumps(rows, indent=2))
        for r in rows:
            print(f"| {r['target']} | {r['known']} / {r['probed']} |")
    if args.stability:
        from unlearn.loading import load_model_and_tokenizer
        from unlearn.targets import STABLE_SAMPLES, STABLE_TEMPERATURE

        model, tokenizer = load_model_and_tokenizer(args.model)
        samples, temperature = args.samples or STABLE_SAMPLES, args.temperature or STABLE_TEMPERATURE
        counts = stability(model, tokenizer, [Path(r) for r in args.stability], samples, temperature)
        print(json.dumps({"samples": samples, "temperature": temperature, **counts}, indent=1))
    if args.run:
        from unlearn.precheck import parse_overrides

        settings = parse_overrides(args.set)
        run(args.run, out, args.model, settings, attacks=not args.no_attacks, label=args.label, stop=args.stop)


if __name__ == "__main__":
    main()
