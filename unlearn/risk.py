"""Risk-controlled choice of a configuration: Learn-then-Test (Angelopoulos et al., "Learn then Test: Calibrating
Predictive Algorithms to Achieve Risk Control", arXiv:2110.01052), as FROC (risk-optimized control for LLM
unlearning) frames it for unlearning.

Each candidate configuration j has, per budget b, a loss in [0, 1] per evaluation row; its risk R_bj is the
expected loss on a new row. A budget says R_bj <= alpha_b. On calibration rows that the search never saw, each
candidate's null hypothesis "some budget is broken" (R_bj > alpha_b for some b) is tested with the
Hoeffding-Bentkus p-value of each budget (the largest of them tests the union); a family-wise correction over the
candidates (Bonferroni, or fixed-sequence testing in an order fixed without the calibration rows) keeps the
chance of certifying any candidate whose risk is broken at most delta:

    P(some certified configuration has R_bj > alpha_b for some b) <= delta

over the draw of the calibration rows, when they are exchangeable with the rows the guarantee speaks about.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

CORRECTIONS = ("bonferroni", "fixed_sequence")


def _kl_bernoulli(a: float, b: float) -> float:
    """h1(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b)), the Bernoulli KL divergence of Hoeffding's sharper bound."""
    a = min(max(a, 0.0), 1.0)
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


def hb_p_value(mean_loss: float, n: int, alpha: float) -> float:
    """Hoeffding-Bentkus p-value of H0: risk > alpha, from the mean of n losses in [0, 1] (LTT, Prop. 3):
    min(exp(-n h1(min(R, alpha), alpha)), e P(Binomial(n, alpha) <= ceil(n R)))."""
    if n <= 0:
        return 1.0
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    r = float(mean_loss)
    hoeffding = math.exp(-n * _kl_bernoulli(min(r, alpha), alpha))
    bentkus = math.e * float(stats.binom.cdf(math.ceil(n * r - 1e-12), n, alpha))
    return min(1.0, hoeffding, bentkus)


def smallest_p_value(n: int, alpha: float) -> float:
    """The p-value of a candidate with zero loss on all n rows: no candidate can do better."""
    return hb_p_value(0.0, n, alpha)


def rows_needed(alpha: float, level: float) -> int:
    """The fewest calibration rows at which a zero-loss candidate reaches p <= level."""
    n = 1
    while smallest_p_value(n, alpha) > level:
        n = n * 2 if n < 64 else n + max(1, n // 8)
        if n > 10**7:
            break
    lo = max(1, n // 2)
    while lo < n:
        mid = (lo + n) // 2
        lo, n = (mid + 1, n) if smallest_p_value(mid, alpha) > level else (lo, mid)
    return n


@dataclass
class Budget:
    """A bound on one per-row loss: its name, its level alpha, and a sentence saying what the loss is."""

    name: str
    alpha: float
    description: str


@dataclass
class Certificate:
    """What `certify` decided: per candidate its calibration risks, p-value and whether it is certified."""

    delta: float
    correction: str
    budgets: list[Budget]
    n_calibration: dict[str, int]
    risks: list[dict[str, float]]  # per candidate, per budget: the mean calibration loss
    p_values: list[float]  # per candidate: the largest of its budgets' p-values
    certified: list[bool]
    order: list[int] = field(default_factory=list)  # fixed-sequence testing order

    def to_dict(self) -> dict:
        return {
            "delta": self.delta,
            "correction": self.correction,
            "budgets": [b.__dict__ for b in self.budgets],
            "n_calibration": self.n_calibration,
            "risks": self.risks,
            "p_values": self.p_values,
            "certified": self.certified,
            "order": self.order,
        }


def certify(
    losses: Sequence[dict[str, np.ndarray]],
    budgets: Sequence[Budget],
    delta: float,
    correction: str = "bonferroni",
    order: Sequence[int] | None = None,
) -> Certificate:
    """Test every candidate: `losses[j][b]` holds candidate j's per-row losses in [0, 1] for budget b, on the
    calibration rows. With `fixed_sequence`, `order` (chosen without the calibration rows, e.g. by the search rows'
    risk estimate) is the testing order, each test at level delta until the first that fails."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    risks, p_values = [], []
    n_cal: dict[str, int] = {}
    for cand in losses:
        r, ps = {}, []
        for b in budgets:
            x = np.asarray(cand[b.name], dtype=float)
            if x.size and (x.min() < 0 or x.max() > 1):
                raise ValueError(f"losses of budget {b.name} must lie in [0, 1]")
            n_cal[b.name] = int(x.size)
            r[b.name] = float(x.mean()) if x.size else float("nan")
            ps.append(hb_p_value(r[b.name], x.size, b.alpha) if x.size else 1.0)
        risks.append(r)
        p_values.append(max(ps) if ps else 1.0)
    m = len(losses)
    certified = [False] * m
    used_order: list[int] = []
    if correction == "bonferroni":
        certified = [p <= delta / max(m, 1) for p in p_values]
    else:
        used_order = list(order) if order is not None else list(range(m))
        if sorted(used_order) != list(range(m)):
            raise ValueError("order must be a permutation of the candidates")
        for j in used_order:
            if p_values[j] > delta:
                break
            certified[j] = True
    return Certificate(delta, correction, list(budgets), n_cal, risks, p_values, certified, used_order)
