"""`smoothing: sam | stableun`, plug-ins for every gradient recipe: the forget objective minimized around the weights,
not only at them, so that a few relearning steps do not find the forgotten answers again.

Fan, Jia, Zhang, Ramakrishna, Hong & Liu, "Towards LLM Unlearning Resilient to Relearning Attacks: A
Sharpness-Aware Minimization Perspective and Beyond" (ICML 2025, arXiv:2502.05374), Eq. 5: relearning is an
attack on the weights, so unlearning is made robust the way adversarial training makes a classifier robust,

    min_theta  max_{||delta|| <= rho}  l_f(theta + delta)  +  gamma * l_r(theta),

with the inner maximum taken to first order as in SAM (Foret et al., arXiv:2010.01412):
delta* = rho * g_f / ||g_f||, g_f the forget gradient at theta. A step is then

    g = grad l_f(theta + delta*)  +  gamma * grad l_r(theta),

two forward/backward passes over the forget rows (one at theta for delta*, one at theta + delta*) and the usual
retain passes at theta: a flat forget loss around theta is what makes a few relearning steps not undo it.
When a recipe's losses read forget and retain rows together (`can_split_passes = False`: rmu, sae) the whole
objective is perturbed, as in plain SAM.

`smoothing: stableun` (Wu, Liu, Gao, Wang & Ding, "Beyond Sharp Minima: Robust LLM Unlearning via Feedback-Guided
Multi-Point Optimization", arXiv:2509.20230): forgetting feedback from several points of the neighbourhood, SAM's
adversarial point theta + delta* and `stableun_noise_points` random points theta + rho * u / ||u|| (u Gaussian),
their forget gradients averaged; remembering feedback, the retain gradient g_r at theta; and the two aligned by
gradient projection, the forget gradient losing its component against g_r when they conflict:

    g_f = mean_k grad l_f(theta + delta_k);   if g_f . g_r < 0:  g_f <- g_f - (g_f . g_r / ||g_r||^2) g_r;
    g = g_f + g_r.

`stableun_conflict` (1 when the projection applied) and `stableun_cos` (cos(g_f, g_r) before it) are logged.

`delta` lives in the trainable parameters (the LoRA adapter by default, all weights with `adapter: none`); `rho`
is a radius in that space (`sam_rho`). A step keeps two extra copies of the trainable weights (delta and theta). The perturbed forget loss is logged as `sam_forget_loss` and ||g_f|| as
`sam_grad_norm`; `last` keeps the last micro-batch's vectors for inspection.
"""

from __future__ import annotations

import torch

from .errors import UnlearnError


def _grads(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def _set_grads(params: list[torch.nn.Parameter], grads: list[torch.Tensor]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()


def _minus(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _norm(v: list[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum((g.float() ** 2).sum() for g in v))


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x.float() * y.float()).sum() for x, y in zip(a, b, strict=True))


class SharpnessAware:
    """The `sam` plug-in on the step's passes (`UnlearnTrainer.training_step`): the forget pass runs at theta, its
    gradient gives the ascent direction, the weights move by delta*, the forget pass runs again (its gradient is
    the one kept), the weights move back, and the retain passes run at theta.

    Under gradient accumulation each micro-batch takes its own delta* from its own forget gradient (what was already
    in `.grad` is set aside and put back); under DDP each process perturbs along its own forget gradient before the
    all-reduce, SAM's usual per-device ("m-sharpness") form.
    """

    def __init__(self, trainer):
        self.rho = trainer.args.sam_rho
        self.last: dict[str, object] = {}

    def forget_grad_at(self, trainer, params, theta, start, delta, forget_pass, run_pass):
        """The forget pass at theta + delta: its gradient (what it added to `.grad`) and its forget loss; the weights
        and `.grad` are back at theta and `start` afterwards, and the step's logged terms are left as they were.
        `theta` is a copy of the weights: restored by copy, as theta + delta - delta is not theta in floats."""
        logged = dict(trainer._step_metrics)
        with torch.no_grad():
            for p, d in zip(params, delta, strict=True):
                p.add_(d)
        _set_grads(params, start)
        trainer._step_metrics = {}
        try:
            run_pass(0, forget_pass)
        finally:
            with torch.no_grad():
                for p, t in zip(params, theta, strict=True):
                    p.copy_(t)
        grad = _minus(_grads(params), start)
        loss = trainer._step_metrics.get("forget_loss")
        trainer._step_metrics = logged
        _set_grads(params, start)
        return grad, loss

    def forget_gradient(self, trainer, params, theta, start, g_f, norm, forget_pass, run_pass):
        """The forget gradient the step keeps: SAM's, at theta + delta*."""
        delta = [self.rho * g / norm.clamp(min=1e-12) for g in g_f]
        grad, perturbed = self.forget_grad_at(trainer, params, theta, start, delta, forget_pass, run_pass)
        if perturbed is not None:
            trainer.log_metric("sam_forget_loss", perturbed)
        self.last["delta"] = delta
        return grad

    def combine(self, trainer, params, start, g_f, g_r) -> None:
        """SAM keeps `.grad` = start + g_f + g_r as the passes left it."""

    def run(self, trainer, model, passes: list, run_pass) -> torch.Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        start = _grads(params)
        loss = run_pass(0, passes[0])  # the forget rows at theta (the whole batch when passes do not split)
        g_theta = _minus(_grads(params), start)
        norm = _norm(g_theta)
        self.last = {"grad_norm": norm, "forget_grad_at_theta": g_theta}
        theta = [p.detach().clone() for p in params]  # one copy per step, for every perturbed pass
        g_f = self.forget_gradient(trainer, params, theta, start, g_theta, norm, passes[0], run_pass)
        with_forget = [s + f for s, f in zip(start, g_f, strict=True)]
        _set_grads(params, with_forget)
        for i, part in enumerate(passes[1:], start=1):  # the retain passes at theta; the last one all-reduces
            loss = loss + run_pass(i, part)
        g_r = _minus(_grads(params), with_forget)
        self.combine(trainer, params, start, g_f, g_r)
        trainer.log_metric("sam_grad_norm", norm)
        self.last.update({"forget_grad": g_f, "retain_grad": g_r})
        return loss


class StableUN(SharpnessAware):
    """The `stableun` plug-in: SAM's adversarial point and `stableun_noise_points` random points at radius rho, their
    forget gradients averaged, then projected off the retain gradient where the two conflict. The random directions
    are drawn from a generator seeded by (seed, step), so a run is reproducible."""

    def __init__(self, trainer):
        if trainer.args.world_size > 1:
            raise UnlearnError(
                "`smoothing: stableun` projects the forget gradient against the retain gradient, which it tells "
                "apart by what each pass adds to `.grad` before the all-reduce; run it on one process (or use `sam`)."
            )
        super().__init__(trainer)
        self.noise_points = trainer.args.stableun_noise_points
        self.seed = trainer.args.seed

    def forget_gradient(self, trainer, params, theta, start, g_f, norm, forget_pass, run_pass):
        grads = [super().forget_gradient(trainer, params, theta, start, g_f, norm, forget_pass, run_pass)]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + trainer.state.global_step)
        for _ in range(self.noise_points):
            u = [torch.randn(p.shape, generator=gen).to(p.device, p.dtype) for p in params]
            scale = self.rho / _norm(u).clamp(min=1e-12)
            delta = [scale * x for x in u]
            grad, _ = self.forget_grad_at(trainer, params, theta, start, delta, forget_pass, run_pass)
            grads.append(grad)
        return [sum(parts) / len(grads) for parts in zip(*grads, strict=True)]

    def combine(self, trainer, params, start, g_f, g_r) -> None:
        dot, rr = _dot(g_f, g_r), _dot(g_r, g_r)
        cos = dot / (_norm(g_f) * rr.sqrt()).clamp(min=1e-12)
        conflict = bool(dot < 0) and bool(rr > 0)
        if conflict:
            g_f = [f - (dot / rr) * r for f, r in zip(g_f, g_r, strict=True)]
        _set_grads(params, [s + f + r for s, f, r in zip(start, g_f, g_r, strict=True)])
        trainer.log_metric("stableun_cos", cos)
        trainer.log_metric("stableun_conflict", torch.tensor(float(conflict)))
        self.last["projected"] = g_f
