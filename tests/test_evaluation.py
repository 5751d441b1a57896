"""The evaluation package end to end on the tiny model: suites, the TOFU protocol, references, logs, resume."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TOFU_DIR
from transformers import AutoModelForCausalLM, AutoTokenizer

import unlearn
from unlearn import UnlearnError
from unlearn.evaluation import load_suite
from unlearn.evaluation import runner as runner_mod

QUICK = {"forget_split": "forget01", "limit": 8, "max_new_tokens": 24}


@pytest.fixture(autouse=True)
def _local_tofu(monkeypatch):
    monkeypatch.setenv("UNLEARN_TOFU_DIR", str(TOFU_DIR))


@pytest.fixture(scope="module")
def protocol(tiny_init_dir, tiny_model_dir, tofu_rows, tmp_path_factory):
    """TOFU protocol on the tiny model: the target (trained on forget + retain) and two retain-only models trained
    from the same initialization with different seeds; the first is the reference."""
    import os

    os.environ["UNLEARN_TOFU_DIR"] = str(TOFU_DIR)
    dirs = {"target": tiny_model_dir}
    for name, seed in (("reference", 0), ("retain2", 1)):
        model, tok = AutoModelForCausalLM.from_pretrained(tiny_init_dir), AutoTokenizer.from_pretrained(tiny_init_dir)
        out = tmp_path_factory.mktemp(name)
        unlearn.finetune(
            model,
            tok,
            tofu_rows["retain"],
            output_dir=out / "model",
            learning_rate=3e-3,
            num_train_epochs=40,
            seed=seed,
            disable_tqdm=True,
            logging_steps=50,
        )
        dirs[name] = out / "model"
    ref_model, ref_tok = (
        AutoModelForCausalLM.from_pretrained(dirs["reference"]),
        AutoTokenizer.from_pretrained(dirs["reference"]),
    )
    ref_out = tmp_path_factory.mktemp("reference-eval")
    unlearn.evaluate(ref_model, ref_tok, suite="tofu", out=ref_out, skip=["forget_quality"], **QUICK)
    return dirs, ref_out


def _load(path):
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_tofu_protocol_forget_quality(protocol, tmp_path):
    dirs, ref = protocol
    target = unlearn.evaluate(*_load(dirs["target"]), suite="tofu", reference=ref, out=tmp_path / "t", **QUICK)
    retain2 = unlearn.evaluate(*_load(dirs["retain2"]), suite="tofu", reference=ref, out=tmp_path / "r", **QUICK)
    # The target knows the forget set, the retain-only models do not: their truth ratios differ.
    assert target["forget_quality"] < 0.01, target["forget_quality"]
    assert retain2["forget_quality"] > 0.1, retain2["forget_quality"]
    assert target["forget_probability"] > retain2["forget_probability"] + 0.3
    # Outputs: per-sample log with generations, summary, report with the truth-ratio plot.
    log = json.loads((tmp_path / "t" / "EVAL.json").read_text())
    assert len(log["forget_truth_ratio"]["value_by_index"]) == 8
    first = log["forget_rouge"]["value_by_index"]["0"]
    assert {"score", "input", "ground_truth", "generation"} <= set(first)
    summary = json.loads((tmp_path / "t" / "SUMMARY.json").read_text())
    assert summary["metrics"]["forget_quality"] == target["forget_quality"]
    assert len(summary["data_fingerprints"]) == 5 and summary["model_fingerprint"]
    assert (tmp_path / "t" / "truth_ratio.png").stat().st_size > 1000
    assert "forget_quality" in (tmp_path / "t" / "report.md").read_text()
    # Model utility is the harmonic mean of its nine components.
    comps = log["model_utility"]["components"]
    assert len(comps) == 9
    expected = 0.0 if min(comps.values()) == 0 else 9 / sum(1 / v for v in comps.values())
    assert target["model_utility"] == pytest.approx(expected)
    # unlearn compare draws the trade-off and marks the Pareto front
    out = unlearn.compare([str(tmp_path / "t"), str(tmp_path / "r")], tmp_path / "cmp")
    assert (out / "compare.png").is_file() and "Pareto" in (out / "compare.md").read_text()


def test_missing_reference_fails_before_scoring(tiny, monkeypatch):
    monkeypatch.setattr(runner_mod, "row_stats", lambda *a, **k: pytest.fail("scored before checking the reference"))
    with pytest.raises(UnlearnError, match="forget_quality.*no `reference`.*unlearn reference.*--skip forget_quality"):
        unlearn.evaluate(*tiny, suite="tofu", **QUICK)


def test_open_unlearning_logs_are_accepted_as_reference(tiny, tmp_path):
    ou = {
        "forget_truth_ratio": {
            "agg_value": 0.6,
            "value_by_index": {str(i): {"score": 0.9 + i / 100} for i in range(8)},
        },
        "forget_quality": {"agg_value": None},
    }
    (tmp_path / "TOFU_EVAL.json").write_text(json.dumps(ou))
    result = unlearn.evaluate(*tiny, suite="tofu", reference=tmp_path, **QUICK)
    assert 0.0 <= result["forget_quality"] <= 1.0
    assert result.metrics["forget_quality"].extra["reference_samples"] == 8


def test_each_dataset_is_scored_once_in_shared_batches(tiny, monkeypatch):
    calls = []
    real = runner_mod.row_stats

    def counting(model, examples, pad_token_id, batch_size=8):
        calls.append(len(examples))
        return real(model, examples, pad_token_id, batch_size)

    monkeypatch.setattr(runner_mod, "row_stats", counting)
    gens = []
    real_gen = runner_mod.greedy_answers
    monkeypatch.setattr(
        runner_mod, "greedy_answers", lambda m, t, q, *a, **k: gens.append(len(q)) or real_gen(m, t, q, *a, **k)
    )
    unlearn.evaluate(*tiny, suite="tofu", skip=["forget_quality"], **QUICK)
    # forget/retain: 8 answers + 8 paraphrased + 40 perturbed in one call; real/world: 8 + 8 + 24; general: 8
    assert sorted(calls) == sorted([56, 56, 40, 40, 8])
    assert gens == [8, 8, 8, 8]


def test_evaluation_resumes_from_finished_datasets(tiny, tmp_path, monkeypatch):
    out = tmp_path / "ev"
    first = unlearn.evaluate(*tiny, suite="tofu", skip=["forget_quality"], out=out, **QUICK)
    assert len(list((out / ".partial").glob("*.pkl"))) == 5
    monkeypatch.setattr(runner_mod, "row_stats", lambda *a, **k: pytest.fail("rescored a finished dataset"))
    monkeypatch.setattr(runner_mod, "greedy_answers", lambda *a, **k: pytest.fail("regenerated"))
    again = unlearn.evaluate(*tiny, suite="tofu", skip=["forget_quality"], out=out, **QUICK)
    assert again.summary() == first.summary()


def test_changed_model_is_rescored(tiny, tmp_path):
    model, tok = tiny
    out = tmp_path / "ev"
    a = unlearn.evaluate(model, tok, suite="qa", path=str(TOFU_DIR / "forget01.jsonl"), limit=4, out=out)
    with torch.no_grad():
        model.lm_head.weight.mul_(0.5)
    b = unlearn.evaluate(model, tok, suite="qa", path=str(TOFU_DIR / "forget01.jsonl"), limit=4, out=out)
    assert a["probability"] != b["probability"]


def test_suites_compose_and_validate(tmp_path):
    s = load_suite("tofu_forget05")
    assert s["params"]["forget_split"] == "forget05" and s["datasets"]["forget"]["path"] == "tofu:forget05_perturbed"
    assert "model_utility" in s["metrics"]
    mine = tmp_path / "mine.yaml"
    mine.write_text("include: tofu.yaml\nmetrics:\n  extra: {metric: probabilty, data: forget}\n")
    with pytest.raises(UnlearnError, match="Unknown metric 'probabilty'. Did you mean 'probability'"):
        load_suite(mine)
    with pytest.raises(UnlearnError, match="Unknown evaluation suite 'tofoo'"):
        load_suite("tofoo")
    with pytest.raises(UnlearnError, match="needs parameter.*path"):
        load_suite("qa")
    with pytest.raises(UnlearnError, match="has no parameter.*forget_splt"):
        load_suite("tofu", forget_splt="forget01")


def test_dataset_start_and_limit_slice_the_rows(tiny, tmp_path):
    """A suite dataset's `start` skips rows before `limit` counts them: rows 4-7 of a file, scored as such."""
    model, tok = tiny
    src = TOFU_DIR / "forget01.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    suite = tmp_path / "sliced.yaml"
    suite.write_text(
        f"datasets:\n  d: {{path: {src}, start: 4, limit: 4}}\nmetrics:\n  p: {{metric: probability, data: d}}\n"
    )
    sliced = unlearn.evaluate(model, tok, suite=suite, out=tmp_path / "a")
    (tmp_path / "part.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[4:8]))
    direct = unlearn.evaluate(model, tok, suite="qa", path=str(tmp_path / "part.jsonl"), out=tmp_path / "b")
    assert len(sliced.metrics["p"].values) == 4
    assert sliced["p"] == pytest.approx(direct["probability"])
    suite.write_text(
        f"datasets:\n  d: {{path: {src}, start: {len(rows)}}}\nmetrics:\n  p: {{metric: probability, data: d}}\n"
    )
    with pytest.raises(UnlearnError, match=f"has {len(rows)} rows; `start: {len(rows)}` leaves none"):
        unlearn.evaluate(model, tok, suite=suite)


def test_raw_text_suite_with_membership_inference(tiny, tmp_path, tofu_rows):
    from conftest import read_jsonl

    forget = tmp_path / "forget.jsonl"
    holdout = tmp_path / "holdout.jsonl"
    forget.write_text("".join(json.dumps({"text": r["answer"]}) + "\n" for r in tofu_rows["forget"]))
    holdout.write_text("".join(json.dumps({"text": r["answer"]}) + "\n" for r in read_jsonl("retain99", 400)[300:308]))
    model, tok = tiny
    result = unlearn.evaluate(
        model,
        tok,
        suite="muse",
        forget_text=str(forget),
        holdout_text=str(holdout),
        prefix_tokens=8,
        skip=["privleak"],
        max_new_tokens=16,
    )
    # The target memorized the forget texts and never saw the holdout: every attack separates them.
    for name in ("mia_min_k", "mia_min_k_plus_plus", "mia_zlib"):
        assert result[name] > 0.9, (name, result[name])
    assert result["verbatim_memorization"] > 0.2  # measured 0.29: the answers were learned after a question, not alone
    assert result["general_perplexity"] > 1.0


def test_cli_eval_accepts_an_adapter_directory(tiny_model_dir, data_files, tmp_path):
    from test_cli import unlearn_cli, write_config

    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, data_files, tmp_path / "run", num_train_epochs=1)
    unlearn_cli("forget", cfg)
    proc = unlearn_cli(
        "eval",
        tmp_path / "run",
        "--suite",
        "qa",
        "--param",
        f"path={data_files['forget']}",
        "--out",
        tmp_path / "ev",
        "--max-new-tokens",
        "8",
    )
    assert "| probability | forget |" in proc.stdout
    summary = json.loads((tmp_path / "ev" / "SUMMARY.json").read_text())
    assert set(summary["metrics"]) == {"probability", "rouge", "exact_memorization", "extraction_strength", "fluency"}


@pytest.mark.slow
def test_cli_reference_then_eval_with_it(tiny_init_dir, tiny_model_dir, data_files, tmp_path, monkeypatch):
    import test_cli

    monkeypatch.setitem(test_cli.ENV, "UNLEARN_TOFU_DIR", str(TOFU_DIR))
    refs, quick = (
        tmp_path / "refs",
        ["--suite", "tofu", "--forget-split", "forget01", "--param", "limit=4", "--max-new-tokens", "8"],
    )
    test_cli.unlearn_cli(
        "reference",
        "--model",
        tiny_init_dir,
        "--retain",
        data_files["retain"],
        "--out",
        refs,
        *quick,
        "num_train_epochs=2",
        "learning_rate=3e-3",
        "disable_tqdm=true",
    )
    assert (refs / "retain_model" / "run.json").is_file() and "forget_quality" not in json.loads(
        (refs / "EVAL.json").read_text()
    )
    no_ref = test_cli.unlearn_cli("eval", tiny_model_dir, *quick, "--out", tmp_path / "x", check=False)
    assert no_ref.returncode == 2 and "unlearn reference" in no_ref.stderr
    test_cli.unlearn_cli("eval", tiny_model_dir, *quick, "--reference", refs, "--out", tmp_path / "ev")
    assert "forget_quality" in json.loads((tmp_path / "ev" / "SUMMARY.json").read_text())["metrics"]


def test_lm_eval_harness_on_a_tiny_local_task(tiny, tofu_rows, tmp_path):
    pytest.importorskip("lm_eval", reason="optional extra: pip install 'unlearn-toolkit[lm-eval]'")
    rows = [
        {"question": r["question"], "choices": [r["answer"], "I have no idea who that is."], "label": 0}
        for r in tofu_rows["forget"]
    ]
    (tmp_path / "tiny_mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_mc.yaml").write_text(
        "task: unlearn_tiny_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'tiny_mc.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    suite = tmp_path / "bench.yaml"
    suite.write_text("metrics:\n  tiny_mc: {metric: lm_eval, tasks: [unlearn_tiny_mc], include_path: ./tasks}\n")
    result = unlearn.evaluate(*tiny, suite=suite)
    # The target model was trained on these answers: it picks them over the distractor.
    assert result["tiny_mc"] == 1.0
    assert result.metrics["tiny_mc"].extra["tasks"]["unlearn_tiny_mc"]["acc,none"] == 1.0


def test_shared_prompt_scoring_matches_separate_passes(tiny, tofu_rows):
    """A question's answer, paraphrase and perturbed answers share one pass over the prompt (its cache repeated);
    every statistic equals the one from separate full passes, duplicates included, adapter or not."""
    import numpy as np
    from peft import LoraConfig, get_peft_model

    from unlearn.data import load_records, tokenize
    from unlearn.scoring import row_stats

    model, tok = tiny
    rows = []
    for r in tofu_rows["forget"][:3]:
        rows += [{"question": r["question"], "answer": a} for a in (r["answer"], r["answer"][::-1], "I don't know.")]
    rows += [rows[0], {"question": "An unshared question?", "answer": "Its only answer."}]
    examples = tokenize(load_records(rows), tok, "qa", 256, "question", "answer", "text")
    for wrap in (False, True):
        if wrap:  # an adapter with non-zero weights, so that it changes the scores
            model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        plain = row_stats(model, examples, tok.pad_token_id, batch_size=4, share_prompts=False)
        # batch 2: a prompt's rows cut over two passes; batch 8: prompts of different lengths packed (left-padded)
        for batch_size in (2, 8):
            shared = row_stats(model, examples, tok.pad_token_id, batch_size=batch_size, share_prompts=True)
            for a, b in zip(plain, shared, strict=True):
                assert a.n_tokens == b.n_tokens and (a.argmax_match == b.argmax_match).all()
                for field in ("token_logps", "mu", "sigma"):
                    np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=1e-4)
                assert abs(a.nll - b.nll) < 1e-4
    assert shared[-2] is shared[0]  # the duplicate row was scored once


def test_greedy_decode_drops_ended_rows_and_matches_generate(tiny, tofu_rows):
    """The evaluation's own greedy loop gives `generate`'s tokens, rows ending at different steps (a common token
    made the stop token so that they do), and `greedy_answers` returns them in input order."""
    from collections import Counter

    from unlearn.data import format_qa
    from unlearn.scoring import _generate, greedy_answers, greedy_decode, left_pad

    model, tok = tiny
    model.eval()
    questions = [r["question"] for r in tofu_rows["forget"] + tofu_rows["retain"][:4]]
    prompts = [tok(format_qa(tok, q, "")[0], add_special_tokens=False)["input_ids"] for q in questions]
    free = _generate(model, prompts, 20, tok.pad_token_id, "cpu")
    stop = Counter(t for row in free for t in row[1:10]).most_common(1)[0][0]
    ids, mask = left_pad(prompts, tok.pad_token_id)
    with torch.no_grad():
        theirs = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=20,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=stop,
        )[:, ids.shape[1] :].tolist()
    ours = greedy_decode(model, prompts, 20, {stop}, tok.pad_token_id, "cpu")
    lengths = set()
    for mine, row in zip(ours, theirs, strict=True):
        end = row.index(stop) + 1 if stop in row else len(row)
        assert mine == row[:end]
        lengths.add(len(mine))
    assert len(lengths) >= 3  # rows ended at different steps, and were dropped from the batch as they did
    # greedy_answers batches by prompt length and answers in input order, the same text as generate's
    expected = [tok.decode(t, skip_special_tokens=True).strip() for t in free]
    assert greedy_answers(model, tok, questions, 20, batch_size=3) == expected


def test_sampled_answers_are_seeded_and_leave_the_global_random_state(tiny, tofu_rows):
    """Draws repeat for the same seed and differ for another, on the own loop and through `generate`; the global
    random state is untouched; at a temperature near 0 every draw is the greedy answer."""
    from unlearn.scoring import _generate, greedy_answers, sampled_answers

    model, tok = tiny
    questions = [r["question"] for r in tofu_rows["forget"][:3]]
    state = torch.get_rng_state()
    drawn = sampled_answers(model, tok, questions, samples=4, temperature=1.0, seed=1, max_new_tokens=12)
    assert torch.equal(torch.get_rng_state(), state)
    assert [len(d) for d in drawn] == [4, 4, 4]
    assert drawn == sampled_answers(model, tok, questions, samples=4, temperature=1.0, seed=1, max_new_tokens=12)
    assert drawn != sampled_answers(model, tok, questions, samples=4, temperature=1.0, seed=2, max_new_tokens=12)
    greedy = greedy_answers(model, tok, questions, max_new_tokens=12)
    cold = sampled_answers(model, tok, questions, samples=2, temperature=1e-4, seed=1, max_new_tokens=12)
    assert cold == [[g, g] for g in greedy]
    # the `generate` path (models without a cache, or a generation config of its own) is seeded the same way
    prompts = [tok(q)["input_ids"] for q in questions]
    runs = [
        _generate(model, prompts, 8, tok.pad_token_id, "cpu", 1.0, torch.Generator().manual_seed(seed))
        for seed in (3, 3, 4)
    ]
    assert runs[0] == runs[1] != runs[2] and torch.equal(torch.get_rng_state(), state)
