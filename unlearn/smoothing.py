"""`smoothing: sam`, a plug-in for every gradient recipe: the forget objective minimized at its worst nearby weights.

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

`delta` lives in the trainable parameters (the LoRA adapter by default, all weights with `adapter: none`); `rho`
is a radius in that space (`sam_rho`). A step keeps two extra copies of the trainable weights (delta and theta). The perturbed forget loss is logged as `sam_forget_loss` and ||g_f|| as
`sam_grad_norm`; `last` keeps the last micro-batch's vectors for inspection.
"""

from __future__ import annotations

import torch


def _grads(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def _set_grads(params: list[torch.nn.Parameter], grads: list[torch.Tensor]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()


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

    def run(self, trainer, model, passes: list, run_pass) -> torch.Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        start = _grads(params)
        loss = run_pass(0, passes[0])  # the forget rows at theta (the whole batch when passes do not split)
        g_f = [
            p.grad.detach() - s if p.grad is not None else torch.zeros_like(p)
            for p, s in zip(params, start, strict=True)
        ]
        norm = torch.sqrt(sum((g.float() ** 2).sum() for g in g_f))
        delta = [self.rho * g / norm.clamp(min=1e-12) for g in g_f]
        logged = dict(trainer._step_metrics)  # the terms at theta are what the step logs
        theta = [p.detach().clone() for p in params]  # restored by copy: theta + delta - delta is not theta in floats
        with torch.no_grad():
            for p, d in zip(params, delta, strict=True):
                p.add_(d)
        _set_grads(params, start)
        trainer._step_metrics = {}
        try:
            run_pass(0, passes[0])  # the forget rows at theta + delta*: this gradient is the step's
        finally:
            with torch.no_grad():
                for p, t in zip(params, theta, strict=True):
                    p.copy_(t)
        perturbed = trainer._step_metrics.get("forget_loss")
        trainer._step_metrics = logged
        for i, part in enumerate(passes[1:], start=1):
            loss = loss + run_pass(i, part)
        if perturbed is not None:
            trainer.log_metric("sam_forget_loss", perturbed)
        trainer.log_metric("sam_grad_norm", norm)
        self.last = {"forget_grad": g_f, "delta": delta, "grad_norm": norm}
        return loss
