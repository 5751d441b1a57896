"""In-context knowledge unlearning: the adapter forgets the target named in the prompt, and only that one."""

from __future__ import annotations

import pytest
from conftest import read_jsonl

import unlearn
from unlearn import UnlearnError
from unlearn.recipes.ickul import build_pairs, ickul_prompt, ickul_report, row_targets


def test_targets_and_pairs_are_built_from_the_answers():
    forget, retain = read_jsonl("forget01", 40), read_jsonl("retain99", 40)
    assert set(row_targets(forget, None)) >= {"Basil Mahfouz Al-Kuwaiti", "Nikolai Abilov"}
    pairs, names = build_pairs(forget, retain, "I forgot.", None, 0)
    assert names == ["Basil Mahfouz Al-Kuwaiti", "Nikolai Abilov"]
    forgot = [p for p in pairs if p["answer"] == "I forgot."]
    assert len(forgot) == 40 and all(p["question"].startswith("<unlearn>") for p in forgot)
    assert any(p["question"] == retain[0]["question"] for p in pairs)  # no request: answer normally
    with pytest.raises(UnlearnError, match="No forget row names a target"):
        build_pairs([{"question": "q?", "answer": "nothing named here."}], retain, "I forgot.", None, 0)
    assert ickul_prompt("Who?", ["A B", "C D"]) == "<unlearn>A B; C D</unlearn> Who?"


def test_ickul_forgets_the_named_target_and_keeps_the_rest(tiny, tofu_rows, tmp_path):
    model, tok = tiny
    retain, heldout = tofu_rows["retain"][:12], tofu_rows["retain"][12:]
    before = ickul_report(model, tok, tofu_rows["forget"], retain, heldout)
    # The 2-layer model's output head must learn the new "I forgot." tokens: LoRA on every linear layer including
    # lm_head (with all-linear, which leaves lm_head out, the forgot pairs stay at NLL 1.7 while the rest fit).
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
    adapter = unlearn.forget(
        model,
        tok,
        tofu_rows["forget"],
        retain,
        recipe="ickul",
        output_dir=tmp_path / "run",
        learning_rate=1e-2,
        num_train_epochs=20,
        lora_target_modules=modules,
        lora_r=16,
        lora_alpha=32,
        disable_tqdm=True,
    )
    after = ickul_report(adapter, tok, tofu_rows["forget"], retain, heldout)
    assert before["forget_accuracy"] == 0.0
    assert after["forget_accuracy"] >= 0.75, after  # measured 1.0
    assert after["retain_accuracy"] >= 0.75, after  # measured 1.0
    # Held-out questions (known to the model, never paired with a request) measured 0.25: the tiny model barely
    # generalizes "answer normally despite the request"; reported, not asserted.
    assert 0.0 <= after["heldout_accuracy"] <= 1.0
    # Without a request the knowledge is all there: the latent attack sees a model that pretends to forget.
    forget_p = [
        {**r, "question": ickul_prompt(r["question"], after["targets"][0])} for r in read_jsonl("forget01_perturbed", 8)
    ]
    result = unlearn.attack(adapter, tok, "latent", forget=forget_p)
    assert result.before["probability"].agg_value < result.original["probability"].agg_value
    assert "probe_accuracy_after" in result.details
