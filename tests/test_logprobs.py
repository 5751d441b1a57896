"""Losses through the output head in chunks (`unlearn.logprobs`): the same values and gradients as full logits."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

import unlearn
from unlearn.data import IGNORE_INDEX
from unlearn.logprobs import final_hidden, head_kl, head_sequence_logps, sequence_logps
from unlearn.recipes import recipe_config


def test_head_sequence_logps_matches_full_logits_with_gradients(tiny):
    model, _ = tiny
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (3, 12))
    labels = ids.clone()
    labels[0, :5] = IGNORE_INDEX  # a question part
    labels[1] = IGNORE_INDEX  # a row without labelled tokens
    outputs, hidden = final_hidden(model, ids, torch.ones_like(ids))
    assert outputs.logits.shape[1] == 1  # only the last position's logits were computed

    full_logits = model.lm_head(hidden)
    expected, expected_n = sequence_logps(full_logits, labels)
    (g_expected,) = torch.autograd.grad(expected.sum() * 2 + expected[0], hidden)
    for chunk in (0, 1, 5, 1000):
        logps, n = head_sequence_logps(model.lm_head, hidden, labels, chunk)
        torch.testing.assert_close(logps, expected)
        assert n.tolist() == expected_n.tolist() == [7, 0, 11]  # labels 5..11 of row 0; 1..11 of row 2
        (grad,) = torch.autograd.grad(logps.sum() * 2 + logps[0], hidden)
        torch.testing.assert_close(grad, g_expected)


def test_head_kl_is_zero_against_itself_and_positive_otherwise(tiny):
    model, _ = tiny
    ids = torch.randint(0, model.config.vocab_size, (2, 10))
    _, hidden = final_hidden(model, ids, torch.ones_like(ids))
    same = head_kl(model.lm_head, hidden, hidden.detach(), ids, 4, torch.no_grad)
    torch.testing.assert_close(same, torch.zeros(2), atol=1e-6, rtol=0)
    other = head_kl(model.lm_head, hidden, hidden.detach().flip(0), ids, 4, torch.no_grad)
    assert (other > 0).all()


def _step(model_dir, tofu_rows, tmp_path, chunk: int, recipe: str, **kw):
    """Loss and adapter (or weight) gradients of one training step on a fixed batch, LoRA B set at random."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    args = recipe_config(
        {
            "recipe": recipe,
            "output_dir": str(tmp_path / f"out{chunk}"),
            "disable_tqdm": True,
            "loss_chunk_tokens": chunk,
            "retain_ratio": 1,
            **kw,
        }
    )
    trainer = unlearn.get_recipe(recipe)(
        model=model, args=args, forget=tofu_rows["forget"], retain=tofu_rows["retain"], processing_class=tokenizer
    )
    assert (trainer.loss_head() is not None) == (chunk > 0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, {k: torch.stack(v) for k, v in trainer._metrics.items()}


CASES = [
    ("ga", {}),
    ("npo", {}),
    ("graddiff", {}),
    ("graddiff", {"retain_loss": "kl"}),
    ("simnpo", {}),
    ("ga", {"adapter": "none"}),
]


@pytest.mark.parametrize(("recipe", "kw"), CASES, ids=[f"{r}-{'-'.join(map(str, k.values()))}" for r, k in CASES])
def test_chunked_losses_match_full_logits(tiny_model_dir, tofu_rows, tmp_path, recipe, kw):
    loss_full, grads_full, metrics_full = _step(tiny_model_dir, tofu_rows, tmp_path, 0, recipe, **kw)
    loss_chunked, grads_chunked, metrics_chunked = _step(tiny_model_dir, tofu_rows, tmp_path, 7, recipe, **kw)
    torch.testing.assert_close(loss_chunked, loss_full, rtol=1e-5, atol=1e-6)
    assert metrics_chunked.keys() == metrics_full.keys()
    for name in metrics_full:
        torch.testing.assert_close(metrics_chunked[name], metrics_full[name], rtol=1e-5, atol=1e-6)
    assert grads_chunked.keys() == grads_full.keys() and grads_full
    for name in grads_full:
        torch.testing.assert_close(grads_chunked[name], grads_full[name], rtol=1e-4, atol=1e-6)


def test_soft_capped_logits_fall_back_to_full_logits(tiny, tofu_rows, tmp_path, caplog):
    """Gemma 2 caps its logits after the head: the head alone does not give them, so chunking is turned off."""
    _, tokenizer = tiny
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=3.0,
    )
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config)
    args = recipe_config({"recipe": "ga", "output_dir": str(tmp_path / "out"), "disable_tqdm": True})
    trainer = unlearn.get_recipe("ga")(model=model, args=args, forget=tofu_rows["forget"], processing_class=tokenizer)
    with caplog.at_level(logging.WARNING, logger="unlearn.trainer"):
        assert trainer.loss_head() is None
    assert "soft-capped" in caplog.text
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert torch.isfinite(trainer.compute_loss(trainer.model, batch))


def test_loss_chunk_tokens_must_not_be_negative(tmp_path):
    with pytest.raises(unlearn.UnlearnError, match="loss_chunk_tokens"):
        recipe_config({"recipe": "ga", "output_dir": str(tmp_path), "loss_chunk_tokens": -1})
