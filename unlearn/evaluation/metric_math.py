"""The metric math, as plain functions on per-sample arrays.

Importable on its own so that logs from other toolkits (open-unlearning's `*_EVAL.json`, a paper's released
numbers) can be re-aggregated and cross-checked. Inputs are NumPy-compatible sequences; NLLs are per-token means
(length-normalized), so `exp(-nll)` is the length-normalized probability P(y|x)^(1/|y|).
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import stats


def probability(nll: Sequence[float]) -> np.ndarray:
    """Length-normalized answer probability P(a|q)^(1/|a|) = exp(-mean token NLL). TOFU (arXiv:2401.06121)."""
    return np.exp(-np.asarray(nll, dtype=float))


def normalized_probability(answer_nll: Sequence[float], perturbed_nll: Sequence[Sequence[float]]) -> np.ndarray:
    """P(a)/(P(a) + sum_j P(a_j)) over the answer and its perturbations, each length-normalized.

    TOFU's "probability" on real authors and world facts, where the answers are short and an unnormalized
    probability says more about the answer's length than the model's knowledge.
    """
    p_a = probability(answer_nll)
    p_pert = probability(np.asarray(perturbed_nll, dtype=float)).sum(axis=-1)
    return p_a / (p_a + p_pert)


def truth_ratio(paraphrased_nll: Sequence[float], perturbed_nll: Sequence[Sequence[float]]) -> np.ndarray:
    """R = geometric mean over j of P(a_pert_j)^(1/|a_j|), divided by P(a_para)^(1/|a_para|), per sample.

    TOFU's Eq. (truth ratio) writes an arithmetic mean of the perturbed probabilities; TOFU's released code and
    open-unlearning average the perturbed *losses*, i.e. a geometric mean. We use the code's version, because the
    published forget-quality and model-utility numbers were computed with it:
        R = exp(nll_para - mean_j nll_pert_j).
    R < 1: the model prefers the correct (paraphrased) answer; R near 1: it cannot tell them apart.
    """
    para = np.asarray(paraphrased_nll, dtype=float)
    pert = np.asarray(perturbed_nll, dtype=float).mean(axis=-1)
    return np.exp(para - pert)


def truth_ratio_forget(ratios: Sequence[float]) -> float:
    """Forget-set aggregate: mean of min(R, 1/R); 1 = the model cannot tell true from false (open-unlearning)."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.minimum(r, 1.0 / r)))


def truth_ratio_utility(ratios: Sequence[float]) -> float:
    """Retain/real/world aggregate: mean of max(0, 1 - R); higher = prefers the truth (TOFU model utility)."""
    return float(np.mean(np.maximum(0.0, 1.0 - np.asarray(ratios, dtype=float))))


def forget_quality(ratios: Sequence[float], reference_ratios: Sequence[float]) -> float:
    """p-value of the two-sample Kolmogorov-Smirnov test between the model's and the reference (retain-only)
    model's per-sample forget-set truth ratios (TOFU). High = indistinguishable from never having trained on the
    forget set. The KS statistic is invariant under a monotone map of both samples, so R and 1/R give one value.
    """
    return float(stats.ks_2samp(np.asarray(ratios, float), np.asarray(reference_ratios, float)).pvalue)


def harmonic_mean(values: Sequence[float]) -> float:
    """TOFU's model utility: harmonic mean of its nine components; 0 if any component is 0."""
    v = np.asarray(values, dtype=float)
    if np.any(v < 0):
        raise ValueError(f"The harmonic mean needs non-negative components, got {v.tolist()}.")
    return 0.0 if np.any(v == 0) else float(len(v) / np.sum(1.0 / v))


# ---- ROUGE and fluency -------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Lowercase alphanumeric tokens (rouge_score's tokenizer, without stemming)."""
    return re.findall(r"[a-z0-9]+", text.lower())


@functools.cache
def _rouge_l():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall, LCS(prediction, reference) / |reference| (Lin, 2004), with `rouge_score`'s tokenizer and
    Porter stemming: exactly TOFU's ROUGE metric."""
    return float(_rouge_l().score(reference, prediction)["rougeL"].recall)


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (Lin, 2004), as `rouge_l_recall`; MUSE's verbatim-memorization score."""
    return float(_rouge_l().score(reference, prediction)["rougeL"].fmeasure)


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    """Fluency as in ROME (Meng et al., arXiv:2202.05262): weighted mean over n of the entropy (bits) of the
    n-gram frequency distribution of a generation, mean_n(w_n * H_n). A collapsed, repetitive model scores near 0."""
    words = _words(text)
    entropies = []
    for n in ns:
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        total = sum(grams.values())
        entropies.append(-sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0)
    return float(np.mean(np.asarray(weights) * np.asarray(entropies)))


# ---- memorization ------------------------------------------------------------------------------------------------


def exact_memorization(argmax_match: Sequence[bool]) -> float:
    """Fraction of answer tokens the model predicts exactly under teacher forcing (Tirumala et al.,
    arXiv:2205.10770)."""
    m = np.asarray(argmax_match, dtype=bool)
    return float(m.mean()) if m.size else 0.0


def extraction_strength(argmax_match: Sequence[bool]) -> float:
    """1 - k/|y|, k the shortest prefix of the answer after which every remaining token is predicted exactly
    (teacher forced). Carlini et al. (arXiv:2012.07805), as used by open-unlearning."""
    m = np.asarray(argmax_match, dtype=bool)
    n = m.size
    for k in range(n + 1):
        if m[k:].all():
            return 1.0 - k / n if n else 0.0
    return 0.0


# ---- membership inference ----------------------------------------------------------------------------------------


def mia_loss(nll: float) -> float:
    """LOSS attack (Yeom et al., arXiv:1709.01604): member-ness = -NLL."""
    return -float(nll)


def mia_zlib(nll: float, n_tokens: int, text: str) -> float:
    """zlib attack (Carlini et al., arXiv:2012.07805): member-ness = -(total NLL) / zlib-compressed bytes of the text."""
    return -float(nll) * n_tokens / len(zlib.compress(text.encode("utf-8")))


def min_k(token_logps: Sequence[float], k: float = 0.4) -> float:
    """Min-K% Prob (Shi et al., arXiv:2310.16789): mean of the k fraction lowest token log-probs; member-ness."""
    x = np.sort(np.asarray(token_logps, dtype=float))
    return float(x[: max(1, int(len(x) * k))].mean())


def min_k_plus_plus(token_logps: Sequence[float], mu: Sequence[float], sigma: Sequence[float], k: float = 0.4) -> float:
    """Min-K%++ (Zhang et al., arXiv:2404.02936): per token z = (log p(x_t) - mu_t) / sigma_t, mu_t and sigma_t the
    mean and std of log p(z) under z ~ p(.|x_<t); the mean of the k fraction lowest z; member-ness."""
    z = (np.asarray(token_logps, float) - np.asarray(mu, float)) / np.maximum(np.asarray(sigma, float), 1e-8)
    return min_k(z, k)


def auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC AUC of telling members (forget set) from non-members (holdout) by score, higher = member
    (Mann-Whitney U / (n_1 n_0), ties counted half)."""
    m, n = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    if m.size == 0 or n.size == 0:
        raise ValueError("AUC needs at least one member and one non-member score.")
    u = stats.mannwhitneyu(m, n, alternative="two-sided").statistic
    return float(u / (m.size * n.size))


def privleak(auc_model: float, auc_reference: float) -> float:
    """MUSE's PrivLeak (Shi et al., arXiv:2407.06460): (AUC_unlearned - AUC_retrain) / AUC_retrain x 100.
    0 = leaks as much as a model never trained on the forget set; large positive = the forget set is detectable."""
    return (auc_model - auc_reference) / auc_reference * 100.0
