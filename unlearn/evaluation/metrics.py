"""Metrics: per-sample function + aggregation + direction, registered once by name (the lm-eval-harness pattern).

A metric reads the scores of its dataset (computed once per dataset and shared by every metric on it), and, for
the aggregate metrics, the results of other metrics and the reference log. `higher_is_better` is the direction
of the raw value; on a forget set (`role: forget`) the report reads it the other way for knowledge metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UnlearnError
from . import metric_math as mm

REFERENCE_HINT = (
    "Make the reference with `unlearn reference --model BASE --retain <retain data> --suite SUITE --out refs/NAME` "
    "(it trains the retain-only model and evaluates it), then pass `--reference refs/NAME`; or leave this metric out "
    "with `--skip {name}`."
)


@dataclass
class MetricResult:
    agg_value: float
    higher_is_better: bool
    values: list[float] | None = None  # per sample, in dataset order
    extra: dict[str, Any] = field(default_factory=dict)

    def to_log(self) -> dict[str, Any]:
        out: dict[str, Any] = {"agg_value": self.agg_value, "higher_is_better": self.higher_is_better}
        if self.values is not None:
            out["value_by_index"] = {str(i): {"score": v} for i, v in enumerate(self.values)}
        out.update(self.extra)
        return out


@dataclass
class Metric:
    fn: Callable[..., MetricResult]
    higher_is_better: bool
    needs: frozenset[str] = frozenset()  # scores its dataset must have: answer, paraphrased, perturbed, generation
    needs_reference: bool = False
    doc: str = ""
    # Spec keys that name other metric entries this one reads, with their default (a name, or [] for a list).
    reads: dict[str, Any] = field(default_factory=dict)
    # How much the model knows the answers: on a forget set, lower is better (the report's arrows).
    knowledge: bool = False


METRICS: dict[str, Metric] = {}


def register(
    name: str,
    higher_is_better: bool,
    needs: tuple[str, ...] = (),
    needs_reference: bool = False,
    reads: dict[str, Any] | None = None,
    knowledge: bool = False,
):
    if name in METRICS:
        raise UnlearnError(
            f"A metric named `{name}` is already registered ({METRICS[name].fn.__module__}); "
            "choose another name, or delete `METRICS[name]` first to replace it on purpose."
        )

    def wrap(fn):
        doc = (fn.__doc__ or "").strip()
        METRICS[name] = Metric(
            fn, higher_is_better, frozenset(needs), needs_reference, doc, dict(reads or {}), knowledge
        )
        return fn

    return wrap


def _per_sample(values, higher_is_better: bool) -> MetricResult:
    values = [float(v) for v in values]
    return MetricResult(float(np.mean(values)), higher_is_better, values)


@register("probability", True, ("answer",), knowledge=True)
def probability(ctx, spec):
    """Length-normalized answer probability exp(-mean token NLL) (TOFU)."""
    return _per_sample(mm.probability([r.nll for r in ctx.data(spec).answer]), True)


@register("normalized_probability", True, ("answer", "perturbed"), knowledge=True)
def normalized_probability(ctx, spec):
    """P(a) / (P(a) + sum P(perturbed)), length-normalized (TOFU real authors / world facts)."""
    s = ctx.data(spec)
    return _per_sample(mm.normalized_probability([r.nll for r in s.answer], _pert_nll(s)), True)


@register("rouge_l_recall", True, ("generation",), knowledge=True)
def rouge_l_recall(ctx, spec):
    """ROUGE-L recall of the greedy generation against the answer (TOFU)."""
    s = ctx.data(spec)
    return _per_sample([mm.rouge_l_recall(g, a) for g, a in zip(s.generations, s.targets, strict=True)], True)


@register("truth_ratio", True, ("paraphrased", "perturbed"))
def truth_ratio(ctx, spec):
    """Per sample R = exp(nll_paraphrased - mean nll_perturbed); aggregate `forget`: mean min(R, 1/R) (1 = cannot
    tell true from false), `utility`: mean max(0, 1 - R) (TOFU)."""
    s = ctx.data(spec)
    ratios = mm.truth_ratio([r.nll for r in s.paraphrased], _pert_nll(s))
    variant = spec.get("aggregate", "forget" if spec.get("role") == "forget" else "utility")
    if variant not in ("forget", "utility"):
        raise UnlearnError(f"`aggregate` of truth_ratio must be forget or utility, got {variant!r}.")
    agg = mm.truth_ratio_forget(ratios) if variant == "forget" else mm.truth_ratio_utility(ratios)
    return MetricResult(agg, True, ratios.tolist(), {"aggregate": variant})


@register("exact_memorization", True, ("answer",), knowledge=True)
def exact_memorization(ctx, spec):
    """Fraction of answer tokens predicted exactly under teacher forcing (Tirumala et al. 2022)."""
    return _per_sample([mm.exact_memorization(r.argmax_match) for r in ctx.data(spec).answer], True)


@register("extraction_strength", True, ("answer",), knowledge=True)
def extraction_strength(ctx, spec):
    """1 - (shortest prefix after which the rest is predicted exactly) / length (Carlini et al. 2021)."""
    return _per_sample([mm.extraction_strength(r.argmax_match) for r in ctx.data(spec).answer], True)


@register("verbatim_rouge", True, ("generation",), knowledge=True)
def verbatim_rouge(ctx, spec):
    """ROUGE-L F1 of the continuation generated from a text prefix against the true continuation (MUSE VerbMem)."""
    s = ctx.data(spec)
    return _per_sample([mm.rouge_l_f1(g, a) for g, a in zip(s.generations, s.targets, strict=True)], True)


@register("fluency", True, ("generation",))
def fluency(ctx, spec):
    """Weighted bi/tri-gram entropy of the greedy generations, in bits (ROME); near 0 = a collapsed model."""
    return _per_sample([mm.ngram_entropy(g) for g in ctx.data(spec).generations], True)


@register("perplexity", False, ("answer",))
def perplexity(ctx, spec):
    """exp(token-weighted mean NLL) over the dataset's texts/answers; per sample exp(nll)."""
    rows = ctx.data(spec).answer
    total = sum(r.nll * r.n_tokens for r in rows) / max(1, sum(r.n_tokens for r in rows))
    return MetricResult(float(np.exp(total)), False, [float(np.exp(r.nll)) for r in rows])


def _mia(score_fn):
    def fn(ctx, spec):
        if "holdout" not in spec:
            raise UnlearnError(f"Metric `{ctx.name}` needs `holdout:` (a dataset of non-members) in the suite.")
        k = float(spec.get("k", 0.4))
        members = [score_fn(r, t, k) for r, t in zip(ctx.data(spec).answer, ctx.data(spec).texts, strict=True)]
        holdout = ctx.scores[spec["holdout"]]
        non = [score_fn(r, t, k) for r, t in zip(holdout.answer, holdout.texts, strict=True)]
        return MetricResult(mm.auc(members, non), False, members, {"holdout_scores": non})

    return fn


register("mia_loss", False, ("answer",))(_mia(lambda r, t, k: mm.mia_loss(r.nll)))
register("mia_zlib", False, ("answer",))(_mia(lambda r, t, k: mm.mia_zlib(r.nll, r.n_tokens, t)))
register("mia_min_k", False, ("answer",))(_mia(lambda r, t, k: mm.min_k(r.token_logps, k)))
register("mia_min_k_plus_plus", False, ("answer",))(
    _mia(lambda r, t, k: mm.min_k_plus_plus(r.token_logps, r.mu, r.sigma, k))
)
for _name, _paper in [
    ("mia_loss", "LOSS, Yeom et al. 2018"),
    ("mia_zlib", "zlib, Carlini et al. 2021"),
    ("mia_min_k", "Min-K%, Shi et al. 2023"),
    ("mia_min_k_plus_plus", "Min-K%++, Zhang et al. 2024"),
]:
    METRICS[_name].doc = f"AUC of forget (members) vs holdout by the {_paper} score; 0.5 = undetectable."


@register("forget_quality", True, needs_reference=True, reads={"truth_ratio": "forget_truth_ratio"})
def forget_quality(ctx, spec):
    """p-value of the KS test between the model's and the reference model's forget-set truth ratios (TOFU)."""
    (key,) = dependencies(spec)
    mine = ctx.results[key].values
    ref = ctx.reference_values(key)
    return MetricResult(mm.forget_quality(mine, ref), True, None, {"reference_samples": len(ref)})


@register("privleak", False, needs_reference=True, reads={"mia": "mia_min_k"})
def privleak(ctx, spec):
    """(AUC - AUC_reference) / AUC_reference x 100 for a membership-inference metric (MUSE); 0 is ideal."""
    (key,) = dependencies(spec)
    return MetricResult(mm.privleak(ctx.results[key].agg_value, ctx.reference_agg(key)), False)


@register("model_utility", True, reads={"components": []})
def model_utility(ctx, spec):
    """Harmonic mean of the component metrics' aggregates (TOFU: 9 components)."""
    comps = dependencies(spec)
    if not comps:
        raise UnlearnError(f"`{ctx.name}` needs `components:`, the metric entries to combine.")
    values = {c: ctx.results[c].agg_value for c in comps}
    return MetricResult(mm.harmonic_mean(list(values.values())), True, None, {"components": values})


@register("lm_eval", True)
def lm_eval(ctx, spec):
    """Mean accuracy (or `metric_key`) over lm-evaluation-harness `tasks`; optional extra `lm-eval`."""
    from .harness import run_lm_eval

    tasks = spec.get("tasks") or []
    if not tasks:
        raise UnlearnError(f"`{ctx.name}` needs `tasks:` (lm-eval task names).")
    results = run_lm_eval(
        ctx.model, ctx.tokenizer, tasks, spec.get("include_path"), spec.get("limit"), spec.get("num_fewshot")
    )
    key = spec.get("metric_key", "acc,none")
    missing = [t for t in tasks if key not in results.get(t, {})]
    if missing:
        raise UnlearnError(f"lm-eval returned no `{key}` for {missing}: {results}")
    values = [results[t][key] for t in tasks]
    return MetricResult(sum(values) / len(values), bool(spec.get("higher_is_better", True)), None, {"tasks": results})


def _pert_nll(s) -> list[list[float]]:
    widths = {len(p) for p in s.perturbed}
    if len(widths) != 1:
        raise UnlearnError(
            f"Dataset `{s.name}` has a varying number of perturbed answers per question {sorted(widths)}."
        )
    return [[r.nll for r in p] for p in s.perturbed]


def dependencies(spec: dict[str, Any]) -> list[str]:
    """Metric entries an entry reads the results of: what its metric's `reads` names, from the spec or defaults."""
    out: list[str] = []
    for key, default in METRICS[spec["metric"]].reads.items():
        value = spec.get(key, default)
        out += list(value or []) if isinstance(value, (list, tuple)) else [value]
    return out
