"""`unlearn sweep SWEEP.yaml` / `unlearn.sweep(...)`: search a recipe's settings on the benchmark machinery with
Optuna, and choose a configuration whose risk of breaking a budget is controlled (Learn-then-Test, `risk.py`).

    name: idkdpo_smollm2
    protocol: tofu_smollm2_cpu            # its target/retain models and evaluations are built once and reused
    recipe: idkdpo
    settings: {retain_loss: nll+ap}       # fixed in every trial (over the protocol's `defaults`)
    space:
      learning_rate: {low: 2.0e-4, high: 2.0e-3, log: true}
      num_train_epochs: {low: 2, high: 6}           # ints give an int range; `step` too
      retain_loss: [nll, nll+ap]                    # a list: one of these
    objectives: {forget_quality: maximize, model_utility: maximize, relearn: minimize}  # metrics or attacks
    sampler: tpe                          # tpe | random | grid (every combination of lists / stepped ranges)
    n_trials: 8
    storage: null                         # SQLite in the sweep directory; or a database URL (Optuna's RDB storage)
    risk:                                 # optional: the risk-controlled pick
      delta: 0.1
      budgets:
        utility: {metric: retain_probability, max_drop: 0.05}   # mean per-row relative drop vs the target
        forget: {metric: forget_probability, max_ratio: 1.5, max_rate: 0.2}  # rows above 1.5 x the retain model's

    RUN/study.db                 the Optuna study (every worker shares it; run again to resume)
    RUN/entries/trial-NNNN/      each trial's unlearning run, evaluation and attacks (benchmark steps)
    RUN/trials.json, TRIALS.md   every trial's settings and metrics; pareto.png the front
    RUN/risk.json, RISK.md       the certificate: which configurations are certified, the pick, the empirical check
    RUN/chosen.yaml              the chosen configuration as a recipe file `unlearn forget` runs as is

Trials are benchmark entries (`benchmarking.runner.run_entry`), keyed by their settings like any benchmark step.
With `risk`, a random part of the evaluation rows the budgets read (`calibration_fraction`) is held out of the
search: the objectives are recomputed from the per-row scores without them, and only they decide certification.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import math
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import UnlearnError, read_mapping_file, reject_unknown, require, unknown_name
from .errors import as_mapping as _mapping
from .rundir import CERTIFICATE_FILE, write_atomic

logger = logging.getLogger(__name__)

SWEEP_KEYS = (
    "name",
    "description",
    "protocol",
    "benchmark_dir",
    "recipe",
    "settings",
    "space",
    "objectives",
    "sampler",
    "n_trials",
    "seed",
    "storage",
    "keep_adapters",
    "heartbeat_s",
    "max_failures",
    "risk",
)
RISK_KEYS = ("delta", "budgets", "calibration_fraction", "correction", "seed", "splits")
RANGE_KEYS = ("low", "high", "log", "step")
SAMPLERS = ("tpe", "random", "grid")
DIRECTIONS = ("maximize", "minimize")
# Per-row metrics a budget can bound, and how their aggregate is made from the rows (all means).
PER_ROW = ("probability", "normalized_probability", "rouge_l_recall", "exact_memorization", "extraction_strength")
# Metrics recomputed from per-row scores without the calibration rows (the search never sees them).
RESTRICTABLE = (*PER_ROW, "truth_ratio", "forget_quality", "model_utility")
STUDY_FILE = "study.db"
TRIAL_PREFIX = "trial-"


@dataclass
class Param:
    name: str
    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, self.choices)
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list[Any]:
        if self.choices is not None:
            return list(self.choices)
        if self.step is None and not self.integer:
            return []
        step = self.step or 1
        n = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        values = [self.low + i * step for i in range(n)]
        return [int(v) for v in values] if self.integer else [round(v, 12) for v in values]

    def points(self) -> list[Any]:
        """Values a setting check tries: both ends of a range, every choice."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


@dataclass
class BudgetSpec:
    name: str
    metric: str
    data: str
    alpha: float
    max_drop: float | None = None
    max_ratio: float | None = None

    def describe(self) -> str:
        if self.max_drop is not None:
            return (
                f"`{self.metric}` per row may drop, relative to the target model's, by at most {self.max_drop:g} on "
                "average (loss per row: max(0, 1 - unlearned / target), capped at 1)"
            )
        return (
            f"at most a fraction {self.alpha:g} of the rows may keep `{self.metric}` above {self.max_ratio:g} x the "
            "retain model's (loss per row: 1 when above, else 0)"
        )

    def losses(self, values: np.ndarray, target: np.ndarray, retain: np.ndarray) -> np.ndarray:
        if self.max_drop is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                drop = np.where(target > 0, 1.0 - values / target, 0.0)
            return np.clip(drop, 0.0, 1.0)
        return (values > self.max_ratio * retain).astype(float)


@dataclass
class Sweep:
    name: str
    protocol: Any  # benchmarking.Protocol, with only the attacks the objectives read
    recipe: str
    settings: dict[str, Any]
    space: list[Param]
    objectives: dict[str, str]  # name -> maximize/minimize
    sampler: str = "tpe"
    n_trials: int = 8
    seed: int = 0
    storage: str | None = None
    keep_adapters: str = "front"
    heartbeat_s: int = 60
    max_failures: int | None = None
    budgets: list[BudgetSpec] = field(default_factory=list)
    delta: float = 0.1
    calibration_fraction: float = 0.5
    correction: str = "bonferroni"
    risk_seed: int = 0
    splits: int = 200
    benchmark_dir: str | None = None
    description: str = ""
    source: Any = None

    @property
    def attack_objectives(self) -> list[str]:
        return [o for o in self.objectives if o in self.protocol.attacks]

    def grid_points(self) -> list[dict[str, Any]]:
        keys = [p.name for p in self.space]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(p.grid() for p in self.space))]


# ---- reading and checking ---------------------------------------------------------------------------------------


def _number(value: Any, what: str, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UnlearnError(f"In {where}, {what} must be a number, got {value!r}.") from None


def _param(name: str, spec: Any, where: str) -> Param:
    at = f"`space.{name}`"
    if isinstance(spec, list):
        if not spec:
            raise UnlearnError(f"In {where}, {at} is an empty list: give the values to try, e.g. [1.0e-4, 5.0e-4].")
        return Param(name, choices=list(spec))
    spec = _mapping(spec, f"space.{name}", where)
    for key in spec:
        if key not in RANGE_KEYS:
            raise UnlearnError(f"In {where}, {at}: " + unknown_name("range key", key, RANGE_KEYS))
    if "low" not in spec or "high" not in spec:
        raise UnlearnError(
            f"In {where}, {at} needs `low` and `high` (e.g. {{low: 1.0e-4, high: 1.0e-3, log: true}}), or a list."
        )
    integer = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("low", "high"))
    low, high = _number(spec["low"], f"{at}.low", where), _number(spec["high"], f"{at}.high", where)
    if not low < high:
        raise UnlearnError(f"In {where}, {at} is an empty range: low {low:g} must be below high {high:g}.")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise UnlearnError(f"In {where}, {at} has `log: true`, which needs low > 0 (got {low:g}).")
    step = spec.get("step")
    if step is not None:
        step = _number(step, f"{at}.step", where)
        if step <= 0 or step > high - low:
            raise UnlearnError(f"In {where}, {at}.step must be in (0, high - low], got {step:g}.")
        if log:
            raise UnlearnError(f"In {where}, {at}: Optuna takes `step` or `log`, not both.")
    return Param(name, low=low, high=high, log=log, step=step, integer=integer)


def load_sweep(source: str | os.PathLike | dict[str, Any], overrides: dict[str, Any] | None = None) -> Sweep:
    """Read and check a sweep (a YAML path or a mapping): every refusal comes here, before any model is loaded."""
    from .benchmarking import load_protocol
    from .config import build_config
    from .evaluation import load_suite
    from .recipes import get_recipe

    where = "the sweep"
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise UnlearnError(f"Sweep file `{source}` does not exist.")
        raw = read_mapping_file(path, "Sweep file")
        where = f"`{path}`"
    raw.update(overrides or {})
    reject_unknown(raw, SWEEP_KEYS, "sweep key", where)
    for key in ("name", "protocol", "recipe", "space", "objectives"):
        if not raw.get(key):
            raise UnlearnError(f"{where} needs `{key}`" + _EXAMPLES.get(key, "."))
    protocol = load_protocol(raw["protocol"])
    recipe = str(raw["recipe"])
    config_class = get_recipe(recipe).config_class
    settings = _mapping(raw.get("settings"), "settings", where)
    space_raw = _mapping(raw["space"], "space", where)
    space = [_param(name, spec, where) for name, spec in space_raw.items()]
    known = [f.name for f in dataclasses.fields(config_class) if f.init]
    for p in space:
        if p.name not in known or p.name in ("recipe", "output_dir"):
            raise UnlearnError(f"In {where}, `space`: " + unknown_name(f"{recipe} setting", p.name, known))
    defaults = dict(protocol.defaults)
    for p in space:  # every end of every range must make a valid configuration
        for value in p.points():
            values = {"recipe": recipe, **defaults, **settings, p.name: value, "output_dir": "unused"}
            try:
                build_config(values, config_class)
            except (UnlearnError, ValueError) as e:
                raise UnlearnError(f"In {where}, `space.{p.name}` = {value!r}: {e}") from None
    suite = load_suite(protocol.suite, **protocol.suite_params)
    metrics = {n: s for n, s in suite["metrics"].items() if n not in protocol.skip}
    objectives = _objectives(raw["objectives"], metrics, protocol, where)
    attacks = {a: o for a, o in protocol.attacks.items() if a in objectives}
    sampler = str(raw.get("sampler", "tpe"))
    if sampler not in SAMPLERS:
        raise UnlearnError(f"In {where}, `sampler`: " + unknown_name("sampler", sampler, SAMPLERS))
    sweep = Sweep(
        name=str(raw["name"]),
        description=str(raw.get("description") or ""),
        protocol=dataclasses.replace(protocol, attacks=attacks),
        recipe=recipe,
        settings=settings,
        space=space,
        objectives=objectives,
        sampler=sampler,
        seed=int(raw.get("seed", 0)),
        storage=raw.get("storage"),
        keep_adapters=str(raw.get("keep_adapters", "front")),
        heartbeat_s=int(raw.get("heartbeat_s", 60)),
        benchmark_dir=raw.get("benchmark_dir"),
        source=raw,
    )
    if sweep.keep_adapters not in ("front", "all"):
        raise UnlearnError(f"In {where}, `keep_adapters` is `front` or `all`, got {sweep.keep_adapters!r}.")
    if sampler == "grid":
        empty = [p.name for p in space if not p.grid()]
        if empty:
            raise UnlearnError(
                f"In {where}, `sampler: grid` needs a list or a stepped range for every setting; "
                f"{empty} are continuous ranges. Give them `step:` or a list of values."
            )
        sweep.n_trials = len(sweep.grid_points())
        if raw.get("n_trials") not in (None, sweep.n_trials):
            logger.warning("`sampler: grid` runs every combination (%d trials); `n_trials` ignored.", sweep.n_trials)
    else:
        sweep.n_trials = int(raw.get("n_trials", 8))
    if sweep.n_trials < 1:
        raise UnlearnError(f"In {where}, `n_trials` must be at least 1, got {sweep.n_trials}.")
    sweep.max_failures = int(raw.get("max_failures", sweep.n_trials))
    if raw.get("risk"):
        _risk(sweep, _mapping(raw["risk"], "risk", where), metrics, suite, protocol, where)
    if sweep.storage:
        _check_storage(str(sweep.storage), where)
    return sweep


_EXAMPLES = {
    "name": " (it names the sweep directory, runs/sweep/NAME).",
    "protocol": ": the benchmark protocol whose models and evaluation the trials use (e.g. `tofu_smollm2_cpu`).",
    "recipe": ": the recipe whose settings are searched (e.g. `idkdpo`).",
    "space": ": the settings to search, e.g. `{learning_rate: {low: 1.0e-4, high: 1.0e-3, log: true}}`.",
    "objectives": ": what to optimize, e.g. `{forget_quality: maximize, model_utility: maximize}`.",
}


def _objectives(value: Any, metrics: dict, protocol, where: str) -> dict[str, str]:
    if isinstance(value, list):
        value = {k: v for item in value for k, v in (item.items() if isinstance(item, dict) else [(item, None)])}
    objectives = _mapping(value, "objectives", where)
    out = {}
    for name, direction in objectives.items():
        if name in protocol.attacks:
            out[name] = str(direction or "minimize")
        elif name in metrics:
            out[name] = str(direction or "maximize")
        else:
            choices = [*metrics, *protocol.attacks]
            raise UnlearnError(
                f"In {where}, `objectives`: "
                + unknown_name("metric or attack", name, choices)
                + " (an attack is an objective when the protocol runs it)"
            )
        if out[name] not in DIRECTIONS:
            raise UnlearnError(f"In {where}, `objectives.{name}` is `maximize` or `minimize`, got {direction!r}.")
    return out


def _risk(sweep: Sweep, spec: dict, metrics: dict, suite: dict, protocol, where: str) -> None:
    from .risk import CORRECTIONS, rows_needed, smallest_p_value

    reject_unknown(spec, RISK_KEYS, "risk option", f"{where}, `risk`")
    sweep.delta = _number(spec.get("delta", 0.1), "`risk.delta`", where)
    sweep.calibration_fraction = _number(spec.get("calibration_fraction", 0.5), "`risk.calibration_fraction`", where)
    sweep.correction = str(spec.get("correction", "bonferroni"))
    sweep.risk_seed = int(spec.get("seed", 0))
    sweep.splits = int(spec.get("splits", 200))
    if not 0 < sweep.delta < 1 or not 0 < sweep.calibration_fraction < 1:
        raise UnlearnError(f"In {where}, `risk.delta` and `risk.calibration_fraction` must lie in (0, 1).")
    if sweep.correction not in CORRECTIONS:
        raise UnlearnError(
            f"In {where}, `risk.correction`: " + unknown_name("correction", sweep.correction, CORRECTIONS)
        )
    budgets = _mapping(spec.get("budgets"), "risk.budgets", where)
    if not budgets:
        raise UnlearnError(
            f"In {where}, `risk` needs `budgets`, e.g. `{{utility: {{metric: retain_probability, max_drop: 0.05}}}}`."
        )
    for name, b in budgets.items():
        b = _mapping(b, f"risk.budgets.{name}", where)
        metric = b.get("metric")
        if metric not in metrics:
            raise UnlearnError(
                f"In {where}, `risk.budgets.{name}.metric`: " + unknown_name("metric", str(metric), list(metrics))
            )
        kind = metrics[metric]["metric"]
        if kind not in PER_ROW:
            raise UnlearnError(
                f"In {where}, `risk.budgets.{name}`: `{metric}` is a `{kind}` metric, which has no per-row score to "
                f"bound; use one of the suite's {', '.join(PER_ROW)} metrics (e.g. retain_probability)."
            )
        if ("max_drop" in b) == ("max_ratio" in b):
            raise UnlearnError(
                f"In {where}, `risk.budgets.{name}` takes `max_drop` (utility kept relative to the target) or "
                "`max_ratio` with `max_rate` (forgetting relative to the retain model), one of them."
            )
        if "max_drop" in b:
            alpha = _number(b["max_drop"], f"`risk.budgets.{name}.max_drop`", where)
            budget = BudgetSpec(name, metric, metrics[metric]["data"], alpha, max_drop=alpha)
        else:
            alpha = _number(b.get("max_rate", 0.1), f"`risk.budgets.{name}.max_rate`", where)
            ratio = _number(b["max_ratio"], f"`risk.budgets.{name}.max_ratio`", where)
            budget = BudgetSpec(name, metric, metrics[metric]["data"], alpha, max_ratio=ratio)
        if not 0 < alpha < 1:
            raise UnlearnError(f"In {where}, the level of `risk.budgets.{name}` must lie in (0, 1), got {alpha:g}.")
        sweep.budgets.append(budget)
    # Can any candidate be certified with the rows there are? A zero-loss candidate has the smallest p-value.
    level = sweep.delta / (sweep.n_trials if sweep.correction == "bonferroni" else 1)
    for b in sweep.budgets:
        n = _calibration_size(_rows_of(suite, b.data), sweep.calibration_fraction)
        if smallest_p_value(n, b.alpha) > level:
            need = rows_needed(b.alpha, level)
            raise UnlearnError(
                f"In {where}, budget `{b.name}` (level {b.alpha:g}) cannot be certified by any candidate: with "
                f"{n} calibration rows of `{b.data}` even a candidate with no loss on any of them has p-value "
                f"{smallest_p_value(n, b.alpha):.3g} > delta{' / n_trials' if sweep.correction == 'bonferroni' else ''} "
                f"= {level:.3g}. It needs at least {need} calibration rows: evaluate on more rows "
                "(`suite_params.limit` of the protocol, or a suite with a larger pool for the budget, such as "
                "`tofu_risk`'s `retain_pool_probability`), raise `risk.calibration_fraction`, loosen the level, "
                "raise `risk.delta`, or use `correction: fixed_sequence`."
            )


def _rows_of(suite: dict, data: str) -> int:
    from .evaluation.suite import dataset_rows

    return len(dataset_rows(suite["datasets"][data]))


def _calibration_size(n: int, fraction: float) -> int:
    return int(round(n * fraction))


def _check_storage(url: str, where: str) -> None:
    optuna = require("optuna", "sweep")
    try:
        optuna.storages.RDBStorage(url)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean "cannot open"
        raise UnlearnError(
            f"In {where}, `storage: {url}` cannot be opened ({type(e).__name__}: {e}). Give a database URL Optuna "
            "can reach (e.g. postgresql://user:pass@host/db, mysql+pymysql://..., sqlite:////abs/path.db), "
            "with its driver installed, or leave `storage` out for SQLite in the sweep directory."
        ) from None


# ---- the study -------------------------------------------------------------------------------------------------


def _storage_url(sweep: Sweep, root: Path) -> str:
    return str(sweep.storage) if sweep.storage else f"sqlite:///{(root / STUDY_FILE).resolve()}"


def _grace_s(sweep: Sweep) -> int:
    """Seconds without a heartbeat after which a running trial counts as abandoned."""
    return 2 * sweep.heartbeat_s


def open_study(sweep: Sweep, root: Path):
    optuna = require("optuna", "sweep")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(
        _storage_url(sweep, root),
        heartbeat_interval=sweep.heartbeat_s,
        grace_period=_grace_s(sweep),
        engine_kwargs={"connect_args": {"timeout": 60}} if not sweep.storage else None,
    )
    if sweep.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(
            seed=sweep.seed, constant_liar=True, n_startup_trials=min(4, sweep.n_trials)
        )
    else:
        sampler = optuna.samplers.RandomSampler(seed=sweep.seed)  # grid: the points are enqueued, the sampler unused
    study = optuna.create_study(
        storage=storage,
        study_name=sweep.name,
        directions=list(sweep.objectives.values()),
        sampler=sampler,
        load_if_exists=True,
    )
    return study


def _enqueue_grid(sweep: Sweep, study) -> None:
    """Every grid point not yet queued or done, queued once (workers pop queued trials atomically: none repeats)."""
    from optuna.trial import TrialState

    live = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL and t.user_attrs.get("grid")]
    seen = [t.user_attrs.get("point") for t in live]
    for point in sweep.grid_points():
        if point not in seen:
            study.enqueue_trial(point, user_attrs={"grid": True, "point": point})


def _prepare(sweep: Sweep, root: Path) -> tuple[dict, dict, Path]:
    """The benchmark's data and models (built once, cached as benchmark steps) and the relearning baseline."""
    from .benchmarking.runner import build_models, check_data, materialize, relearn_baseline
    from .benchmarking.steps import Steps

    p = sweep.protocol
    bench = Path(sweep.benchmark_dir or Path("runs") / "benchmark" / p.name)
    bench.mkdir(parents=True, exist_ok=True)
    data = materialize(p, bench / "data")
    check_data(p, data)
    steps = Steps(bench)
    models = build_models(p, data, steps)
    if "relearn" in p.attacks:
        models["relearn_baseline"] = relearn_baseline(p.attacks["relearn"], data, models, steps)
    return data, models, bench


def _split(sweep: Sweep, bench: Path) -> dict[str, list[int]]:
    """The calibration rows of each dataset a budget reads: a seeded random part, never seen by the search."""
    if not sweep.budgets:
        return {}
    log = _eval_log(bench / "eval" / "target")
    rng = np.random.default_rng(sweep.risk_seed)
    out = {}
    for b in sweep.budgets:
        if b.data in out:
            continue
        n = len(log[b.metric]["value_by_index"])
        out[b.data] = sorted(rng.permutation(n)[: _calibration_size(n, sweep.calibration_fraction)].tolist())
    return out


def _eval_log(d: Path) -> dict[str, Any]:
    return json.loads((d / "EVAL.json").read_text())


def _values(log: dict, metric: str) -> np.ndarray:
    by = log[metric]["value_by_index"]
    return np.array([by[str(i)]["score"] for i in range(len(by))], dtype=float)


def search_metrics(
    log: dict, reference: dict, suite: dict, names: list[str], held: dict[str, list[int]]
) -> dict[str, float]:
    """The named metrics of an evaluation log, recomputed without the held-out rows of each dataset (`held`); a
    metric reading no held-out dataset is its logged value."""
    from .evaluation import metric_math as mm

    specs = suite["metrics"]

    def keep(data: str, n: int) -> np.ndarray:
        mask = np.ones(n, dtype=bool)
        mask[held.get(data, [])] = False
        return mask

    def value(name: str) -> float:
        spec = specs[name]
        kind, data = spec["metric"], spec.get("data")
        if data not in held and kind != "model_utility" and kind != "forget_quality":
            return float(log[name]["agg_value"])
        if kind in PER_ROW:
            v = _values(log, name)
            return float(np.mean(v[keep(data, len(v))]))
        if kind == "truth_ratio":
            r = _values(log, name)[keep(data, len(log[name]["value_by_index"]))]
            variant = spec.get("aggregate", "forget" if spec.get("role") == "forget" else "utility")
            return mm.truth_ratio_forget(r) if variant == "forget" else mm.truth_ratio_utility(r)
        if kind == "forget_quality":
            tr = spec["truth_ratio"]
            tr_data = specs[tr]["data"]
            mine, ref = _values(log, tr), _values(reference, tr)
            return mm.forget_quality(mine[keep(tr_data, len(mine))], ref[keep(tr_data, len(ref))])
        if kind == "model_utility":
            return mm.harmonic_mean([value(c) for c in spec["components"]])
        raise UnlearnError(f"`{name}` ({kind}) reads held-out calibration rows and cannot be recomputed without them.")

    return {name: value(name) for name in names}


def _recovered(result: dict[str, Any]) -> float:
    """An attack's recovered fraction as an objective. A trial that removed nothing measurable has nothing to
    recover (the attack reports 0), which would make it the best at resisting the attack: it counts as 1, all of it
    still there."""
    if result["row"].get("forgot_nothing"):
        return 1.0
    return float(result["recovered"]) if result["recovered"] is not None else float("nan")


class _Trials:
    """The objective Optuna calls: one benchmark entry per trial, its objectives read without calibration rows."""

    def __init__(self, sweep: Sweep, root: Path):
        from .benchmarking.steps import Steps
        from .evaluation import load_suite

        self.sweep, self.root = sweep, root
        self.data, self.models, self.bench = _prepare(sweep, root)
        self.held = _split(sweep, self.bench)
        self.suite = load_suite(sweep.protocol.suite, **sweep.protocol.suite_params)
        self.reference = _eval_log(self.bench / "eval" / "retain")
        self.steps = Steps(root)

    def __call__(self, trial) -> tuple[float, ...]:
        import optuna

        from .benchmarking.protocol import Entry
        from .benchmarking.runner import run_entry

        s = self.sweep
        if s.sampler == "grid" and not trial.user_attrs.get("grid"):
            # another worker took the last queued point between our look and our ask: not a trial of the grid
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("no grid point left")
        params = {p.name: p.suggest(trial) for p in s.space}
        settings = {**s.protocol.defaults, **s.settings, **params}
        entry = Entry(s.recipe, settings, f"{TRIAL_PREFIX}{trial.number:04d}")
        trial.set_user_attr("entry", entry.name)
        run_entry(s.protocol, entry, self.data, self.models, self.steps)
        base = self.root / "entries" / entry.name
        metric_names = [o for o in s.objectives if o not in s.protocol.attacks]
        log = _eval_log(base / "eval")
        values = search_metrics(log, self.reference, self.suite, metric_names, self.held)
        for a in s.attack_objectives:
            values[a] = _recovered(json.loads((base / f"attack-{a}" / "STEP.json").read_text())["result"])
        trial.set_user_attr("metrics", values)
        trial.set_user_attr("full_metrics", {k: v["agg_value"] for k, v in log.items() if "agg_value" in v})
        return tuple(float(values[o]) for o in s.objectives)


def work(sweep: Sweep, root: Path) -> None:
    """One worker: trials until the study holds `n_trials` complete ones (shared with any other worker).

    One trial per `optimize` call (which keeps the trial's heartbeat), and before each a look at the study: stale
    trials of killed workers are marked failed; done at `n_trials` complete trials, at `max_failures` failed ones,
    or on a grid when no point is left; while the last trials run in other workers, it waits for them."""
    from optuna.trial import TrialState

    study = open_study(sweep, root)
    objective = _Trials(sweep, root)
    while True:
        _fail_abandoned(study, _grace_s(sweep))
        states = [t.state for t in study.get_trials(deepcopy=False)]
        complete, running = states.count(TrialState.COMPLETE), states.count(TrialState.RUNNING)
        if complete >= sweep.n_trials:
            return
        if states.count(TrialState.FAIL) >= sweep.max_failures:
            logger.error("%d trials failed; stopping the sweep (see the errors above).", sweep.max_failures)
            return
        if sweep.sampler == "grid" and TrialState.WAITING not in states and not running:
            return
        if complete + running >= sweep.n_trials or (sweep.sampler == "grid" and TrialState.WAITING not in states):
            time.sleep(sweep.heartbeat_s)  # the last trials are running elsewhere: they finish, or go stale and fail
            continue
        # a failed trial is recorded as failed (with its error logged) and the study goes on
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)


def sweep(
    source: str | os.PathLike | dict[str, Any] | Sweep,
    out: str | os.PathLike | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the `trials.json` content with the chosen configuration and certificate.

    `workers` > 1 starts that many worker processes on the same study (each runs trials until the study is
    complete); the target/retain models and evaluations are built here first, once."""
    s = source if isinstance(source, Sweep) else load_sweep(source)
    root = Path(out or Path("runs") / "sweep" / s.name)
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / "sweep.yaml", yaml.safe_dump(s.source, sort_keys=False))
    _prepare(s, root)  # built (or found cached) once, before any worker starts
    study = open_study(s, root)
    _fail_abandoned(study, _grace_s(s))
    if s.sampler == "grid":
        _enqueue_grid(s, study)
    if workers <= 1:
        work(s, root)
    else:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "unlearn", "sweep", str(root / "sweep.yaml"), "--worker", "--out", str(root)]
            )
            for _ in range(workers)
        ]
        codes = [p.wait() for p in procs]
        if any(codes):
            logger.warning("Sweep workers exited with %s; the study keeps what they finished.", codes)
    return report(s, root, open_study(s, root))


def _fail_abandoned(study, grace_s: float) -> None:
    """Trials left RUNNING by a killed worker are marked failed: those whose heartbeat stopped (Optuna's), and
    those killed before their first heartbeat was recorded, which Optuna never counts as stale: RUNNING for longer
    than the grace period (`grace_s`, the storage's) without having reached the objective (`entry` is the
    objective's first record)."""
    from datetime import datetime, timedelta

    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    fail_stale_trials(study)
    grace = timedelta(seconds=grace_s)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "entry" not in t.user_attrs and t.datetime_start and datetime.now() - t.datetime_start > grace:
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            logger.warning("Trial %d never reached its objective (its worker died first); marked failed.", t.number)


# ---- report ---------------------------------------------------------------------------------------------------


def _trial_rows(s: Sweep, study) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    front = (
        {t.number for t in study.best_trials} if any(t.state == TrialState.COMPLETE for t in study.trials) else set()
    )
    rows = []
    for t in study.trials:
        if t.user_attrs.get("surplus"):
            continue
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "objectives": dict(zip(s.objectives, t.values, strict=True)) if t.values else None,
                "metrics": t.user_attrs.get("full_metrics"),
                "entry": t.user_attrs.get("entry"),
                "pareto": t.number in front,
            }
        )
    return rows


def report(s: Sweep, root: Path, study) -> dict[str, Any]:
    rows = _trial_rows(s, study)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    result: dict[str, Any] = {"sweep": s.name, "objectives": s.objectives, "trials": rows, "chosen": None, "risk": None}
    if complete:
        if s.budgets:
            result["risk"] = certify_trials(s, root, complete)
            pick = result["risk"]["pick"]
        else:
            first, direction = next(iter(s.objectives.items()))
            front = [r for r in complete if r["pareto"]]
            pick = (max if direction == "maximize" else min)(front, key=lambda r: r["objectives"][first])["number"]
        if pick is not None:
            result["chosen"] = write_chosen(s, root, next(r for r in complete if r["number"] == pick), result["risk"])
    _prune_adapters(s, root, rows)
    write_atomic(root / "trials.json", json.dumps(result, indent=2, default=float))
    write_atomic(root / "TRIALS.md", _markdown(s, result))
    _pareto_plot(s, complete, root / "pareto.png")
    return result


def certify_trials(s: Sweep, root: Path, complete: list[dict]) -> dict[str, Any]:
    """Learn-then-Test over the complete trials on the calibration rows; the pick; the empirical check."""
    from .risk import Budget, certify

    bench = Path(s.benchmark_dir or Path("runs") / "benchmark" / s.protocol.name)
    held = _split(s, bench)
    target, retain = _eval_log(bench / "eval" / "target"), _eval_log(bench / "eval" / "retain")
    per_row = []  # per trial, per budget: the losses on every row
    for r in complete:
        log = _eval_log(root / "entries" / r["entry"] / "eval")
        per_row.append(
            {
                b.name: b.losses(_values(log, b.metric), _values(target, b.metric), _values(retain, b.metric))
                for b in s.budgets
            }
        )
    budgets = [Budget(b.name, b.alpha, b.describe()) for b in s.budgets]

    cal = {d: np.array(ix, dtype=int) for d, ix in held.items()}
    # fixed-sequence order, chosen without the calibration rows: lowest risk (relative to its level) on the search
    # rows first; the empirical check keeps this order
    search_risk = [
        max(float(np.mean(np.delete(rows[b.name], cal[b.data]))) / b.alpha for b in s.budgets) for rows in per_row
    ]
    order = [int(i) for i in np.argsort(search_risk, kind="stable")]

    def run(cal: dict[str, np.ndarray]):
        losses = [{b.name: rows[b.name][cal[b.data]] for b in s.budgets} for rows in per_row]
        return certify(losses, budgets, s.delta, s.correction, order=order)

    first, direction = next(iter(s.objectives.items()))
    sign = 1 if direction == "maximize" else -1

    def best(cert) -> int | None:
        ok = [i for i, c in enumerate(cert.certified) if c]
        return max(ok, key=lambda i: sign * complete[i]["objectives"][first]) if ok else None

    cert = run(cal)
    pick = best(cert)
    closest = int(np.argmin(cert.p_values))
    sizes = {b.data: len(per_row[0][b.name]) for b in s.budgets}
    check = empirical_check(
        per_row,
        s.budgets,
        run,
        best,
        sizes,
        splits=s.splits,
        fraction=s.calibration_fraction,
        seed=s.risk_seed + 1,
        delta=s.delta,
    )
    out = {
        "certificate": cert.to_dict(),
        "trials": [r["number"] for r in complete],
        "pick": complete[pick]["number"] if pick is not None else None,
        "closest": {
            "trial": complete[closest]["number"],
            "p_value": cert.p_values[closest],
            "risks": cert.risks[closest],
        },
        "guarantee": _guarantee_text(s, cert),
        "empirical_check": check,
    }
    write_atomic(root / "risk.json", json.dumps(out, indent=2, default=float))
    write_atomic(root / "RISK.md", _risk_markdown(s, out, complete))
    if pick is not None:
        run_dir = root / "entries" / complete[pick]["entry"] / "train" / "run"
        write_atomic(
            run_dir / CERTIFICATE_FILE, json.dumps(_certificate_record(s, out, pick, cert), indent=2, default=float)
        )
    return out


def _certificate_record(s: Sweep, out: dict, pick: int, cert) -> dict[str, Any]:
    return {
        "sweep": s.name,
        "trial": out["pick"],
        "statement": out["guarantee"],
        "delta": s.delta,
        "correction": s.correction,
        "candidates": len(cert.certified),
        "budgets": [
            {"name": b.name, "level": b.alpha, "means": b.describe(), "calibration_risk": cert.risks[pick][b.name]}
            for b in s.budgets
        ],
        "calibration_rows": cert.n_calibration,
        "p_value": cert.p_values[pick],
        "empirical_check": out["empirical_check"],
    }


def _guarantee_text(s: Sweep, cert) -> str:
    budgets = "; ".join(f"{b.name}: {b.describe()}" for b in s.budgets)
    return (
        f"With probability at least {1 - s.delta:g} over the draw of the calibration rows, every configuration "
        f"certified here meets each budget in expectation over new rows ({budgets}). Learn-then-Test with "
        f"Hoeffding-Bentkus p-values and {s.correction.replace('_', '-')} correction over {len(cert.certified)} "
        "candidates. Assumes the calibration rows are exchangeable with the rows the guarantee is about (drawn "
        "from the same distribution), and that the candidates were chosen without them (the search read only the "
        "other rows)."
    )


def empirical_check(
    per_row: list[dict[str, np.ndarray]],
    budgets: list,
    run,
    best,
    sizes: dict[str, int],
    *,
    splits: int,
    fraction: float,
    seed: int,
    delta: float,
) -> dict[str, Any]:
    """Over random calibration/test splits of all the rows, how often the certified pick breaks a budget.

    `per_row[j][budget]`: candidate j's loss on every row of the budget's data (`sizes` rows); `run(cal)` certifies
    on calibration row indices, `best(certificate)` picks among the certified (or None). A pick counts against the
    guarantee on the test rows when its mean test loss exceeds a level (this also counts test-row noise around a
    risk at the level), and on the pool when its mean over all the rows does (the pool is the population the
    rows are drawn from; this is the rate the guarantee bounds by about delta)."""
    rng = np.random.default_rng(seed)
    violations, pool_violations, picked = 0, 0, 0
    for _ in range(splits):
        cal, test = {}, {}
        for d, n in sizes.items():
            perm = rng.permutation(n)
            k = _calibration_size(n, fraction)
            cal[d], test[d] = perm[:k], perm[k:]
        j = best(run(cal))
        if j is None:
            continue
        picked += 1
        violations += int(any(float(np.mean(per_row[j][b.name][test[b.data]])) > b.alpha for b in budgets))
        pool_violations += int(any(float(np.mean(per_row[j][b.name])) > b.alpha for b in budgets))
    return {
        "splits": splits,
        "certified_a_pick": picked,
        "violations": violations,
        "violation_rate": violations / picked if picked else None,
        "pool_violations": pool_violations,
        "pool_violation_rate": pool_violations / splits,
        "delta": delta,
    }


def write_chosen(s: Sweep, root: Path, row: dict, risk: dict | None) -> dict[str, Any]:
    """The chosen trial as a recipe file `unlearn forget` runs as is (from the protocol's target model)."""
    bench = Path(s.benchmark_dir or Path("runs") / "benchmark" / s.protocol.name)
    target = s.protocol.target or str(bench / "target" / "model")
    values = {
        "recipe": s.recipe,
        "model_name_or_path": target,
        "forget": str(bench / "data" / "forget.jsonl"),
        "retain": str(bench / "data" / "retain.jsonl"),
        "output_dir": str(Path("runs") / f"{s.name}-chosen"),
        **s.protocol.defaults,
        **s.settings,
        **row["params"],
    }
    head = [
        f"Chosen by `unlearn sweep` ({s.name}), trial {row['number']}: "
        + ", ".join(f"{k} {v:.4g}" for k, v in row["objectives"].items()),
        f"Its run, evaluation and attacks: {root / 'entries' / row['entry']}",
    ]
    if risk is not None:
        head.append(f"Risk-certified (see {root / 'RISK.md'}): {risk['guarantee']}")
    else:
        head.append("The best first objective on the Pareto front (no `risk` budgets were given).")
    text = "".join("# " + line + "\n" for part in head for line in textwrap.wrap(part, 110))
    text += yaml.safe_dump(values, sort_keys=False)
    write_atomic(root / "chosen.yaml", text)
    return {"trial": row["number"], "path": str(root / "chosen.yaml"), "settings": values}


def _prune_adapters(s: Sweep, root: Path, rows: list[dict]) -> None:
    if s.keep_adapters == "all":
        return
    for r in rows:
        if r["state"] != "COMPLETE" or r["pareto"] or not r["entry"]:
            continue
        run_dir = root / "entries" / r["entry"] / "train" / "run"
        if (run_dir / CERTIFICATE_FILE).is_file():
            continue
        for f in ("adapter_model.safetensors", "model.safetensors"):
            (run_dir / f).unlink(missing_ok=True)


def _markdown(s: Sweep, result: dict) -> str:
    names = list(s.objectives)
    head = "| trial | state | " + " | ".join(p.name for p in s.space) + " | " + " | ".join(names) + " | front |"
    lines = [
        f"# Sweep `{s.name}`: `{s.recipe}` on `{s.protocol.name}`",
        "",
        f"Objectives: {', '.join(f'{k} ({v})' for k, v in s.objectives.items())}"
        + (" — read without the calibration rows." if s.budgets else "."),
        "",
        head,
        "|" + "---|" * (3 + len(s.space) + len(names)),
    ]
    for r in result["trials"]:
        params = [_fmt(r["params"].get(p.name)) for p in s.space]
        objs = [_fmt((r["objectives"] or {}).get(n)) for n in names]
        lines.append(
            f"| {r['number']} | {r['state']} | " + " | ".join(params + objs) + f" | {'★' if r['pareto'] else ''} |"
        )
    lines.append("")
    if result["chosen"]:
        lines.append(f"Chosen: trial {result['chosen']['trial']}, written to `{result['chosen']['path']}`.")
    elif result["risk"]:
        c = result["risk"]["closest"]
        lines.append(
            f"No configuration is certified. Closest: trial {c['trial']} (p-value {c['p_value']:.3g}, "
            f"calibration risks {', '.join(f'{k} {v:.3f}' for k, v in c['risks'].items())}). See RISK.md."
        )
    return "\n".join(lines) + "\n"


def _risk_markdown(s: Sweep, out: dict, complete: list[dict]) -> str:
    cert = out["certificate"]
    lines = [
        f"# Risk-controlled choice, sweep `{s.name}`",
        "",
        out["guarantee"],
        "",
        "| trial | " + " | ".join(f"{b.name} risk (level {b.alpha:g})" for b in s.budgets) + " | p-value | certified |",
        "|" + "---|" * (3 + len(s.budgets)),
    ]
    for i, r in enumerate(complete):
        risks = [f"{cert['risks'][i][b.name]:.3f}" for b in s.budgets]
        lines.append(
            f"| {r['number']} | "
            + " | ".join(risks)
            + f" | {cert['p_values'][i]:.3g} | {'yes' if cert['certified'][i] else ''} |"
        )
    lines.append("")
    lines.append(f"Calibration rows: {cert['n_calibration']}; delta {s.delta:g}; {s.correction} correction.")
    if out["pick"] is not None:
        lines.append(f"Pick: trial {out['pick']}, the best certified `{next(iter(s.objectives))}`.")
    else:
        c = out["closest"]
        lines.append(f"None certified; closest: trial {c['trial']} (p-value {c['p_value']:.3g}).")
    e = out["empirical_check"]
    rate = "n/a" if e["violation_rate"] is None else f"{e['violation_rate']:.3f}"
    lines += [
        "",
        f"Empirical check: {e['splits']} random calibration/test splits of all rows; a pick was certified in "
        f"{e['certified_a_pick']}; the pick broke a budget on the test rows in {e['violations']} (rate {rate} of "
        f"the picks; test-row noise included) and on all the rows in {e['pool_violations']} "
        f"({e['pool_violation_rate']:.3f} of the splits; the guarantee bounds this by about delta = {s.delta:g}).",
        "",
    ]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _pareto_plot(s: Sweep, complete: list[dict], path: Path) -> None:
    from .evaluation.report import _plt

    names = list(s.objectives)
    if not complete or len(names) < 1:
        return
    plt = _plt()
    x_name, y_name = names[0], names[1] if len(names) > 1 else names[0]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in complete:
        o = r["objectives"]
        ax.scatter(
            o[x_name],
            o[y_name],
            marker="*" if r["pareto"] else "o",
            s=120 if r["pareto"] else 40,
            color="tab:red" if r["pareto"] else "tab:blue",
        )
        ax.annotate(str(r["number"]), (o[x_name], o[y_name]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    if x_name == "forget_quality":
        ax.set_xscale("log")
    ax.set_xlabel(f"{x_name} ({s.objectives[x_name]})")
    ax.set_ylabel(f"{y_name} ({s.objectives[y_name]})")
    ax.set_title(f"{s.name}: trials (★ Pareto front)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
