"""`unlearn sweep` on the tiny model: trials as benchmark entries in an Optuna study shared by worker processes, a
killed worker's trial marked failed, the risk-controlled pick (Learn-then-Test) and its refusals before training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from conftest import ROOT, TOFU_DIR
from test_benchmark import tiny_protocol

import unlearn
from unlearn import UnlearnError
from unlearn.risk import Budget, certify, hb_p_value, rows_needed, smallest_p_value
from unlearn.sweeping import load_sweep, search_metrics

optuna = pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def bench(tiny_init_dir, tmp_path_factory):
    """The tiny protocol's target and retain models and evaluations, built once for every sweep here."""
    os.environ["UNLEARN_TOFU_DIR"] = str(TOFU_DIR)
    out = tmp_path_factory.mktemp("bench")
    protocol = tiny_protocol(tiny_init_dir, attacks={"relearn": {"steps": 2, "eval_every": 2, "learning_rate": 3e-3}})
    unlearn.benchmark(protocol, out=out, only="models")
    return protocol, out


def tiny_sweep(bench, **changes) -> dict:
    protocol, out = bench
    sweep = {
        "name": "tiny-sweep",
        "protocol": protocol,
        "benchmark_dir": str(out),
        "recipe": "graddiff",
        "space": {"learning_rate": [5e-3, 1e-3]},
        "objectives": {"forget_quality": "maximize", "model_utility": "maximize"},
        "sampler": "grid",
        "heartbeat_s": 1,
        "risk": {
            "delta": 0.5,
            "calibration_fraction": 0.5,
            "splits": 50,
            "budgets": {"utility": {"metric": "retain_probability", "max_drop": 0.5}},
        },
    }
    sweep.update(changes)
    return sweep


def test_two_workers_share_one_study_and_the_pick_is_certified(bench, tmp_path):
    out = tmp_path / "sweep"
    result = unlearn.sweep(
        tiny_sweep(bench, objectives={"forget_quality": "maximize", "relearn": "minimize"}), out=out, workers=2
    )
    trials = result["trials"]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    assert len(complete) == 2 and len(trials) == 2  # the two grid points, each run once, between the two workers
    assert sorted(t["params"]["learning_rate"] for t in complete) == [1e-3, 5e-3]
    for t in complete:
        base = out / "entries" / t["entry"]
        assert (base / "train" / "STEP.json").is_file() and (base / "eval" / "EVAL.json").is_file()
        assert 0 <= t["objectives"]["forget_quality"] <= 1 and np.isfinite(t["objectives"]["relearn"])
    assert {p.name for p in out.joinpath("entries").iterdir()} == {t["entry"] for t in complete}
    for name in ("trials.json", "TRIALS.md", "pareto.png", "risk.json", "RISK.md"):
        assert (out / name).is_file(), name

    risk = result["risk"]
    cert = risk["certificate"]
    assert cert["n_calibration"] == {"utility": 4}  # half of the suite's 8 retain rows
    assert len(cert["p_values"]) == 2 and all(0 < p <= 1 for p in cert["p_values"])
    for i, ok in enumerate(cert["certified"]):
        assert ok == (cert["p_values"][i] <= 0.5 / 2)  # Bonferroni over the two candidates
    assert "exchangeable" in risk["guarantee"]
    check = risk["empirical_check"]
    assert check["splits"] == 50 and 0 <= check["violations"] <= check["certified_a_pick"] <= 50
    if risk["pick"] is not None:
        chosen = result["chosen"]
        assert chosen["trial"] == risk["pick"]
        values = yaml.safe_load((out / "chosen.yaml").read_text())
        picked = next(t for t in complete if t["number"] == risk["pick"])
        assert values["recipe"] == "graddiff" and values["learning_rate"] == picked["params"]["learning_rate"]
        from unlearn.precheck import precheck_run

        precheck_run({**values, "output_dir": str(tmp_path / "chosen-run")})  # `unlearn forget chosen.yaml` runs
        run_dir = out / "entries" / picked["entry"] / "train" / "run"
        cert_file = json.loads((run_dir / "certificate.json").read_text())
        assert cert_file["trial"] == risk["pick"] and cert_file["budgets"][0]["level"] == 0.5
        from unlearn.hub import model_card

        assert "Risk certificate" in model_card(run_dir)

    # the search read the objectives without the calibration rows; with none held out they are the logged ones
    t = complete[0]
    log = json.loads((out / "entries" / t["entry"] / "eval" / "EVAL.json").read_text())
    ref = json.loads((bench[1] / "eval" / "retain" / "EVAL.json").read_text())
    from unlearn.evaluation import load_suite

    suite = load_suite("tofu", **bench[0]["suite_params"])
    full = search_metrics(log, ref, suite, ["forget_quality", "model_utility", "retain_probability"], {})
    for name, value in full.items():
        assert value == pytest.approx(log[name]["agg_value"], rel=1e-9), name
    held = search_metrics(log, ref, suite, ["retain_probability"], {"retain": [0, 1, 2, 3]})
    rows = [log["retain_probability"]["value_by_index"][str(i)]["score"] for i in range(4, 8)]
    assert held["retain_probability"] == pytest.approx(np.mean(rows))

    again = unlearn.sweep(tiny_sweep(bench, objectives={"forget_quality": "maximize", "relearn": "minimize"}), out=out)
    assert [t["number"] for t in again["trials"]] == [t["number"] for t in trials]  # resumed: nothing rerun


def test_a_killed_worker_trial_is_marked_failed_and_the_study_goes_on(bench, tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    config = tiny_sweep(bench, sampler="random", n_trials=2, space={"learning_rate": {"low": 1e-3, "high": 5e-3}})
    config.pop("risk")
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    worker = subprocess.Popen(
        [sys.executable, "-m", "unlearn", "sweep", str(path), "--out", str(out)],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    storage = f"sqlite:///{out / 'study.db'}"
    deadline = time.time() + 600
    running = None
    while time.time() < deadline and running is None and worker.poll() is None:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="tiny-sweep", storage=storage)
        except Exception:  # noqa: BLE001 - the study is not created yet
            continue
        running = next((t.number for t in study.trials if t.state.name == "RUNNING"), None)
    assert running is not None, "the worker never started a trial"
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    time.sleep(3)  # past the heartbeat's grace period (2 x heartbeat_s)

    result = unlearn.sweep(load_sweep(path), out=out)
    states = {t["number"]: t["state"] for t in result["trials"]}
    assert states[running] == "FAIL"
    assert sum(s == "COMPLETE" for s in states.values()) == 2
    assert result["chosen"] is not None and (out / "chosen.yaml").is_file()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"space": {"learnig_rate": [1e-3]}}, "Unknown graddiff setting 'learnig_rate'. Did you mean 'learning_rate'"),
        ({"space": {"learning_rate": {"low": 1e-3, "high": 1e-4}}}, "empty range: low 0.001 must be below high"),
        ({"space": {"learning_rate": []}}, "empty list"),
        ({"space": {"learning_rate": {"low": 1e-4, "high": 1e-3}}}, "sampler: grid` needs a list or a stepped"),
        ({"objectives": {"forget_qualty": "maximize"}}, "Unknown metric or attack 'forget_qualty'"),
        ({"objectives": {"forget_quality": "up"}}, "is `maximize` or `minimize`"),
        (
            {"risk": {"delta": 0.1, "budgets": {"utility": {"metric": "retain_probability", "max_drop": 0.05}}}},
            "cannot be certified by any candidate.*It needs at least",
        ),
        ({"risk": {"budgets": {"u": {"metric": "model_utility", "max_drop": 0.05}}}}, "no per-row score"),
        ({"storage": "postgresql://nobody@127.0.0.1:1/none"}, "cannot be opened"),
        ({"colour": 1}, "Unknown sweep key 'colour'"),
    ],
)
def test_bad_sweep_is_refused_before_any_training(tiny_init_dir, change, message, monkeypatch):
    monkeypatch.setenv("UNLEARN_TOFU_DIR", str(TOFU_DIR))
    config = tiny_sweep((tiny_protocol(tiny_init_dir), "unused"), **change)
    with pytest.raises(UnlearnError, match=message):
        load_sweep(config)


def test_hoeffding_bentkus_and_learn_then_test():
    assert smallest_p_value(20, 0.05) == pytest.approx(0.95**20)  # no candidate can beat zero loss
    n = rows_needed(0.05, 0.1 / 8)
    assert smallest_p_value(n, 0.05) <= 0.1 / 8 < smallest_p_value(n - 1, 0.05)
    assert hb_p_value(0.06, 200, 0.05) == 1.0  # above the level: never rejected
    assert hb_p_value(0.01, 400, 0.05) < hb_p_value(0.03, 400, 0.05) < hb_p_value(0.03, 100, 0.05)

    # The guarantee, by simulation: candidates with known risks, Bernoulli losses; how often is one whose risk is
    # above the level certified? At most delta (LTT's family-wise error), with either correction.
    rng = np.random.default_rng(0)
    risks = [0.02, 0.05, 0.08, 0.12, 0.2]
    budget = Budget("u", 0.1, "")
    for correction in ("bonferroni", "fixed_sequence"):
        bad = 0
        for _ in range(400):
            losses = [{"u": (rng.random(150) < r).astype(float)} for r in risks]
            cert = certify(losses, [budget], delta=0.1, correction=correction, order=[0, 1, 2, 3, 4])
            bad += any(c and r > 0.1 for c, r in zip(cert.certified, risks, strict=True))
            assert not cert.certified[4]
        assert bad / 400 <= 0.1, correction
    cert = certify([{"u": np.zeros(150)}], [budget], delta=0.1)
    assert cert.certified == [True] and cert.risks == [{"u": 0.0}]


def test_empirical_check_counts_picks_that_break_the_budget_on_the_pool():
    """Fixed losses on a pool of 400 rows, a pick that prefers the riskiest certified candidate: the split check
    finds picks, and the pick's pool risk is above the level in at most delta of the splits."""
    from unlearn.sweeping import BudgetSpec, empirical_check

    rng = np.random.default_rng(1)
    risks = [0.05, 0.13, 0.2, 0.3]
    per_row = [{"u": (rng.random(400) < r).astype(float)} for r in risks]
    spec = BudgetSpec("u", "retain_probability", "retain", 0.15, max_drop=0.15)
    budget = Budget("u", 0.15, "")

    def run(cal):
        return certify([{"u": c["u"][cal["retain"]]} for c in per_row], [budget], 0.1, "fixed_sequence", [0, 1, 2, 3])

    def best(cert):
        ok = [j for j, c in enumerate(cert.certified) if c]
        return max(ok) if ok else None

    out = empirical_check(per_row, [spec], run, best, {"retain": 400}, splits=200, fraction=0.5, seed=0, delta=0.1)
    assert out["certified_a_pick"] >= 150  # risk 0.05 on 200 calibration rows is certifiable nearly always
    pool = [float(c["u"].mean()) for c in per_row]
    assert pool[0] < 0.15 < pool[2]
    assert out["pool_violation_rate"] <= 0.1
    assert 0 <= out["violations"] <= out["certified_a_pick"] <= 200


def test_risk_check_script_on_known_scores():
    """benchmarks/risk_check.py's check on scores with known utility drops: the safe candidate is picked when
    certifiable, the one over the level never more than delta of the time, and the report names both."""
    import risk_check

    rng = np.random.default_rng(0)
    target = rng.uniform(0.3, 0.9, 300)
    scored = {"target": {"pool": target, "suite_rows": target[:40], "forget_quality": 0.0, "model_utility": 0.4}}
    for name, drop, fq in (("safe", 0.02, 0.2), ("risky", 0.3, 0.9)):
        pool = target * (1 - drop * rng.uniform(0.5, 1.5, 300))
        scored[name] = {"pool": pool, "suite_rows": pool[:40], "forget_quality": fq, "model_utility": 0.4}
    out = risk_check.check(scored, [0.1], [20, 150], delta=0.1, splits=100)
    by = {c["entry"]: c for c in out["candidates"]}
    assert by["safe"]["pool_risk"] < 0.1 < by["risky"]["pool_risk"]
    small, large = out["runs"]
    assert large["above_level"] == ["risky"] and large["picks"] == {"safe": large["certified_a_pick"]}
    assert large["certified_a_pick"] >= 90 and large["pool_violation_rate"] == 0.0
    assert small["certified_a_pick"] <= large["certified_a_pick"]
    text = risk_check.markdown(out, "python benchmarks/risk_check.py", 40)
    assert "| safe |" in text and "| 0.1 | 150 |" in text


def test_shipped_sweeps_load(monkeypatch):
    monkeypatch.setenv("UNLEARN_TOFU_DIR", str(TOFU_DIR))
    files = sorted((ROOT / "benchmarks" / "sweeps").glob("*.yaml"))
    assert files
    for path in files:
        s = load_sweep(path)
        assert s.budgets and s.objectives and s.n_trials >= 1, path


def test_a_trial_killed_before_its_first_heartbeat_is_marked_failed(tmp_path):
    """Optuna counts a RUNNING trial stale only once it has a heartbeat; a worker killed between asking for a trial
    and its first heartbeat left it RUNNING for ever, and the other workers waited on it (seen as a hang of the
    killed-worker test above). Past the grace period, a RUNNING trial that never reached the objective fails."""
    from optuna.trial import TrialState

    from unlearn.sweeping import _fail_abandoned

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="s")
    orphan, working = study.ask(), study.ask()  # `ask` records no heartbeat
    working.set_user_attr("entry", "trial-0001")  # reached the objective: its heartbeat is Optuna's to judge
    _fail_abandoned(study, grace_s=1)
    assert {t.state for t in study.get_trials()} == {TrialState.RUNNING}  # within the grace period: left alone
    time.sleep(1.5)
    _fail_abandoned(study, grace_s=1)
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {orphan.number: TrialState.FAIL, working.number: TrialState.RUNNING}
