"""The shared machinery of `UnlearnTrainer`: reference log-probs, loss scaling, logging, adapters, sampling."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import answer_nll
from peft import PeftModel
from transformers import set_seed

import unlearn
from unlearn import UnlearnError
from unlearn.adapter import lora_config, wrap_adapter
from unlearn.data import pad_rows
from unlearn.logprobs import sequence_logps
from unlearn.recipes import recipe_config
from unlearn.recipes.npo import NPOTrainer


def _config(recipe: str, tmp_path, **kw):
    return recipe_config({"recipe": recipe, "output_dir": str(tmp_path / "out"), "disable_tqdm": True, **kw})


def test_reference_logps_are_the_base_model_with_the_adapter_disabled(tiny, tofu_rows, tmp_path):
    model, tokenizer = tiny
    rows = [dict(r) for r in tofu_rows["forget"]]
    batch = pad_rows(
        unlearn.data.tokenize(unlearn.data.load_records(rows), tokenizer, "qa", 512, "question", "answer", "text"),
        tokenizer.pad_token_id,
    )
    with torch.no_grad():
        expected = sequence_logps(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
        )[0]
    trainer = NPOTrainer(
        model=model, args=_config("npo", tmp_path, retain_weight=0), forget=rows, processing_class=tokenizer
    )
    assert isinstance(trainer.model, PeftModel)
    torch.nn.init.normal_(next(p for n, p in trainer.model.named_parameters() if "lora_B" in n))  # adapter now matters
    torch.testing.assert_close(trainer.compute_reference_logps(), expected, rtol=1e-5, atol=1e-4)


def test_npo_reference_is_computed_once(tiny, tofu_rows, tmp_path, monkeypatch):
    model, tokenizer = tiny
    calls = []
    original = NPOTrainer.compute_reference_logps
    monkeypatch.setattr(NPOTrainer, "compute_reference_logps", lambda self, *a: calls.append(1) or original(self, *a))
    trainer = NPOTrainer(
        model=model,
        args=_config("npo", tmp_path, retain_weight=0, num_train_epochs=2, save_strategy="no"),
        forget=tofu_rows["forget"],
        processing_class=tokenizer,
    )
    trainer.train()
    assert calls == [1] and trainer.state.global_step == 4


def test_gradient_accumulation_matches_the_full_batch(tiny_model_dir, tofu_rows, tmp_path):
    """Per-sequence mean losses: 1 x batch 4 and 2 accumulated x batch 2 take the same optimizer step.

    Plain SGD, so that the update is the accumulated gradient itself: Adam divides each element by its own
    magnitude, which hides a gradient scaled by the accumulation steps and turns rounding differences in elements
    near its `eps` into visible ones (a split step sums its passes in another order than one pass does).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = {"recipe": "graddiff", "learning_rate": 1.0, "optim": "sgd", "num_train_epochs": 1, "seed": 3}
    set_seed(3)  # the adapter's initialization, as the trainer draws it
    initial = wrap_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), _config("graddiff", tmp_path))
    initial = {n: p.detach().clone() for n, p in initial.named_parameters() if "lora_" in n}
    updates = []
    for bs, accum in [(4, 1), (2, 2)]:
        model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
        pm = unlearn.forget(
            model,
            tok,
            tofu_rows["forget"],
            tofu_rows["retain"],
            per_device_train_batch_size=bs,
            gradient_accumulation_steps=accum,
            disable_tqdm=True,
            **settings,
        )
        updates.append({n: p.detach() - initial[n] for n, p in pm.named_parameters() if "lora_" in n})
    scale = max(u.abs().max().item() for u in updates[0].values())
    assert scale > 1e-4  # the steps moved the adapter
    for name in updates[0]:
        torch.testing.assert_close(updates[0][name], updates[1][name], rtol=1e-4, atol=1e-4 * scale)


def test_forget_and_retain_losses_are_logged_separately(tiny, tofu_rows, tmp_path):
    model, tokenizer = tiny
    trainer = unlearn.get_recipe("graddiff")(
        model=model,
        args=_config("graddiff", tmp_path, num_train_epochs=1, save_strategy="no"),
        forget=tofu_rows["forget"],
        retain=tofu_rows["retain"],
        processing_class=tokenizer,
    )
    trainer.train()
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert len(logs) == 2
    for row in logs:
        # loss = -forget NLL + retain NLL, and each part is reported
        assert row["loss"] == pytest.approx(row["forget_loss"] + row["retain_loss"], abs=1e-3)
        assert row["forget_loss"] == pytest.approx(-row["forget_nll"], abs=1e-5)


def test_full_finetuning_without_adapter(tiny, tofu_rows, tmp_path):
    model, tokenizer = tiny
    before = answer_nll(model, tokenizer, tofu_rows["forget"])
    out = unlearn.forget(
        model, tokenizer, tofu_rows["forget"], recipe="ga", adapter="none", learning_rate=1e-3, disable_tqdm=True
    )
    assert not isinstance(out, PeftModel)
    assert answer_nll(out, tokenizer, tofu_rows["forget"]) > before + 1.0


def test_kl_retain_loss_is_zero_before_any_update(tiny, tofu_rows, tmp_path):
    model, tokenizer = tiny
    trainer = unlearn.get_recipe("graddiff")(
        model=model,
        args=_config(
            "graddiff", tmp_path, retain_loss="kl", learning_rate=1e-3, num_train_epochs=1, save_strategy="no"
        ),
        forget=tofu_rows["forget"],
        retain=tofu_rows["retain"],
        processing_class=tokenizer,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    terms, _ = trainer.loss_terms(trainer.model, batch)  # LoRA B starts at zero: model == reference
    assert terms["retain_loss"].value.item() == pytest.approx(0.0, abs=1e-5)
    trainer.train()
    assert trainer.state.log_history[-2]["retain_loss"] > 0


def test_chat_template_puts_the_loss_on_the_answer_only(tiny):
    from conftest import CHAT_TEMPLATE

    _, tokenizer = tiny
    tokenizer.chat_template = CHAT_TEMPLATE
    ex = unlearn.data.tokenize(
        unlearn.data.load_records([{"question": "Who wrote it?", "answer": "Jane Doe"}]),
        tokenizer,
        "qa",
        512,
        "question",
        "answer",
        "text",
    )[0]
    labelled = tokenizer.decode([t for t in ex["labels"] if t != -100])
    prompt = tokenizer.decode([t for t, lab in zip(ex["input_ids"], ex["labels"], strict=True) if lab == -100])
    assert labelled == "Jane Doe</s>"
    assert prompt == "<|user|>Who wrote it?</s><|assistant|>"


def test_hold_retain_loss_counts_only_the_nll_above_the_reference(tiny, tofu_rows, tmp_path):
    from unlearn.scoring import answer_nll as nll_per_row

    model, tokenizer = tiny
    retain = tofu_rows["retain"]
    reference = torch.tensor(nll_per_row(model, tokenizer, retain))
    args = _config("graddiff", tmp_path, retain_loss="hold", retain_weight=1.0, learning_rate=3e-3, save_strategy="no")
    trainer = unlearn.get_recipe("graddiff")(
        model=model, args=args, forget=tofu_rows["forget"], retain=retain, processing_class=tokenizer
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    terms, _ = trainer.loss_terms(trainer.model, batch)  # LoRA B starts at zero: model == reference
    assert terms["retain_loss"].value.item() == pytest.approx(0.0, abs=1e-5)
    trainer.train()
    after = torch.tensor(nll_per_row(trainer.model, tokenizer, retain))
    assert (after - reference).abs().max() > 0.05  # the retain answers moved, some up, some down
    with torch.no_grad():
        terms, _ = trainer.loss_terms(trainer.model, batch)
    rows = batch["index"][~batch["is_forget"]]
    expected = (after[rows] - reference[rows]).clamp(min=0).mean()  # only the excess counts; a lower NLL is 0
    assert terms["retain_loss"].value.item() == pytest.approx(expected.item(), abs=1e-3)


def test_rmu_moves_forget_activations_toward_the_control_vector(tiny, tofu_rows, tmp_path):
    model, tokenizer = tiny
    args = _config(
        "rmu",
        tmp_path,
        rmu_layer=0,
        steering_coef=20.0,
        retain_weight=100.0,
        learning_rate=1e-2,
        num_train_epochs=4,
        save_strategy="no",
    )
    assert args.lora_target_modules == ["layers.0.mlp.down_proj"]
    trainer = unlearn.get_recipe("rmu")(
        model=model, args=args, forget=tofu_rows["forget"], retain=tofu_rows["retain"], processing_class=tokenizer
    )
    trainer.train()
    logs = [row for row in trainer.state.log_history if "forget_loss" in row]
    assert logs[-1]["forget_loss"] < logs[0]["forget_loss"]  # || h_0 - c u ||^2 falls
    u = trainer.control_vector(64, "cpu")
    assert u.norm().item() == pytest.approx(1.0) and (u >= 0).all()


def test_rmu_keeps_no_graph_above_the_steered_layer(tiny, tofu_rows, tmp_path):
    """The layers above `rmu_layer` run detached: layer-l activations, their gradients and the forget-NLL metric
    are those of the plain forward pass, and nothing above layer l is kept for backward."""
    model, tokenizer = tiny
    trainer = unlearn.get_recipe("rmu")(
        model=model,
        args=_config("rmu", tmp_path, rmu_layer=0),
        forget=tofu_rows["forget"],
        retain=tofu_rows["retain"],
        processing_class=tokenizer,
    )
    lora = [p for n, p in trainer.model.named_parameters() if "lora_" in n]  # layer 0's down-projection
    for p in lora:
        torch.nn.init.normal_(p, std=0.1)  # the adapter now changes what every layer above reads
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    ids, mask, labels, is_forget = (batch[k] for k in ("input_ids", "attention_mask", "loss_labels", "is_forget"))
    out, h = trainer._hidden(trainer.model, ids, mask)
    plain = trainer.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert h.requires_grad and not out.hidden_states[-1].requires_grad and plain.hidden_states[-1].requires_grad
    torch.testing.assert_close(h, plain.hidden_states[1])
    mine = torch.autograd.grad(h.square().sum(), lora)
    theirs = torch.autograd.grad(plain.hidden_states[1].square().sum(), lora)
    for a, b in zip(mine, theirs, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b)
    assert out.logits.shape[1] == 1  # the output head is applied to the labelled forget positions only
    expected = sequence_logps(plain.logits[is_forget], labels[is_forget])
    got = tuple(t[is_forget] for t in trainer._logps(out, labels))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_gslora_confines_forgetting_to_few_groups(tiny, tofu_rows, tmp_path):
    model, tokenizer = tiny
    before = answer_nll(model, tokenizer, tofu_rows["forget"])
    args = _config(
        "gslora",
        tmp_path,
        group_by="module",
        group_lasso=10.0,
        learning_rate=1e-2,
        num_train_epochs=10,
        save_strategy="no",
    )
    trainer = unlearn.get_recipe("gslora")(
        model=model, args=args, forget=tofu_rows["forget"], retain=tofu_rows["retain"], processing_class=tokenizer
    )
    trainer.train()
    norms = trainer.group_norms()
    active = trainer.active_groups()
    assert len(norms) == 14 and 0 < len(active) < len(norms), norms  # measured: 7 of 14 stay active
    assert all(norms[g] == 0.0 for g in norms if g not in active)  # the proximal step zeroes whole groups exactly
    assert answer_nll(trainer.model, tokenizer, tofu_rows["forget"]) > before + 0.75  # measured +2.7
    forget_losses = [row["forget_loss"] for row in trainer.state.log_history if "forget_loss" in row]
    assert min(forget_losses) >= 0.0  # ReLU(bound - NLL): bounded, never below zero


def test_reglora_keeps_the_update_small_on_key_elements(tiny_model_dir, tofu_rows, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ratios = {}
    for weight in (0.0, 0.5):
        model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
        args = _config("reglora", tmp_path, reg_weight=weight, learning_rate=3e-3, save_strategy="no")
        trainer = unlearn.get_recipe("reglora")(
            model=model, args=args, forget=tofu_rows["forget"], retain=tofu_rows["retain"], processing_class=tok
        )
        assert all(m.float().mean().item() == pytest.approx(0.05, abs=0.01) for m in trainer.key_masks.values())
        trainer.train()
        key = torch.cat([trainer.delta_w(n).abs()[trainer.key_masks[n]] for n in trainer.lora_modules]).mean()
        other = torch.cat([trainer.delta_w(n).abs()[~trainer.key_masks[n]] for n in trainer.lora_modules]).mean()
        ratios[weight] = (key / other).item()
    # Without the penalty the key elements move like the rest (measured 1.00); with it, a third less (0.66).
    assert ratios[0.0] > 0.9 and ratios[0.5] < 0.8, ratios


def test_reglora_fisher_is_the_sum_of_squared_retain_gradients(tiny, tofu_rows, tmp_path):
    """`_fisher` (gradients squared as backward makes them, through the chunked output head or the full logits)
    equals the sum over retain batches of the squared gradient of the plain full-logits NLL."""
    model, tokenizer = tiny
    fisher = []
    for chunk in (0, 16):  # 0: the model's (B, T, V) logits; 16: the output head in chunks of 16 labelled tokens
        args = _config("reglora", tmp_path, loss_chunk_tokens=chunk, reg_fisher_batches=2, save_strategy="no")
        trainer = unlearn.get_recipe("reglora")(
            model=model, args=args, forget=tofu_rows["forget"], retain=tofu_rows["retain"], processing_class=tokenizer
        )
        assert (trainer.loss_head() is None) == (chunk == 0)
        fisher.append(trainer._fisher())
        weights = {n: m.base_layer.weight for n, m in trainer.lora_modules.items()}
        assert not any(w.requires_grad or w.grad is not None for w in weights.values())
        model = trainer.model.unload()  # the base model again, for the next trainer
    expected = {n: torch.zeros_like(w) for n, w in weights.items()}
    bs = args.per_device_train_batch_size
    for w in weights.values():
        w.requires_grad_(True)
    for start in (0, bs):
        batch = pad_rows(trainer.retain_examples[start : start + bs], tokenizer.pad_token_id)
        logps, n = sequence_logps(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
        )
        for name, g in zip(weights, torch.autograd.grad((-logps / n).mean(), list(weights.values())), strict=True):
            expected[name] += g.square()
    for name in expected:
        assert expected[name].sum() > 0
        for f in fisher:
            torch.testing.assert_close(f[name], expected[name], rtol=1e-4, atol=1e-10)


def test_reglora_importance_from_a_knowledge_adapter(tiny_model_dir, tofu_rows, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def fresh():
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir)

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    knowledge = tmp_path / "knowledge"
    unlearn.finetune(
        fresh(), tok, tofu_rows["retain"], output_dir=knowledge, adapter="lora", max_steps=2, disable_tqdm=True
    )
    recipe = unlearn.get_recipe("reglora")
    trainer = recipe(
        model=fresh(),
        args=_config("reglora", tmp_path, importance=str(knowledge), max_steps=1),
        forget=tofu_rows["forget"],
        retain=tofu_rows["retain"],
        processing_class=tok,
    )
    assert len(trainer.key_masks) == 14 and all(m.any() for m in trainer.key_masks.values())
    with pytest.raises(UnlearnError, match="does not exist"):
        recipe(
            model=fresh(),
            args=_config("reglora", tmp_path, importance=str(tmp_path / "nope")),
            forget=tofu_rows["forget"],
            retain=tofu_rows["retain"],
            processing_class=tok,
        )


def _one_step_grads(model_dir, tofu_rows, tmp_path, recipe: str, split: bool, **kw):
    """Adapter gradients and logged losses of one `training_step` on a fixed batch, LoRA B set at random."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    args = _config(recipe, tmp_path / str(split), split_passes=split, **kw)
    trainer = unlearn.get_recipe(recipe)(
        model=model, args=args, forget=tofu_rows["forget"], retain=tofu_rows["retain"], processing_class=tokenizer
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    passes = trainer.split_passes(batch)
    loss = trainer.training_step(trainer.model, batch)
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss, grads, {k: torch.stack(v) for k, v in trainer._metrics.items()}, passes


@pytest.mark.parametrize(("recipe", "kw"), [("graddiff", {}), ("graddiff", {"retain_loss": "kl"}), ("npo", {})])
def test_split_passes_take_the_same_step_as_one_pass(tiny_model_dir, tofu_rows, tmp_path, recipe, kw):
    """Forget rows, then retain rows in groups of the forget rows' size: gradients add up to the one-pass step."""
    one = _one_step_grads(tiny_model_dir, tofu_rows, tmp_path, recipe, False, retain_ratio=2, **kw)
    split = _one_step_grads(tiny_model_dir, tofu_rows, tmp_path, recipe, True, retain_ratio=2, **kw)
    assert len(one[3]) == 1 and [len(p["is_forget"]) for p in split[3]] == [3, 3, 3]
    assert all(p["input_ids"].shape[1] == p["attention_mask"].sum(-1).max() for p in split[3])  # cut to its rows
    # each retain row carries its weight in the step's retain mean: the passes hold 0, 1/2 and 1/2 of it
    assert [round(float(p["retain_row_weight"].sum()), 6) for p in split[3]] == [0.0, 0.5, 0.5]
    torch.testing.assert_close(split[0], one[0], rtol=1e-5, atol=1e-6)
    assert split[2].keys() == one[2].keys() and "retain_loss" in one[2]
    for name in one[2]:
        torch.testing.assert_close(split[2][name], one[2][name], rtol=1e-5, atol=1e-6)
    assert one[1] and split[1].keys() == one[1].keys()
    for name in one[1]:
        torch.testing.assert_close(split[1][name], one[1][name], rtol=1e-4, atol=1e-6)


def test_recipes_reading_forget_and_retain_together_are_not_split(tiny, tofu_rows, tmp_path):
    model, tokenizer = tiny
    trainer = unlearn.get_recipe("rmu")(
        model=model,
        args=_config("rmu", tmp_path, rmu_layer=0, retain_weight=1.0),
        forget=tofu_rows["forget"],
        retain=tofu_rows["retain"],
        processing_class=tokenizer,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert trainer.split_passes(batch) == [batch]


def test_adaptive_rmu_scales_the_coefficient_to_the_frozen_activation_norm(tiny, tofu_rows, tmp_path):
    """Adaptive RMU (arXiv:2408.06223): c = beta x the mean layer-l norm of the frozen model's forget activations,
    measured once on the forget rows (not on whichever batch comes first), and the forget activations move to it."""
    model, tokenizer = tiny
    args = _config(
        "rmu",
        tmp_path,
        rmu_layer=0,
        steering_scale=40.0,
        retain_weight=100.0,
        learning_rate=1e-2,
        num_train_epochs=4,
        save_strategy="no",
    )
    trainer = unlearn.get_recipe("rmu")(
        model=model, args=args, forget=tofu_rows["forget"], retain=tofu_rows["retain"], processing_class=tokenizer
    )
    with torch.no_grad():  # by hand: the untrained adapter is the frozen model; the answer tokens' layer-0 outputs
        norms = []
        for ex in trainer.forget_examples:
            ids = torch.tensor([ex["input_ids"]])
            h = trainer.model(input_ids=ids, output_hidden_states=True).hidden_states[1][0]
            norms.append(h[torch.tensor(ex["labels"]) != -100].norm(dim=-1))
        expected = 40.0 * torch.cat(norms).mean().item()
    assert trainer.steering_coefficient(trainer.model) == pytest.approx(expected, rel=1e-4)
    assert expected != pytest.approx(args.steering_coef)  # the measured norm, not the fixed c
    trainer.train()
    logs = [row for row in trainer.state.log_history if "forget_loss" in row]
    assert logs[-1]["forget_loss"] < logs[0]["forget_loss"]  # || h_0 - c u ||^2 falls
    assert trainer.steering_coefficient(trainer.model) == pytest.approx(expected, rel=1e-4)  # fixed once measured
    with pytest.raises(ValueError, match="steering_scale"):
        _config("rmu", tmp_path, steering_scale=0.0)
    with pytest.raises(ValueError, match="no frozen model"):  # full fine-tuning has no adapter to disable
        _config("rmu", tmp_path, adapter="none")


def _lora_layers(model) -> dict[int, set[str]]:
    """{layer index: names of its modules that carry LoRA}."""
    found: dict[int, set[str]] = {}
    for name, _ in model.named_parameters():
        if "lora_A" in name:
            layer, module = name.split(".layers.")[1].split(".")[0], name.split(".lora_A")[0].rsplit(".", 1)[-1]
            found.setdefault(int(layer), set()).add(module)
    return found


def test_lora_layers_limits_the_adapter_to_those_layers(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    every = _lora_layers(wrap_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), _config("ga", tmp_path)))
    last = max(every)
    assert sorted(every) == list(range(last + 1)) and last >= 1  # all-linear: every layer, attention and MLP
    for spec, layers in [("50%", range((last + 1) // 2)), (f"1-{last}", range(1, last + 1)), ([0], [0])]:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        found = _lora_layers(wrap_adapter(model, _config("ga", tmp_path, lora_layers=spec)))
        assert sorted(found) == list(layers), spec
        assert all(found[i] == every[i] for i in found), "all-linear keeps every linear module of a chosen layer"
    mlp = ["gate_proj", "up_proj", "down_proj"]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    found = _lora_layers(wrap_adapter(model, _config("ga", tmp_path, lora_layers=[last], lora_target_modules=mlp)))
    assert found == {last: set(mlp)}


def test_lora_layers_past_the_model_or_with_a_pattern_are_refused(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    n = model.config.num_hidden_layers
    with pytest.raises(UnlearnError, match=f"names layer {n}, and the model's layers are 0-{n - 1}"):
        wrap_adapter(model, _config("ga", tmp_path, lora_layers=f"0-{n}"))
    with pytest.raises(UnlearnError, match="is a pattern that PEFT matches whole"):
        wrap_adapter(model, _config("ga", tmp_path, lora_layers="50%", lora_target_modules=r".*\.mlp\..*"))
    depthless = SimpleNamespace(config=SimpleNamespace())  # a model whose config does not give its depth
    with pytest.raises(UnlearnError, match="its config has no `num_hidden_layers`. Give the layers as indices"):
        lora_config(_config("ga", tmp_path, lora_layers="50%"), depthless)
    indices = _config("ga", tmp_path, lora_layers="0-1", lora_target_modules=["q_proj"])
    assert lora_config(indices, depthless).layers_to_transform == [0, 1]
