"""`projection: gu`, a plug-in for every gradient recipe: geometric disentanglement of forgetting from retaining.

Following "Geometric-Disentanglement Unlearning": before the optimizer step, the forget gradient loses its
component in the span of the most recent retain gradients (`projection_history` of them),

    g_f' = g_f - Q Q^T g_f,   Q an orthonormal basis of [g_r(t-k+1), ..., g_r(t)]   (QR decomposition),

so that, to first order, the forget update does not change the retain loss; the step uses g_f' + g_r. The fraction
of the forget gradient removed, ||g_f - g_f'|| / ||g_f||, is logged as `gu_removed`. Gradients are flattened over
the trainable parameters (a LoRA adapter: small); the history costs `projection_history` copies of them.
"""

from __future__ import annotations

import torch

from .errors import UnlearnError


def _flat(grads, params) -> torch.Tensor:
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)]
    )


def project_out(g: torch.Tensor, history: list[torch.Tensor]) -> torch.Tensor:
    """g minus its orthogonal projection onto span(history)."""
    if not history:
        return g
    q, _ = torch.linalg.qr(torch.stack(history, dim=1))  # (P, k), orthonormal columns
    return g - q @ (q.T @ g)


def gu_training_step(trainer, model, inputs) -> torch.Tensor:
    """One micro-batch: separate forget and retain gradients, the forget one projected, accumulated into `.grad`."""
    if trainer.args.world_size > 1:
        raise UnlearnError(
            "`projection: gu` computes its gradients with autograd.grad, outside DDP's all-reduce; run "
            "it on one process."
        )
    model.train()
    inputs = trainer._prepare_inputs(inputs)
    params = [p for p in model.parameters() if p.requires_grad]
    with trainer.compute_loss_context_manager():
        terms, _ = trainer.loss_terms(model, inputs)
    forget = sum(t.weight * t.value for t in terms.values() if not t.retain_side)
    retain_terms = [t.weight * t.value for t in terms.values() if t.retain_side]
    retain = sum(retain_terms) if retain_terms else None
    scale = 1.0 / trainer.current_gradient_accumulation_steps
    g_f = _flat(torch.autograd.grad(forget, params, retain_graph=retain is not None, allow_unused=True), params)
    history = getattr(trainer, "_gu_history", [])
    if retain is not None:
        g_r = _flat(torch.autograd.grad(retain, params, allow_unused=True), params)
        history = (history + [g_r.detach()])[-trainer.args.projection_history :]
        trainer._gu_history = history
    else:
        g_r = torch.zeros_like(g_f)
    projected = project_out(g_f, history)
    removed = (g_f - projected).norm() / g_f.norm().clamp(min=1e-12)
    trainer.log_metric("gu_removed", removed)
    trainer.last_gu = {"forget_grad": g_f.detach(), "projected": projected.detach(), "retain_grad": g_r.detach()}
    total = (projected + g_r) * scale
    offset = 0
    for p in params:
        n = p.numel()
        g = total[offset : offset + n].view_as(p)
        p.grad = g.clone() if p.grad is None else p.grad + g
        offset += n
    loss = forget.detach() + (retain.detach() if retain is not None else 0.0)
    return loss * scale
