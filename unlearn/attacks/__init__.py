"""Attacks that try to bring forgotten knowledge back: relearn, keyword, quantize, probe, latent.

    result = unlearn.attack(model, tokenizer, "relearn", forget=..., out="runs/attacks")
    results = unlearn.attack(model, tokenizer, "all", forget=..., retain=..., out="runs/attacks")

`model` is the unlearned model: an adapter (`PeftModel`), whose base is the original, or any model with the
original passed as `original=`. Every attack reports the forget metrics before (the unlearned model) and after,
per sample, and the fraction of the forgotten probability that came back; `all` writes one robustness table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import UnlearnError, unknown_name
from .common import AttackResult, Models, forget_metrics, qa_rows
from .keyword import keyword
from .latent import latent
from .probe import probe
from .quantize import quantize
from .relearn import relearn

ATTACKS = {"relearn": relearn, "keyword": keyword, "quantize": quantize, "probe": probe, "latent": latent}


def attack(
    model,
    tokenizer,
    name: str,
    forget=None,
    retain=None,
    original=None,
    out: str | os.PathLike | None = None,
    limit: int | None = None,
    **options: Any,
) -> AttackResult | list[AttackResult]:
    """Run attack `name` (or `all`) against the unlearned `model` on the `forget` QA set."""
    names = list(ATTACKS) if name == "all" else [name]
    for n in names:
        if n not in ATTACKS:
            raise UnlearnError(unknown_name("attack", n, [*ATTACKS, "all"]))
    rows = qa_rows(forget, "forget", limit)
    models = Models(model, original)
    generate = bool(options.get("generate", True))  # False: probability only (relearn, quantize), no generations
    before = forget_metrics(model, tokenizer, rows, generate=generate)
    orig = models.original_scores(tokenizer, rows, generate=generate)
    results = []
    progress = tqdm(names, desc="attacks", unit="attack", disable=len(names) == 1)
    for n in progress:
        progress.set_postfix_str(n)
        results.append(ATTACKS[n](models, tokenizer, rows, retain, before, orig, **options))
    if out is not None:
        write_report(results, Path(out))
    return results if name == "all" else results[0]


def write_report(results: list[AttackResult], out: Path) -> None:
    from ..evaluation.report import _plt

    out.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    (out / "ATTACKS.json").write_text(
        json.dumps({"table": rows, "attacks": [r.to_log() for r in results]}, indent=2, default=float)
    )

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        "# Robustness of the unlearning",
        "",
        "Forget-set answer probability (length-normalized) of the original model, the unlearned model, and the "
        "unlearned model under attack; recovered = (attacked - unlearned) / (original - unlearned).",
        "",
        "| attack | original | unlearned | attacked | recovered | ROUGE-L attacked | detail |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['attack']} | {fmt(r['original_probability'])} | {fmt(r['unlearned_probability'])} | "
            f"{fmt(r['attacked_probability'])} | {fmt(r['recovered_fraction'])} | {fmt(r['attacked_rouge'])} "
            f"| {r['summary']} |"
        )
    plt = _plt()
    for r in results:
        d = r.details
        if r.name == "relearn":
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(d["steps"], d["curve"], "o-", label="unlearned model")
            ax.plot(d["steps"], d["baseline_curve"], "s--", label=d["baseline"])
            ax.set_xlabel("relearning steps")
            ax.set_ylabel("forget probability (held-out questions)")
            ax.legend()
            fig.tight_layout()
            fig.savefig(out / "relearn_curve.png", dpi=100)
            plt.close(fig)
            lines += ["", "![relearning recovery curve](relearn_curve.png)"]
        if r.name == "latent":
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(d["probe_accuracy_after"], "o-", label="probe, unlearned")
            if d["probe_accuracy_before"]:
                ax.plot(d["probe_accuracy_before"], "s--", label="probe, original")
            ax.plot(d["logit_lens_after"], "^:", label="logit lens P(answer), unlearned")
            ax.set_xlabel("layer (0 = embeddings)")
            ax.set_ylim(0, 1.05)
            ax.legend()
            fig.tight_layout()
            fig.savefig(out / "latent_layers.png", dpi=100)
            plt.close(fig)
            lines += ["", "![per-layer latent reads](latent_layers.png)"]
    (out / "ATTACKS.md").write_text("\n".join(lines) + "\n")


__all__ = ["ATTACKS", "AttackResult", "attack", "write_report"]
