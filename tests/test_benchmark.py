"""`unlearn benchmark` on the tiny model: the protocol end to end, its cache (nothing redone, a changed setting
redoes only what it changes, an interrupted run continues), and the refusals that come before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TOFU_DIR

import unlearn
from unlearn import UnlearnError
from unlearn.benchmarking import load_protocol

N_FORGET, N_RETAIN = 8, 16


@pytest.fixture
def tofu_env(monkeypatch):
    monkeypatch.setenv("UNLEARN_TOFU_DIR", str(TOFU_DIR))


def tiny_protocol(model_dir, **changes):
    """TOFU forget01's first 8 rows and retain90's first 16 (which hold retain_perturbed's first 8, the suite's
    utility rows), on the tiny base; settings under which the tiny model learns and forgets in seconds."""
    protocol = {
        "name": "tiny",
        "model": str(model_dir),
        "data": {
            "forget": {"path": "tofu:forget01", "limit": N_FORGET},
            "retain": {"path": "tofu:retain90", "limit": N_RETAIN},
        },
        "finetune": {
            "learning_rate": 3e-3,
            "num_train_epochs": 40,
            "per_device_train_batch_size": 8,
            "max_length": 128,
            "save_strategy": "no",
        },
        "suite": "tofu",
        "suite_params": {"forget_split": "forget01", "limit": N_FORGET},
        "skip": ["general_perplexity"],
        "eval": {"max_new_tokens": 12},
        "defaults": {"num_train_epochs": 4, "max_length": 128, "save_strategy": "no"},
        "entries": [
            {"recipe": "ga", "settings": {"learning_rate": 5e-3}},
            {"recipe": "graddiff", "settings": {"learning_rate": 5e-3}},
        ],
        "attacks": {"relearn": {"steps": 4, "eval_every": 2, "learning_rate": 3e-3}, "quantize": {"bits": [4]}},
    }
    protocol.update(changes)
    return protocol


def test_benchmark_table_cache_and_changed_setting(tiny_init_dir, tofu_env, tmp_path, monkeypatch):
    from unlearn.models import resolve_model

    monkeypatch.setenv("UNLEARN_BENCHMARK_DIR", str(tmp_path))
    with pytest.raises(UnlearnError, match="not built yet.*unlearn benchmark benchmarks/protocols/tiny.yaml --only"):
        resolve_model("benchmark:tiny/target")
    out = tmp_path / "tiny"
    results = unlearn.benchmark(tiny_protocol(tiny_init_dir), out=out)
    assert resolve_model("benchmark:tiny/target") == str(out / "target" / "model")  # what recipes/*.yaml name
    rows = {r["name"]: r for r in results["rows"]}
    assert [r["name"] for r in results["rows"]][:2] == ["target", "retain"]
    assert results["sanity"]["passed"]
    target, retain = rows["target"], rows["retain"]
    assert target["forget_probability"] > retain["forget_probability"] + 0.1  # the target learned the forget set
    assert target["forget_quality"] < 0.05 and retain["forget_quality"] == pytest.approx(1.0)
    assert rows["ga-learning_rate=0.005"]["forget_quality"] > 0.05 > target["forget_quality"]
    for name in ("ga-learning_rate=0.005", "graddiff-learning_rate=0.005"):
        row = rows[name]
        assert row["forget_probability"] < target["forget_probability"] / 2  # unlearning lowered it
        assert row["minutes"] > 0 and row["peak_gb"] > 0 and row["steps"] == 8
        for attack in ("relearn", "quantize"):
            assert isinstance(row[attack], float)
        curve = row["attacks"]["relearn"]["details"]
        assert curve["steps"] == [0, 2, 4] and len(curve["baseline_curve"]) == 3
        # the retain model's relearning, computed once for all entries
        assert curve["baseline_curve"] == results["rows"][2]["attacks"]["relearn"]["details"]["baseline_curve"]
    assert any(r.get("pareto") for r in results["rows"])
    text = (out / "RESULTS.md").read_text()
    assert "| target " in text and "| ga-learning_rate=0.005" in text and "Sanity: " in text
    for png in ("tradeoff.png", "relearn_curves.png"):
        assert (out / png).stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())["rows"][0]["name"] == "target"
    # relearn trained on half the forget rows and measured the other half
    assert rows["ga-learning_rate=0.005"]["attacks"]["relearn"]["details"]["measured_on"] == N_FORGET // 2

    again = unlearn.benchmark(tiny_protocol(tiny_init_dir), out=out)
    assert "attacks/relearn-baseline" in results["ran_now"]
    assert again["ran_now"] == []  # every step cached
    assert again["rows"][2]["forget_quality"] == results["rows"][2]["forget_quality"]

    changed = tiny_protocol(tiny_init_dir)
    changed["entries"][1]["settings"]["learning_rate"] = 1e-3
    changed["attacks"]["quantize"] = {"bits": [8]}
    third = unlearn.benchmark(changed, out=out)
    assert sorted(third["ran_now"]) == sorted(
        [
            "entries/ga-learning_rate=0.005/attack-quantize",
            "entries/graddiff-learning_rate=0.001/train",
            "entries/graddiff-learning_rate=0.001/eval",
            "entries/graddiff-learning_rate=0.001/attack-relearn",
            "entries/graddiff-learning_rate=0.001/attack-quantize",
        ]
    )


def test_interrupted_benchmark_continues_where_it_stopped(tiny_init_dir, tofu_env, tmp_path, monkeypatch):
    from unlearn.benchmarking import runner

    protocol = tiny_protocol(
        tiny_init_dir,
        entries=[{"recipe": "ga", "settings": {"learning_rate": 5e-3}}],
        attacks={"relearn": {"steps": 2, "eval_every": 1}},
    )
    real = runner._attack_step

    def failing(*args, **kwargs):
        def fn(d):
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the attack

        return fn

    monkeypatch.setattr(runner, "_attack_step", failing)
    with pytest.raises(KeyboardInterrupt):
        unlearn.benchmark(protocol, out=tmp_path)
    assert (tmp_path / "entries/ga-learning_rate=0.005/train/STEP.json").is_file()
    assert not (tmp_path / "RESULTS.md").exists()
    monkeypatch.setattr(runner, "_attack_step", real)
    results = unlearn.benchmark(protocol, out=tmp_path)
    assert results["ran_now"] == ["entries/ga-learning_rate=0.005/attack-relearn"]
    assert (tmp_path / "RESULTS.md").is_file()


def test_target_that_did_not_learn_is_refused_before_unlearning(tiny_init_dir, tofu_env, tmp_path):
    protocol = tiny_protocol(tiny_init_dir, finetune={"max_steps": 1, "learning_rate": 1e-6, "save_strategy": "no"})
    with pytest.raises(UnlearnError, match="did not learn the forget set.*num_train_epochs"):
        unlearn.benchmark(protocol, out=tmp_path)
    assert not (tmp_path / "entries").exists()
    assert not json.loads((tmp_path / "eval" / "sanity.json").read_text())["passed"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"entries": [{"recipe": "npoo"}]}, "Unknown recipe 'npoo'. Did you mean 'npo'"),
        ({"entries": [{"recipe": "npo", "settings": {"betta": 0.1}}]}, "entries\\[0\\].*betta.*Did you mean 'beta'"),
        ({"attacks": {"relearm": {}}}, "Unknown attack 'relearm'. Did you mean 'relearn'"),
        ({"attacks": {"relearn": {"step": 5}}}, "Unknown relearn option 'step'. Did you mean 'steps'"),
        ({"skip": ["forget_qualty"]}, "Unknown metric entry 'forget_qualty'"),
        ({"skip": ["model_utility"]}, "reads \\['model_utility'\\]"),
        (
            {"suite": "qa", "suite_params": {"path": "x.jsonl"}, "skip": []},
            "reads \\['forget_quality', 'model_utility'\\]",
        ),
        ({"entries": [{"recipe": "ga", "grid": {"learning_rate": 1e-3}}]}, "must be a non-empty list"),
        ({"select": {"utility_floor": 95}}, "utility_floor.*\\[0, 1\\]"),
        ({"finetune": {"learning_rat": 1e-5}}, "`finetune`.*Did you mean 'learning_rate'"),
        ({"evaluation": {}}, "Unknown protocol key 'evaluation'. Did you mean 'eval'"),
    ],
)
def test_bad_protocol_is_refused_when_read(tiny_init_dir, tofu_env, change, message):
    with pytest.raises(UnlearnError, match=message):
        load_protocol(tiny_protocol(tiny_init_dir, **change))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {
                "data": {
                    "forget": {"path": "tofu:forget01", "limit": 8},
                    "retain": {"path": "tofu:forget01", "start": 4},
                }
            },
            "shares 4 question\\(s\\) with `data.forget`.*forget01 pairs with retain99",
        ),
        ({"target": "some/model"}, "without what it was fine-tuned on.*trained_on"),
        (
            {"target": {"path": "some/model", "trained_on": "tofu:retain99"}},
            "8 of the 8 forget rows are not in what the target was trained on",
        ),
        (
            {"suite_params": {"forget_split": "forget05", "limit": 50}},
            "`forget` \\(tofu:forget05_perturbed\\) holds 42 question\\(s\\) that are not in `data.forget`",
        ),
    ],
)
def test_bad_data_is_refused_before_any_training(tiny_init_dir, tofu_env, tmp_path, change, message):
    with pytest.raises(UnlearnError, match=message):
        unlearn.benchmark(tiny_protocol(tiny_init_dir, **change), out=tmp_path)
    assert not (tmp_path / "target").exists() and not (tmp_path / "retain").exists()


def test_shipped_protocols_load(tofu_env):
    paths = sorted((ROOT / "benchmarks" / "protocols").glob("*.yaml"))
    assert {p.stem for p in paths} >= {"tofu_smollm2_cpu", "tofu_llama1b_gpu"}
    for path in paths:
        raw = yaml.safe_load(path.read_text())
        for section in ("finetune", "defaults"):  # GPU precision flags are refused on this CPU machine
            raw[section] = {k: v for k, v in raw.get(section, {}).items() if k not in ("bf16", "fp16")}
        protocol = load_protocol(raw)
        assert protocol.entries
        if path.stem in ("tofu_smollm2_cpu", "tofu_llama1b_gpu"):
            assert "relearn" in protocol.attacks and "quantize" in protocol.attacks
        assert protocol.data["forget"] and protocol.data["retain"]


def test_a_protocol_includes_another_and_replaces_what_it_names(tiny_init_dir, tofu_env, tmp_path):
    base = tiny_protocol(tiny_init_dir)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sub = tmp_path / "more" / "other.yaml"
    sub.parent.mkdir()
    sub.write_text(yaml.safe_dump({"include": "../base", "name": "other", "entries": ["npo"], "attacks": {}}))
    protocol = load_protocol(sub)
    expected = load_protocol({**base, "name": "other", "entries": ["npo"], "attacks": {}})
    assert protocol.to_dict() == expected.to_dict()
    assert [e.recipe for e in protocol.entries] == ["npo"] and protocol.data == expected.data

    shipped = load_protocol({"include": "tofu_smollm2_cpu", "name": "mine", "entries": ["ga"]})  # by name, from a dict
    assert shipped.model == "smollm2-135m" and shipped.name == "mine" and len(shipped.entries) == 1

    (tmp_path / "loop.yaml").write_text(yaml.safe_dump({"include": "loop2", "name": "a"}))
    (tmp_path / "loop2.yaml").write_text(yaml.safe_dump({"include": "loop.yaml", "name": "b"}))
    with pytest.raises(UnlearnError, match="includes itself"):
        load_protocol(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump({"include": "nowhere", "name": "c"}))
    with pytest.raises(UnlearnError, match="`nowhere` is neither a file in .* nor a shipped protocol"):
        load_protocol(tmp_path / "missing.yaml")


def test_extra_retain_rows_join_one_entrys_retain_set_never_the_suites_rows(
    tiny_init_dir, tofu_env, tmp_path, monkeypatch
):
    from unlearn.benchmarking.runner import check_data, entry_retain, materialize

    general = {"path": "tofu:real_authors_perturbed", "start": N_FORGET, "limit": 4, "answer_key": "original_answer"}
    extra = {"recipe": "ga", "name": "ga-general", "extra_retain": [general], "settings": {"learning_rate": 5e-3}}
    p = load_protocol(tiny_protocol(tiny_init_dir, entries=[{"recipe": "ga"}, extra]))
    data = materialize(p, tmp_path)
    check_data(p, data)
    plain, more = (entry_retain(e, data) for e in p.entries)
    assert plain is data["retain"]  # an entry without extra rows keeps the protocol's set (and its cached steps)
    assert more["rows"][:N_RETAIN] == data["retain"]["rows"] and len(more["rows"]) == N_RETAIN + 4
    authors = [json.loads(line) for line in (TOFU_DIR / "real_authors_perturbed.jsonl").read_text().splitlines()]
    assert more["rows"][N_RETAIN:] == [
        {"question": r["question"], "answer": r["original_answer"]} for r in authors[N_FORGET : N_FORGET + 4]
    ]
    assert more["fingerprint"] != plain["fingerprint"]
    assert [json.loads(line) for line in Path(more["path"]).read_text().splitlines()] == more["rows"]

    # `--only models` writes the entries' retain files too, for recipe files that unlearn from them
    import unlearn.benchmarking.runner as runner

    monkeypatch.setattr(runner, "build_models", lambda *_: {"target": "t", "retain": "r"})
    out = tmp_path / "only-models"
    assert unlearn.benchmark(p, out=out, only="models") == {"target": "t", "retain": "r"}
    assert (out / "data" / "retain-ga-general.jsonl").read_text() == Path(more["path"]).read_text()

    evaluated = {**extra, "extra_retain": {"path": "tofu:real_authors_perturbed", "limit": 4}}
    p = load_protocol(tiny_protocol(tiny_init_dir, entries=[evaluated]))
    with pytest.raises(
        UnlearnError, match="4 `extra_retain` question\\(s\\) are forget rows or rows the suite evaluates"
    ):
        check_data(p, materialize(p, tmp_path))
    with pytest.raises(UnlearnError, match="has `extra_retain`: give it a `name`"):
        load_protocol(tiny_protocol(tiny_init_dir, entries=[{"recipe": "ga", "extra_retain": general}]))


def test_cli_benchmark_refuses_bad_protocol(tmp_path, capsys):
    from unlearn.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "model": "m", "data": {"forget": "f"}, "entries": ["ga"]}))
    assert main(["benchmark", str(path)]) == 2
    assert "needs `data.retain`" in capsys.readouterr().err


def test_a_training_free_entry_runs_like_any_other(tiny_init_dir, tofu_env, tmp_path):
    """SSD's run is a sparse weight delta, not an adapter: the benchmark evaluates and attacks it the same way."""
    protocol = tiny_protocol(tiny_init_dir, entries=[{"recipe": "ssd", "settings": {"ssd_alpha": 10.0}}])
    results = unlearn.benchmark(protocol, out=tmp_path / "tiny")
    row = {r["name"]: r for r in results["rows"]}["ssd-ssd_alpha=10"]
    target = results["rows"][0]
    assert row["forget_probability"] < target["forget_probability"]
    assert isinstance(row["relearn"], float) and isinstance(row["quantize"], float)
    assert (tmp_path / "tiny/entries/ssd-ssd_alpha=10/train/run/sparse_delta.safetensors").is_file()
