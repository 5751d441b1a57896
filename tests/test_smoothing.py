"""`smoothing: sam`: the step's gradient is the forget gradient at the worst nearby weights plus the retain gradient
at the weights themselves, the weights come back unchanged, and the unlearned forget loss is flatter."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import answer_nll

import unlearn
from unlearn import UnlearnError
from unlearn.recipes import recipe_config

RHO = 0.05


def make_trainer(model, tok, rows, tmp_path, **settings):
    args = recipe_config(
        {
            "recipe": "graddiff",
            "output_dir": str(tmp_path),
            "learning_rate": 3e-3,
            "per_device_train_batch_size": 4,
            "save_strategy": "no",
            "disable_tqdm": True,
            "seed": 0,
            **settings,
        }
    )
    return unlearn.get_recipe(args.recipe)(
        model=model, args=args, forget=rows["forget"], retain=rows["retain"], processing_class=tok
    )


def pass_grads(trainer, part) -> list[torch.Tensor]:
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    loss = trainer.compute_loss(trainer.model, part)
    return list(torch.autograd.grad(loss, params))


def step_setup(trainer):
    """A batch, the trainable weights moved off LoRA's zero B (where A's gradient vanishes, so that every direction
    counts), and a copy of them (theta)."""
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    return batch, params, [p.detach().clone() for p in params]


def grad_at(trainer, part, params, theta, delta) -> list[torch.Tensor]:
    """The gradient of `part`'s loss at theta + delta, the weights put back at theta after."""
    with torch.no_grad():
        for p, t, d in zip(params, theta, delta, strict=True):
            p.copy_(t + d)
    g = pass_grads(trainer, part)
    with torch.no_grad():
        for p, t in zip(params, theta, strict=True):
            p.copy_(t)
    return g


def retain_grad(trainer, parts, params) -> list[torch.Tensor]:
    g_r = [torch.zeros_like(p) for p in params]
    for part in parts:
        g_r = [a + b for a, b in zip(g_r, pass_grads(trainer, part), strict=True)]
    return g_r


def test_sam_step_is_the_perturbed_forget_gradient_plus_the_retain_gradient(tiny, tofu_rows, tmp_path):
    model, tok = tiny
    trainer = make_trainer(copy.deepcopy(model), tok, tofu_rows, tmp_path, smoothing="sam", sam_rho=RHO)
    batch, params, theta = step_setup(trainer)

    forget, *retain = trainer.split_passes(batch)
    g_f = pass_grads(trainer, forget)
    norm = torch.sqrt(sum((g**2).sum() for g in g_f))
    want = grad_at(trainer, forget, params, theta, [RHO * g / norm for g in g_f])
    g_r = retain_grad(trainer, retain, params)
    plain, want = [f + r for f, r in zip(g_f, g_r, strict=True)], [w + r for w, r in zip(want, g_r, strict=True)]

    trainer.model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = 1  # set by `train()`'s loop; the step is called alone here
    trainer.training_step(trainer.model, batch)
    for p, t, w in zip(params, theta, want, strict=True):
        torch.testing.assert_close(p.detach(), t, rtol=0, atol=0)  # the weights are back where they were
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-6)
    assert trainer.gradient_plugin.last["grad_norm"] == pytest.approx(norm.item(), rel=1e-4)
    assert any(
        not torch.allclose(p.grad, q, atol=1e-6) for p, q in zip(params, plain, strict=True)
    )  # rho moved the gradient


def test_stableun_step_averages_neighbourhood_points_and_projects_off_the_retain_gradient(tiny, tofu_rows, tmp_path):
    model, tok = tiny
    trainer = make_trainer(copy.deepcopy(model), tok, tofu_rows, tmp_path, smoothing="stableun", sam_rho=RHO)
    batch, params, theta = step_setup(trainer)

    forget, *retain = trainer.split_passes(batch)
    g0 = pass_grads(trainer, forget)
    norm = torch.sqrt(sum((g**2).sum() for g in g0))
    sam_point = grad_at(trainer, forget, params, theta, [RHO * g / norm for g in g0])
    gen = torch.Generator().manual_seed(0)  # seed 0, step 0
    u = [torch.randn(p.shape, generator=gen) for p in params]
    u_norm = torch.sqrt(sum((x**2).sum() for x in u))
    noise_point = grad_at(trainer, forget, params, theta, [RHO * x / u_norm for x in u])
    g_f = [(a + b) / 2 for a, b in zip(sam_point, noise_point, strict=True)]
    g_r = retain_grad(trainer, retain, params)
    dot = sum((a * b).sum() for a, b in zip(g_f, g_r, strict=True))
    rr = sum((b * b).sum() for b in g_r)
    if dot < 0:
        g_f = [a - dot / rr * b for a, b in zip(g_f, g_r, strict=True)]
    want = [a + b for a, b in zip(g_f, g_r, strict=True)]

    trainer.model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = 1
    trainer.training_step(trainer.model, batch)
    for p, t, w in zip(params, theta, want, strict=True):
        torch.testing.assert_close(p.detach(), t, rtol=0, atol=0)
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-6)
    projected = trainer.gradient_plugin.last["projected"]
    after = sum((a * b).sum() for a, b in zip(projected, g_r, strict=True))
    assert after >= -1e-6 * float(rr)  # what is left of the forget gradient does not work against retain


def test_sam_steps_take_the_forget_loss_uphill_and_still_forget(tiny, tofu_rows, tmp_path):
    """delta* is an ascent direction of the forget loss (the worst case SAM minimizes is worse than theta), at every
    step; and the recipe still forgets. (On this toy, relearning resistance itself was not better than plain NPO's:
    5 relearning steps on half the forget rows brought back 0.47 of plain NPO's forgetting and 0.47-0.62 of SAM's at
    rho 0.05-1; the claim is measured on SmolLM2 in benchmarks/results/.)"""
    model, tok = tiny
    before = answer_nll(model, tok, tofu_rows["forget"])
    trainer = make_trainer(
        model, tok, tofu_rows, tmp_path, recipe="npo", learning_rate=1e-2, smoothing="sam", sam_rho=0.2
    )
    trainer.train()
    rows = [r for r in trainer.state.log_history if "sam_forget_loss" in r]
    assert len(rows) == trainer.state.global_step
    assert all(r["sam_forget_loss"] > r["forget_loss"] for r in rows), rows
    assert answer_nll(trainer.model, tok, tofu_rows["forget"]) > before + 0.75


def test_sam_refuses_a_second_gradient_rewrite_and_a_bad_radius():
    with pytest.raises(UnlearnError, match="choose one"):
        recipe_config({"recipe": "graddiff", "smoothing": "sam", "projection": "gu"})
    with pytest.raises(UnlearnError, match="`sam_rho` must be > 0"):
        recipe_config({"recipe": "npo", "smoothing": "sam", "sam_rho": 0})
