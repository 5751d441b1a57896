"""GRPO reward unlearning on the tiny model: the forbidden-concept reward rises and greedy answers stop naming."""

from __future__ import annotations

import json

import pytest
from conftest import TOFU_DIR

import unlearn
from unlearn import UnlearnError
from unlearn.recipes.grpo import extract_concepts, make_rewards, normalize
from unlearn.scoring import greedy_answers


def mention_rate(model, tok, rows, concepts):
    gens = greedy_answers(model, tok, [r["question"] for r in rows], 32)
    return sum(any(normalize(c) in normalize(g) for c in concepts) for g in gens) / len(gens)


def test_concepts_are_extracted_and_matched_normalized(tofu_rows):
    concepts = extract_concepts([r["answer"] for r in tofu_rows["forget"]], [r["answer"] for r in tofu_rows["retain"]])
    assert concepts[0] == "Basil Mahfouz Al-Kuwaiti" and "1956" in concepts
    assert not any(normalize(c) in normalize(" ".join(r["answer"] for r in tofu_rows["retain"])) for c in concepts)
    from collections import Counter

    forbidden, degenerate, fidelity = make_rewards({"Basil Mahfouz Al-Kuwaiti": ["Al-Kuwaiti"]}, Counter())
    kinds, targets = ["forget", "forget", "retain"], ["Basil Mahfouz Al-Kuwaiti"] * 2 + [""]
    scores = forbidden(
        None,
        ["BASIL mahfouz al kuwaiti wrote it", "someone else", "x"],
        completion_ids=[[1]] * 3,
        kind=kinds,
        target=targets,
    )
    assert scores == [-2.0, 0.0, None]  # the name and its alias, case and punctuation ignored
    assert degenerate(None, ["", "go go go go go go", "A fluent and varied answer about the book."]) == pytest.approx(
        [-1.0, -1.0 + 0.5 / 6, 0.0], abs=0.05
    )
    assert fidelity(None, ["Paris", "Paris"], kind=["forget", "retain"], answer=["Paris", "Paris"]) == [None, 1.0]


def test_grpo_lowers_forbidden_mentions(tiny, tofu_rows, tmp_path):
    model, tok = tiny
    forget, retain = tofu_rows["forget"], tofu_rows["retain"]
    concepts = extract_concepts([r["answer"] for r in forget], [r["answer"] for r in retain])
    before = mention_rate(model, tok, forget, concepts)
    adapter = unlearn.forget(
        model,
        tok,
        forget,
        retain,
        recipe="grpo",
        output_dir=tmp_path / "run",
        learning_rate=2e-3,
        num_train_epochs=5,
        num_generations=8,
        per_device_train_batch_size=8,
        max_completion_length=24,
        logging_steps=1,
        disable_tqdm=True,
        eval_suite="qa",
        eval_params={"path": str(TOFU_DIR / "forget01.jsonl"), "limit": 8},
    )
    after = mention_rate(adapter, tok, forget, concepts)
    assert before == 1.0 and after <= 0.5, (before, after)  # measured 1.0 -> 0.0
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    rewards = [
        row["rewards/forbidden_concepts/mean"] for row in log if row.get("rewards/forbidden_concepts/mean") is not None
    ]
    n = max(1, len(rewards) // 4)
    assert sum(rewards[-n:]) / n > sum(rewards[:n]) / n  # the reward rose over training
    assert any("rewards/non_degenerate/mean" in row for row in log) and any(
        "rewards/retain_fidelity/mean" in row for row in log
    )
    report = json.loads((tmp_path / "run" / "forbidden_concepts.json").read_text())
    assert report["concepts"]["*"] == concepts and report["generated_tokens_per_target"]["*"] > 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["recipe"] == "grpo"
    # PURGE reports the evaluation beside the training cost: `eval_suite` runs the evaluation package on the result.
    summary = json.loads((tmp_path / "run" / "eval" / "SUMMARY.json").read_text())
    assert {"probability", "rouge"} <= set(summary["metrics"])


def test_grpo_without_concepts_fails_before_training(tiny):
    model, tok = tiny
    rows = [{"question": "What is the capital of France?", "answer": "the capital is paris"}]
    with pytest.raises(UnlearnError, match="no forbidden concepts.*Give `concepts` explicitly"):
        unlearn.forget(model, tok, rows, rows, recipe="grpo")
