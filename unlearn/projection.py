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


class GradientProjection:
    """The `gu` plug-in on the step's passes (`UnlearnTrainer.training_step`): the forget rows' pass and the retain
    passes run as usual, each through the Trainer's backward; their gradients are told apart by what each pass added
    to `.grad`, and before the optimizer sees them the forget part is replaced by its projection:

        .grad = grad before the step + project_out(g_f, history) + g_r

    `history` holds the last `projection_history` retain gradients. One process only (under DDP the last pass's
    all-reduce mixes the processes' forget and retain gradients). `last` keeps the last micro-batch's vectors.
    """

    def __init__(self, trainer):
        if trainer.args.world_size > 1:
            raise UnlearnError(
                "`projection: gu` tells forget from retain gradients by what each pass adds to `.grad`, before the "
                "all-reduce; run it on one process."
            )
        if not trainer.can_split_passes:
            raise UnlearnError(
                f"`projection: gu` needs the forget and retain rows in separate passes, and `{trainer._name}` reads "
                "them together; use it with a recipe whose losses split (ga family, npo, simnpo, idk, reglora)."
            )
        self.history: list[torch.Tensor] = []
        self.size = trainer.args.projection_history
        self.last: dict[str, torch.Tensor] = {}

    @staticmethod
    def _grads(params) -> torch.Tensor:
        return _flat([p.grad for p in params], params)

    def run(self, trainer, model, passes: list, run_pass) -> torch.Tensor:
        """Run the step's passes (`run_pass(i, part) -> loss`) and project the forget gradient of this micro-batch."""
        params = [p for p in model.parameters() if p.requires_grad]
        start = self._grads(params)
        loss = run_pass(0, passes[0])  # the forget rows
        after_forget = self._grads(params)
        for i, part in enumerate(passes[1:], start=1):
            loss = loss + run_pass(i, part)
        g_f = after_forget - start
        g_r = self._grads(params) - after_forget
        self.history = (self.history + [g_r.detach()])[-self.size :]
        projected = project_out(g_f, self.history)
        trainer.log_metric("gu_removed", (g_f - projected).norm() / g_f.norm().clamp(min=1e-12))
        self.last = {"forget_grad": g_f, "projected": projected, "retain_grad": g_r}
        total, offset = start + projected + g_r, 0
        for p in params:
            n = p.numel()
            p.grad = total[offset : offset + n].view_as(p).clone()
            offset += n
        return loss
