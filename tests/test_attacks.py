"""Attacks on the tiny model: each runs end to end, and each detects recovery in a case constructed to have it."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import read_jsonl, train_tiny
from transformers import AutoModelForCausalLM, AutoTokenizer

import unlearn
from unlearn import UnlearnError
from unlearn.attacks.common import prompts_for
from unlearn.data import load_records, pad_rows, tokenize
from unlearn.logprobs import sequence_logps

N_FORGET = 16


@pytest.fixture(scope="module")
def target(tiny_init_dir):
    """The tiny base fine-tuned on 16 TOFU forget rows (with perturbed answers) and 16 retain rows."""
    torch.manual_seed(0)
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_init_dir), AutoTokenizer.from_pretrained(tiny_init_dir)
    forget = read_jsonl("forget01_perturbed", N_FORGET)
    train_tiny(
        model,
        tok,
        [{"question": r["question"], "answer": r["answer"]} for r in forget] + read_jsonl("retain99", 16),
        steps=120,
    )
    return model, tok, forget


def _ga_adapter(target, **kw):
    model, tok, forget = target
    return unlearn.forget(copy.deepcopy(model), tok, forget, recipe="ga", disable_tqdm=True, **kw)


def _prompt_filter(target):
    """A constructed "unlearned" model that refuses only the literal forget prompts (uniform next-token
    distribution whenever a row starts with one): knowledge intact, access blocked by string match."""
    model, tok, forget = target
    filtered = copy.deepcopy(model)
    blocked = [tok(p)["input_ids"] for p in prompts_for(tok, [r["question"] for r in forget])]

    def hook(module, args, kwargs, output):
        for b, row in enumerate(kwargs["input_ids"].tolist()):
            if any(row[: len(x)] == x for x in blocked):
                output.logits[b] = 0.0
        return output

    filtered.register_forward_hook(hook, with_kwargs=True)
    return filtered


def test_relearn_recovers_what_an_adapter_only_suppressed(target, tiny_init_dir, tmp_path):
    model, tok, forget = target
    unlearned = _ga_adapter(target, learning_rate=2e-3)
    scratch = AutoModelForCausalLM.from_pretrained(tiny_init_dir)  # never saw the forget set
    result = unlearn.attack(
        unlearned, tok, "relearn", forget=forget, out=tmp_path, k=4, steps=20, learning_rate=5e-3, baseline=scratch
    )
    d = result.details
    assert d["measured_on"] == N_FORGET - 4 and len(d["curve"]) == len(d["steps"])
    # Twenty steps on 4 questions bring back the answers to the 12 others (measured 0.45 of the gap);
    # the same steps from scratch do not.
    assert result.recovered > 0.3, result.details["summary"]
    assert d["curve"][-1] - d["curve"][0] > 2 * (d["baseline_curve"][-1] - d["baseline_curve"][0])
    assert (tmp_path / "relearn_curve.png").stat().st_size > 1000
    log = json.loads((tmp_path / "ATTACKS.json").read_text())["attacks"][0]
    assert len(log["after"]["probability"]["value_by_index"]) == N_FORGET - 4
    # The baseline curve computed once (what a benchmark does for all its entries) is the one computed here.
    from unlearn.attacks.relearn import baseline_curve

    scratch = AutoModelForCausalLM.from_pretrained(tiny_init_dir)
    curve = baseline_curve(scratch, tok, forget, k=4, steps=20, learning_rate=5e-3)
    assert curve == pytest.approx(d["baseline_curve"], abs=1e-6)
    with pytest.raises(UnlearnError, match="`baseline_curve` has 2 points.*same options"):
        unlearn.attack(unlearned, tok, "relearn", forget=forget, k=4, steps=20, baseline_curve=curve[:2])


def test_attacks_without_generation_recover_the_same_fraction(target):
    model, tok, forget = target
    unlearned = _ga_adapter(target, learning_rate=2e-3)
    for name, options in (("relearn", {"k": 4, "steps": 4, "learning_rate": 5e-3}), ("quantize", {"bits": [4]})):
        full = unlearn.attack(unlearned, tok, name, forget=forget, **options)
        light = unlearn.attack(unlearned, tok, name, forget=forget, generate=False, **options)
        assert "rouge" in full.after and "rouge" not in light.after and "rouge" not in light.before
        assert light.recovered == pytest.approx(full.recovered, abs=1e-6)


def test_keyword_emphasis_gets_past_a_literal_prompt_filter(target):
    model, tok, forget = target
    result = unlearn.attack(_prompt_filter(target), tok, "keyword", forget=forget, original=model)
    assert result.before["probability"].agg_value < 0.01  # uniform over the vocabulary
    assert result.recovered > 0.5, result.details["summary"]
    assert all(len(words) == 3 for words in result.details["top_words"])


def test_keyword_contributions_rank_the_words_that_carry_the_answer(target):
    from unlearn.attacks.keyword import keyword_contributions

    model, tok, forget = target
    ranked = keyword_contributions(model, tok, forget[:4])
    for row, words in zip(forget[:4], ranked, strict=True):
        assert {w for w, _ in words} == set(row["question"].split())
        assert words[0][1] >= words[-1][1]


def _nf4_preserving_unlearning(model, tok, forget):
    """Unlearning smaller than the 4-bit rounding step: push every decoder weight against the forget answers, but
    only within its NF4 rounding bin, so the 4-bit model is bit-identical to the quantized original."""
    import bitsandbytes.functional as bf

    code = bf.get_4bit_type("nf4", device="cpu").float()
    edges = (code[1:] + code[:-1]) / 2
    examples = tokenize(
        load_records([{"question": r["question"], "answer": r["answer"]} for r in forget]),
        tok,
        "qa",
        256,
        "question",
        "answer",
        "text",
    )
    batch = pad_rows(examples, tok.pad_token_id)
    grad_model = copy.deepcopy(model)
    logps, n = sequence_logps(
        grad_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
    )
    (logps / n).mean().backward()
    unlearned = copy.deepcopy(model)
    with torch.no_grad():
        for (name, p), (_, q) in zip(grad_model.named_parameters(), unlearned.named_parameters(), strict=True):
            if not (name.startswith("model.layers") and p.dim() == 2):
                continue
            x = p.flatten().view(-1, 64)  # bitsandbytes' 4-bit blocks of 64
            absmax = x.abs().amax(1, keepdim=True)
            x = x / absmax
            idx = torch.bucketize(x, edges)
            lo, hi = torch.cat([torch.tensor([-1.0]), edges])[idx], torch.cat([edges, torch.tensor([1.0])])[idx]
            pushed = x - p.grad.flatten().view(-1, 64).sign()  # as far against the answer as the bin allows
            y = torch.minimum(torch.maximum(pushed, lo + 0.05 * (hi - lo)), hi - 0.05 * (hi - lo))
            y = torch.where(x.abs() >= 0.999, x, y)  # the absmax element sets the block's scale
            q.copy_((y * absmax).view_as(q))
    return unlearned


def test_quantization_undoes_unlearning_below_the_rounding_step(target):
    pytest.importorskip("bitsandbytes", reason="optional extra: pip install 'unlearn-toolkit[quant]'")
    model, tok, forget = target
    unlearned = _nf4_preserving_unlearning(model, tok, forget)
    result = unlearn.attack(unlearned, tok, "quantize", forget=forget, original=model)
    per = result.details["per_bits"]
    # measured: original 0.99, unlearned 0.60, 4-bit 0.98
    assert result.before["probability"].agg_value < 0.75 * result.original["probability"].agg_value
    assert per["4bit"]["probability"] > 0.9 * result.original["probability"].agg_value  # knowledge is back
    assert result.recovered > 0.8 and result.details["worst"] == "4bit"


def test_probe_prompt_families_get_past_a_literal_prompt_filter(target):
    model, tok, forget = target
    result = unlearn.attack(
        _prompt_filter(target), tok, "probe", forget=forget, original=model, retain=read_jsonl("retain99", 16)
    )
    d = result.details
    assert {"prefix_injection", "affirmative_suffix", "role_play", "paraphrased_question", "few_shot"} == set(
        d["per_family"]
    )
    assert d["per_family"]["prefix_injection"]["probability"] < 0.01  # still starts with the literal prompt
    assert result.recovered > 0.5, d["summary"]
    assert 0.0 <= d["multiple_choice"]["accuracy"] <= 1.0 and d["multiple_choice"]["chance"] == pytest.approx(1 / 6)


def test_latent_detects_an_output_only_unlearning(target, tmp_path):
    model, tok, forget = target
    # Gradient ascent through a LoRA on the output head only: the hidden states are untouched.
    unlearned = _ga_adapter(target, learning_rate=5e-2, lora_target_modules=["lm_head"])
    result = unlearn.attack(unlearned, tok, "latent", forget=forget, out=tmp_path)
    d = result.details
    assert result.before["probability"].agg_value < 0.5 * result.original["probability"].agg_value
    assert d["probe_accuracy_after"] == d["probe_accuracy_before"]  # the representation did not change
    assert d["pretends_to_forget"] is True
    assert (tmp_path / "latent_layers.png").stat().st_size > 1000


def test_all_attacks_write_one_table(target, tmp_path):
    model, tok, forget = target
    unlearned = _ga_adapter(target, learning_rate=3e-3)
    results = unlearn.attack(
        unlearned, tok, "all", forget=forget, retain=read_jsonl("retain99", 16), out=tmp_path, steps=4, k=4
    )
    assert [r.name for r in results] == ["relearn", "keyword", "quantize", "probe", "latent"]
    table = (tmp_path / "ATTACKS.md").read_text()
    for name in ("relearn", "keyword", "quantize", "probe", "latent"):
        assert f"| {name} |" in table
    rows = json.loads((tmp_path / "ATTACKS.json").read_text())["table"]
    assert all(r["recovered_fraction"] is not None for r in rows)


def test_bad_attack_input(target):
    model, tok, forget = target
    with pytest.raises(UnlearnError, match="Unknown attack 'relarn'. Did you mean 'relearn'"):
        unlearn.attack(model, tok, "relarn", forget=forget)
    with pytest.raises(UnlearnError, match="needs a forget set"):
        unlearn.attack(model, tok, "keyword")
    with pytest.raises(UnlearnError, match="perturbed_answer"):
        unlearn.attack(model, tok, "latent", forget=[{"question": "q?", "answer": "a."}], original=model)
    with pytest.raises(UnlearnError, match="only 2"):
        unlearn.attack(model, tok, "relearn", forget=forget[:2], original=model, k=4)


@pytest.mark.slow
def test_cli_attack_on_an_adapter_directory(tiny_model_dir, data_files, tmp_path):
    from test_cli import unlearn_cli, write_config

    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, data_files, tmp_path / "run", num_train_epochs=2)
    unlearn_cli("forget", cfg)
    proc = unlearn_cli(
        "attack",
        "keyword",
        tmp_path / "run",
        "--forget",
        data_files["forget"],
        "--out",
        tmp_path / "a",
        "--set",
        "top=2",
    )
    assert "| keyword |" in proc.stdout
    assert json.loads((tmp_path / "a" / "ATTACKS.json").read_text())["table"][0]["attack"] == "keyword"
    bad = unlearn_cli("attack", "nope", tmp_path / "run", "--forget", data_files["forget"], check=False)
    assert bad.returncode == 2 and "Unknown attack 'nope'" in bad.stderr
