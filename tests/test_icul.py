"""In-context unlearning: a wrapper, no weight changes, and the evaluation and attacks run on it unchanged."""

from __future__ import annotations

import pytest
import torch
from conftest import TOFU_DIR, read_jsonl

import unlearn
from unlearn import UnlearnError
from unlearn.incontext import build_context


def test_context_holds_altered_forget_and_true_retain_examples(tofu_rows):
    forget = read_jsonl("forget01_perturbed", 8)
    ctx = build_context(forget, tofu_rows["retain"], n_forget=2, n_retain=3, label="perturbed")
    assert ctx.count("Question:") == 5
    shown = [r for r in forget if r["question"] in ctx]
    assert len(shown) == 2 and all(r["answer"] not in ctx and r["perturbed_answer"][0] in ctx for r in shown)
    assert sum(r["answer"] in ctx for r in tofu_rows["retain"]) == 3
    refusal = build_context(forget, None, n_forget=2, n_retain=0, label="refusal")
    assert refusal.count("Question:") == 2 and not any(r["answer"] in refusal for r in forget)
    with pytest.raises(UnlearnError, match="`label` must be one of refusal, perturbed, random"):
        build_context(forget, None, label="flip")
    with pytest.raises(UnlearnError, match="needs a retain set"):
        build_context(forget, None, n_retain=2)


def test_wrapper_logits_are_the_model_reading_context_then_row(tiny):
    model, tok = tiny
    wrapped = unlearn.icul(model, tok, read_jsonl("forget01", 4), None, n_forget=2, n_retain=0)
    row = tok("Question: Who?\nAnswer: Someone")["input_ids"]
    ids = torch.tensor([row + [tok.pad_token_id] * 3])
    mask = torch.tensor([[1] * len(row) + [0] * 3])
    bos = row[0] == tok.bos_token_id  # a leading BOS gives way to the context's start
    with torch.no_grad():
        aligned = wrapped(input_ids=ids, attention_mask=mask).logits
        full = model(input_ids=torch.tensor([wrapped.context_ids + row[int(bos) :]])).logits
    n = len(row)
    torch.testing.assert_close(aligned[0, :n], full[0, -n:], rtol=1e-4, atol=1e-4)
    assert aligned[0, n:].abs().sum() == 0  # padding positions stay empty


def test_icul_changes_forget_answers_without_touching_weights(tiny, tofu_rows, tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_TOFU_DIR", str(TOFU_DIR))
    model, tok = tiny
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    forget = read_jsonl("forget01_perturbed", 8)
    wrapped = unlearn.icul(model, tok, forget, tofu_rows["retain"], n_forget=4, n_retain=2)
    path = str(TOFU_DIR / "forget01.jsonl")
    base = unlearn.evaluate(model, tok, suite="qa", path=path, limit=8, max_new_tokens=16)
    icul = unlearn.evaluate(wrapped, tok, suite="qa", path=path, limit=8, max_new_tokens=16)
    assert icul["probability"] != pytest.approx(base["probability"], abs=1e-3)
    assert icul.meta["model_fingerprint"] != base.meta["model_fingerprint"]  # the context is part of the model
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    # Every attack runs on the wrapper unchanged (the original is the wrapped model).
    results = unlearn.attack(
        wrapped, tok, "all", forget=forget, retain=tofu_rows["retain"], out=tmp_path, k=4, steps=2, bits=[4]
    )
    assert [r.name for r in results] == ["relearn", "keyword", "quantize", "probe", "latent"]
    assert all(r.original is not None for r in results)
