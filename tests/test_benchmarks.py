"""Smoke test of `benchmarks/train_steps.py` on the tiny model: every figure is printed and written, positive and
consistent in structure. No timing is asserted (targets are printed PASS/MISS, never tested)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import unlearn

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TARGET_STATUSES = {"PASS", "MISS", "n/a"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "steps.json"
    proc = subprocess.run(
        # One thread: steady on a machine busy with other tests (~30 s there, mostly importing the libraries once).
        [
            sys.executable,
            "benchmarks/train_steps.py",
            "--model",
            "tiny",
            "--quick",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        # The limit only guards against a hang: a machine busy with other work takes minutes, not the ~30 s here.
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_every_recipe_is_measured_or_skipped_with_a_reason(quick_run):
    _, report = quick_run
    measured = {r["recipe"] for r in report["steps"]}
    assert {"bare", "sft", "npo-per-step"} <= measured
    for name in unlearn.RECIPES:
        assert name in measured or report["skipped"].get(name), name
    assert not report["errors"]


@pytest.mark.slow
def test_step_figures_are_positive_and_consistent(quick_run):
    _, report = quick_run
    settings = report["settings"]
    assert report["machine"]["matmul_peak"][0]["flops"] > 0 and report["machine"]["threads"] >= 1
    by_label = {r["label"]: r for r in report["steps"]}
    for r in report["steps"]:
        assert r["seq_len"] == settings["seq_len"] and r["batch_size"] == settings["batch_size"]
        assert len(r["step_s"]) == settings["steps"] and all(t > 0 for t in r["step_s"])
        assert r["s_per_step"] > 0 and r["tokens_per_s"] > 0 and r["peak_rss"] > 0 and r["once_s"] > 0
        # RMU's backward stops at the steered layer: the model-FLOPs count does not apply, and none is given.
        assert (r["achieved_flops"] is None) if r["recipe"] == "rmu" else (r["achieved_flops"] > 0)
        assert r["tokens_per_step"] == r["rows_per_step"] * r["seq_len"]
        assert r["answer_tokens_per_row"] > 0
    batch = settings["batch_size"]
    assert by_label["sft"]["rows_per_step"] == by_label["ga"]["rows_per_step"] == batch
    # retain_ratio 1 for the targets, 2 (the library default) beside it: 2x and 3x the forget rows in one pass.
    for name in ("graddiff", "simnpo", "npo"):
        assert by_label[f"{name} r=1"]["rows_per_step"] == 2 * batch
        assert by_label[f"{name} r=2"]["rows_per_step"] == 3 * batch
    assert report["baseline_drift"] > 0 and by_label["sft again"]["recipe"] == "sft"
    npo = report["npo_reference"]
    assert npo["reference_pass_s"] > 0 and npo["cached_s_per_step"] > 0 and npo["per_step_over_cached"] > 0
    assert by_label["npo no-retain"]["reference_s"] > 0
    assert by_label["npo no-retain ref/step"]["reference_s"] is None  # no pass over the whole forget set


@pytest.mark.slow
def test_sweeps_and_targets(quick_run):
    stdout, report = quick_run
    sizes = report["forget_size"]
    assert sizes["rows"] == sorted(sizes["rows"]) and len(sizes["rows"]) >= 3
    assert all(t > 0 for t in sizes["epoch_s"]) and all(t > 0 for t in sizes["s_per_row"])
    assert {"intercept_s", "s_per_row", "r2"} <= set(sizes["fit"])
    lengths = [r["seq_len"] for r in report["seq_len"]["runs"]]
    assert len(lengths) >= 3 and all(r["s_per_step"] > 0 for r in report["seq_len"]["runs"])
    assert len(report["targets"]) == 6 and {t["status"] for t in report["targets"]} <= TARGET_STATUSES
    rss = next(t for t in report["targets"] if "RSS" in t["target"])
    assert rss["status"] == "n/a"  # the memory target is SmolLM2's, at batch 4 x 256
    for heading in (
        "machine",
        "peak",
        "per optimizer step",
        "NPO reference",
        "forget-set size",
        "sequence length",
        "targets",
    ):
        assert heading in stdout, heading
    for t in report["targets"]:
        assert t["status"] in stdout


def test_import_version_and_recipes_load_no_training_stack():
    """`import unlearn`, `unlearn --version` and `unlearn recipes` import neither torch nor transformers (the start-up figures are
    benchmarks/startup.py's; what is tested here is the cause of a slow start-up, not a time)."""
    code = (
        "import sys, io, contextlib, unlearn, unlearn.cli; unlearn.cli.build_parser(); "
        "contextlib.redirect_stdout(io.StringIO()).__enter__(); unlearn.cli.main(['recipes']); "
        "heavy = sorted({'torch', 'transformers', 'peft', 'trl', 'sae_lens'} & set(sys.modules)); print(heavy, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr[-2000:]


@pytest.mark.slow
def test_startup_benchmark_prints_every_command(tmp_path):
    out = tmp_path / "startup.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/startup.py", "--repeat", "1", "--json", str(out)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["commands"]) >= {"python -c pass", "unlearn --version", "unlearn recipes"}
    for name, row in report["commands"].items():
        assert 0 < row["min_s"] <= row["median_s"] <= row["max_s"], name
        assert name in proc.stdout


@pytest.mark.slow
def test_evaluation_benchmarks_run_on_the_tiny_model(tiny_model_dir, tmp_path):
    """`eval_throughput.py` (ours against the bare forward and plain `generate`, same run) and `eval_profile.py`
    (the evaluation's time by stage) print every figure; they are run here so that they keep working."""
    tofu = str(ROOT.parent / "shared" / "data" / "tofu")
    env = {**ENV, "UNLEARN_TOFU_DIR": os.environ.get("UNLEARN_TOFU_DIR", tofu)}
    common = {"cwd": ROOT, "env": env, "capture_output": True, "text": True, "timeout": 600}
    throughput = subprocess.run(
        [sys.executable, "benchmarks/eval_throughput.py", "--model", str(tiny_model_dir), "--rows", "2"]
        + ["--generation-rows", "6", "--max-new-tokens", "8", "--repeats", "1", "--generation-batch-size", "4"],
        **common,
    )
    assert throughput.returncode == 0, throughput.stderr[-3000:]
    lines = throughput.stdout.splitlines()
    assert any(line.startswith("likelihood  bare forward") and "ratio" in line for line in lines)
    generation = [line for line in lines if "greedy_answers (batch" in line]
    assert len(generation) == 2 and all("identical answers" in line for line in generation)
    out = tmp_path / "profile.json"
    profile = subprocess.run(
        [sys.executable, "benchmarks/eval_profile.py", "--model", str(tiny_model_dir), "--limit", "3"]
        + ["--max-new-tokens", "8", "--json", str(out)],
        **common,
    )
    assert profile.returncode == 0, profile.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["wall_s"] > 0 and figures["stages"]["greedy generation (greedy_answers)"] > 0
    assert 0 <= figures["metrics"]["forget_probability"] <= 1
