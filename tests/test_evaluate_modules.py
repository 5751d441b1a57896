"""The metrics as Hugging Face `evaluate` modules: loaded offline from the installed package, computing what the
toolkit's own evaluation computes (the same functions of `unlearn.evaluation.metric_math`)."""

from __future__ import annotations

import numpy as np
import pytest

import unlearn
from unlearn.evaluation import metric_math

evaluate = pytest.importorskip("evaluate")


def test_forget_quality_module_matches_the_toolkit(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    rng = np.random.default_rng(0)
    model, reference = rng.uniform(0.2, 1.0, 40), rng.uniform(0.5, 1.5, 40)
    fq = evaluate.load(unlearn.evaluate_module("forget_quality"))
    got = fq.compute(predictions=model.tolist(), references=reference.tolist())["forget_quality"]
    assert got == pytest.approx(metric_math.forget_quality(model, reference), rel=1e-12)
    same = fq.compute(predictions=model.tolist(), references=model.tolist())["forget_quality"]
    assert same == pytest.approx(1.0) and 0 < got < 0.05  # different distributions are told apart


def test_truth_ratio_module_matches_the_toolkit(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    para, pert = [0.5, 1.2, 2.0], [[1.0, 1.5], [1.0, 1.4], [0.2, 0.6]]
    tr = evaluate.load(unlearn.evaluate_module("truth_ratio"))
    tr.add_batch(paraphrased_nll=para[:2], perturbed_nll=pert[:2])  # evaluate's streaming API
    tr.add_batch(paraphrased_nll=para[2:], perturbed_nll=pert[2:])
    out = tr.compute()
    ratios = metric_math.truth_ratio(para, pert)
    np.testing.assert_allclose(out["truth_ratio"], ratios, rtol=1e-12)
    assert out["forget"] == pytest.approx(metric_math.truth_ratio_forget(ratios))
    assert out["utility"] == pytest.approx(metric_math.truth_ratio_utility(ratios))
    assert ratios[0] == pytest.approx(np.exp(0.5 - 1.25))


def test_unknown_module_is_named():
    with pytest.raises(unlearn.UnlearnError, match="Unknown evaluate module 'forget_qualty'.*forget_quality"):
        unlearn.evaluate_module("forget_qualty")
