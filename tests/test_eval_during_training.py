"""Evaluation during training on the tiny model: the suite every `eval_steps`, the best checkpoint kept by the
Trainer's own machinery, and early stopping once the forget target is met with utility above its floor."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import TOFU_DIR
from transformers import AutoModelForCausalLM, AutoTokenizer

import unlearn
from unlearn import UnlearnError
from unlearn.loading import load_model_or_adapter

SUITE = """\
    name: tiny_tofu
    params: {limit: 8}
    datasets:
      forget: {path: "tofu:forget01_perturbed", paraphrased_key: paraphrased_answer, perturbed_key: perturbed_answer}
      retain: {path: "tofu:retain_perturbed", paraphrased_key: paraphrased_answer, perturbed_key: perturbed_answer}
    metrics:
      forget_probability: {metric: probability, data: forget, role: forget}
      forget_truth_ratio: {metric: truth_ratio, data: forget, role: forget, aggregate: forget}
      forget_quality: {metric: forget_quality, data: forget, role: forget, truth_ratio: forget_truth_ratio}
      retain_probability: {metric: probability, data: retain}
      model_utility: {metric: model_utility, components: [retain_probability]}
"""


@pytest.fixture
def suite_and_reference(tiny_init_dir, tmp_path, monkeypatch):
    """A forget/retain suite, and its evaluation of the base that never saw the forget set (the reference)."""
    monkeypatch.setenv("UNLEARN_TOFU_DIR", str(TOFU_DIR))
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    base, tok = AutoModelForCausalLM.from_pretrained(tiny_init_dir), AutoTokenizer.from_pretrained(tiny_init_dir)
    unlearn.evaluate(base, tok, suite=suite, out=tmp_path / "ref", skip=["forget_quality"])
    return str(suite), str(tmp_path / "ref")


def forget_evaluated(tiny, tofu_rows, suite_and_reference, out, **settings):
    """GradDiff on the tiny target with the suite evaluated every 2 steps against the reference."""
    model, tok = tiny
    suite, ref = suite_and_reference
    common = {"recipe": "graddiff", "learning_rate": 5e-3, "eval_strategy": "steps", "eval_steps": 2}
    unlearn.forget(
        model,
        tok,
        tofu_rows["forget"],
        tofu_rows["retain"],
        output_dir=out,
        eval_suite=suite,
        eval_reference=ref,
        disable_tqdm=True,
        **common,
        **settings,
    )


def test_best_checkpoint_and_early_stop_at_the_forget_target(tiny, tofu_rows, suite_and_reference, tmp_path):
    suite, ref = suite_and_reference
    out = tmp_path / "run"
    forget_evaluated(
        tiny,
        tofu_rows,
        suite_and_reference,
        out,
        num_train_epochs=10,
        save_strategy="steps",
        save_steps=2,
        metric_for_best_model="forget_quality_at_floor",
        load_best_model_at_end=True,
        eval_utility_floor=0.6,
        stop_at_forget_quality=0.01,
    )
    # (with 8 forget rows, the KS p-value takes few values: 0.0025, 0.019, ...; the target here is the second)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    evals = [row for row in log if "eval_forget_quality" in row]
    assert [row["step"] for row in evals] == list(range(2, 2 * len(evals) + 1, 2))
    run = json.loads((out / "run.json").read_text())
    assert run["global_step"] < 20  # 10 epochs of 2 steps: stopped early
    last = evals[-1]
    assert last["eval_forget_quality"] >= 0.01 and last["eval_utility_ratio"] >= 0.6
    assert all(row["eval_forget_quality"] < 0.01 or row["eval_utility_ratio"] < 0.6 for row in evals[:-1])
    start = json.loads((out / "eval_start.json").read_text())["model_utility"]
    assert last["eval_model_utility"] == pytest.approx(start * last["eval_utility_ratio"])
    best = run["evaluation"]
    assert best["evaluations"] == len(evals)
    best_row = next(row for row in evals if row["step"] == best["best_global_step"])
    assert best["best_metric"] == max(row["eval_forget_quality_at_floor"] for row in evals)
    # the saved adapter is the best checkpoint's
    saved, tok2 = load_model_or_adapter(str(out))
    again = unlearn.evaluate(saved, tok2, suite=suite, reference=ref)
    assert again["forget_quality"] == pytest.approx(best_row["eval_forget_quality"], rel=1e-4)


def test_evaluation_during_training_is_checked_up_front(tiny, tofu_rows, suite_and_reference, tmp_path):
    model, tok = tiny
    suite, ref = suite_and_reference
    common = {"recipe": "ga", "disable_tqdm": True}
    with pytest.raises(UnlearnError, match="`eval_strategy: steps` evaluates during training.*eval_suite"):
        unlearn.forget(model, tok, tofu_rows["forget"], eval_strategy="steps", **common)
    with pytest.raises(UnlearnError, match="`stop_at_forget_quality` acts on evaluations during training"):
        unlearn.forget(model, tok, tofu_rows["forget"], eval_suite=suite, stop_at_forget_quality=0.05, **common)
    with pytest.raises(UnlearnError, match="reads `forget_quality`.*needs `eval_reference`"):
        unlearn.forget(
            model,
            tok,
            tofu_rows["forget"],
            eval_suite=suite,
            eval_strategy="steps",
            stop_at_forget_quality=0.05,
            **common,
        )
    with pytest.raises(UnlearnError, match="`metric_for_best_model` 'forget_qualty' is not a metric"):
        unlearn.forget(
            model,
            tok,
            tofu_rows["forget"],
            eval_suite=suite,
            eval_reference=ref,
            eval_strategy="steps",
            metric_for_best_model="forget_qualty",
            **common,
        )


def test_tensorboard_logs_the_unlearning_metrics_under_their_names(tiny, tofu_rows, suite_and_reference, tmp_path):
    """`report_to: tensorboard` (offline): the forget/retain losses and the evaluations during training land in the
    event files inside the run directory, under the names of train_log.jsonl, with the same values."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    forget_evaluated(tiny, tofu_rows, suite_and_reference, out, num_train_epochs=2, report_to=["tensorboard"])
    (tb,) = (out / "runs").iterdir()  # the Trainer's default: output_dir/runs/<date>_<host> (TENSORBOARD_LOGGING_DIR)
    events = EventAccumulator(str(tb)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/forget_loss", "train/retain_loss", "eval/forget_quality", "eval/model_utility"} <= tags, tags
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    for tag, key in [("train/forget_loss", "forget_loss"), ("eval/forget_quality", "eval_forget_quality")]:
        logged = {row["step"]: row[key] for row in log if key in row}
        written = {e.step: e.value for e in events.Scalars(tag)}
        assert written.keys() == logged.keys() and len(written) >= 2, tag
        assert all(written[s] == pytest.approx(logged[s], rel=1e-5) for s in logged), tag
