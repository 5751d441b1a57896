"""Each metric against values computed by hand on small fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unlearn.evaluation import metric_math as mm
from unlearn.scoring import row_stats


def test_truth_ratio_and_its_two_aggregates():
    r = mm.truth_ratio([1.0], [[2.0, 3.0]])  # exp(1 - 2.5)
    assert r[0] == pytest.approx(math.exp(-1.5))
    assert mm.truth_ratio_forget(r) == pytest.approx(math.exp(-1.5))  # min(R, 1/R)
    assert mm.truth_ratio_utility(r) == pytest.approx(1 - math.exp(-1.5))  # max(0, 1 - R)
    assert mm.truth_ratio_forget([4.0]) == pytest.approx(0.25)
    assert mm.truth_ratio_utility([4.0]) == 0.0


def test_forget_quality_is_the_exact_ks_p_value():
    # fully separated samples of 3 and 3: p = 2 / C(6, 3) = 0.1
    assert mm.forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
    assert mm.forget_quality([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    # invariant under R -> 1/R applied to both samples
    a, b = [0.2, 0.5, 0.9, 1.3], [0.8, 1.1, 1.7, 2.5]
    assert mm.forget_quality(a, b) == pytest.approx(mm.forget_quality(1 / np.array(a), 1 / np.array(b)))


def test_harmonic_mean():
    assert mm.harmonic_mean([0.5, 1.0]) == pytest.approx(2 / 3)
    assert mm.harmonic_mean([0.2, 0.4, 0.8]) == pytest.approx(3 / (5 + 2.5 + 1.25))
    assert mm.harmonic_mean([0.5, 0.0, 1.0]) == 0.0
    with pytest.raises(ValueError):
        mm.harmonic_mean([-1.0, 1.0])


def test_probabilities():
    assert mm.probability([math.log(2)])[0] == pytest.approx(0.5)
    assert mm.normalized_probability([0.0], [[math.log(2), math.log(2)]])[0] == pytest.approx(0.5)


def test_rouge_l():
    assert mm.rouge_l_recall("the cat sat", "The cat on the mat") == pytest.approx(2 / 5)
    assert mm.rouge_l_f1("the cat sat", "The cat on the mat") == pytest.approx(2 * (2 / 3) * 0.4 / (2 / 3 + 0.4))
    assert mm.rouge_l_recall("anything", "") == 0.0
    assert mm.rouge_l_recall("Paris, France.", "paris") == 1.0
    # Porter stemming, as TOFU: "wrote a novel" vs "writes novels" shares "novel" (stemmed) but not the verb forms
    assert mm.rouge_l_recall("the author writes novels", "the author wrote a novel") == pytest.approx(3 / 5)


def test_ngram_entropy():
    h2 = -(0.6 * math.log2(0.6) + 0.4 * math.log2(0.4))  # bigrams ab x3, ba x2
    h3 = 1.0  # trigrams aba x2, bab x2
    assert mm.ngram_entropy("a b a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    assert mm.ngram_entropy("go go go go go") == 0.0


def test_memorization():
    assert mm.exact_memorization([True, False, True, True]) == 0.75
    assert mm.extraction_strength([False, True, True]) == pytest.approx(2 / 3)
    assert mm.extraction_strength([True, True, False]) == 0.0
    assert mm.extraction_strength([True, True, True]) == 1.0


def test_membership_scores_auc_and_privleak():
    assert mm.min_k([-1, -2, -3, -4, -5], k=0.4) == pytest.approx(-4.5)
    assert mm.mia_zlib(2.0, 10, "abc") == pytest.approx(-20 / len(__import__("zlib").compress(b"abc")))
    assert mm.auc([3, 4], [1, 2]) == 1.0
    assert mm.auc([1], [1]) == 0.5
    assert mm.auc([1, 4], [2, 3]) == 0.5
    assert mm.privleak(0.6, 0.5) == pytest.approx(20.0)


class _FixedLogits(torch.nn.Module):
    """A stand-in causal LM whose next-token distribution is always p = (0.5, 0.25, 0.25)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        logits = torch.log(torch.tensor([0.5, 0.25, 0.25])).expand(*input_ids.shape, 3)
        return type("Out", (), {"logits": logits})()


def test_min_k_plus_plus_on_known_logits():
    # mu = E[log p] = -1.0397, sigma = 0.3466: token 0 has z = +1, tokens 1 and 2 have z = -1.
    example = {"input_ids": [0, 0, 1], "labels": [-100, 0, 1], "index": 0}
    (stats,) = row_stats(_FixedLogits(), [example], pad_token_id=2)
    assert stats.n_tokens == 2
    np.testing.assert_allclose(stats.mu, [-1.0397208] * 2, rtol=1e-5)
    np.testing.assert_allclose(stats.sigma, [0.3465736] * 2, rtol=1e-5)
    z = (stats.token_logps - stats.mu) / stats.sigma
    np.testing.assert_allclose(z, [1.0, -1.0], atol=1e-5)
    assert mm.min_k_plus_plus(stats.token_logps, stats.mu, stats.sigma, k=0.5) == pytest.approx(-1.0, abs=1e-5)
    assert stats.argmax_match.tolist() == [True, False]
    assert stats.nll == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2)
