"""Representation Misdirection for Unlearning (RMU), the WMDP baseline.

Li et al., "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning" (arXiv:2403.03218), Sec. 5,
Eq. 1-2: at layer l, push the forget activations toward a fixed random direction scaled by c, and keep the retain
activations where the frozen model has them:

    L = mean_t || h_l(x_f)_t - c u ||^2  +  alpha * mean_t || h_l(x_r)_t - h_l^frozen(x_r)_t ||^2

(`mse_loss` over tokens and hidden units, as the reference implementation), u a seeded random unit vector. The
frozen model is the adapter-disabled model. Defaults are WMDP's for Zephyr-7B (layer 7, c = 6.5, alpha = 1200,
lr 5e-5), with the LoRA on the MLP down-projections of layers l-2..l, the parameters WMDP updates.

c only misdirects when it is large against the activations it replaces: WMDP's 6.5 suits Zephyr's layer 7, but
SmolLM2-135M's layer-7 activations have a norm near 145 per token, and there c = 6.5 moved nothing (every TOFU
metric equal to the target's). Adaptive RMU (Dang et al., "On Effects of Steering Latent Representation for Large
Language Model Unlearning", AAAI 2025, arXiv:2408.06223, Sec. 4) sets the coefficient from the model itself:

    c = beta * mean_t || h_l^frozen(x_f)_t ||

`steering_scale: beta` (their default 5) turns it on; the mean is taken once, over the scored tokens of the first
`ADAPTIVE_ROWS` forget rows in the frozen model (their code: the first batch), so that c is the same on every
launcher and after a resume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..adapter import reference_mode
from ..config import UnlearnConfig
from ..data import IGNORE_INDEX, pad_rows
from ..errors import UnlearnError
from ..logprobs import head_sequence_logps, sequence_logps
from ..trainer import Forward, Term, UnlearnTrainer
from .registry import register

logger = logging.getLogger(__name__)

ADAPTIVE_ROWS = 256  # forget rows Adaptive RMU's coefficient is measured on: enough for a stable mean norm


def mlp_targets_up_to(layer: int) -> list[str]:
    """The MLP down-projections of layers layer-2..layer: the parameters WMDP updates, for a loss read at `layer`."""
    return [f"layers.{i}.mlp.down_proj" for i in range(max(0, layer - 2), layer + 1)]


@dataclass
class RMUConfig(UnlearnConfig):
    recipe: str = field(default="rmu", metadata={"help": "Recipe name."})
    rmu_layer: int = field(
        default=7, metadata={"help": "Decoder layer whose output activations are steered (WMDP: 7)."}
    )
    steering_coef: float = field(
        default=6.5, metadata={"help": "c: the norm of the control vector (WMDP Zephyr: 6.5)."}
    )
    steering_scale: float | None = field(
        default=None,
        metadata={
            "help": "Adaptive RMU's beta: c = beta x the mean norm of the frozen model's layer-l forget activations "
            "(measured once on the forget rows), replacing `steering_coef`. Dang et al. use 5."
        },
    )
    retain_weight: float = field(default=1200.0, metadata={"help": "alpha: weight of the retain activation loss."})
    learning_rate: float = field(default=5e-5, metadata={"help": "WMDP's learning rate."})
    lora_target_modules: object = field(
        default=None, metadata={"help": "Default: the MLP down-projections of layers rmu_layer-2..rmu_layer."}
    )

    def __post_init__(self):
        if self.lora_target_modules is None:
            self.lora_target_modules = mlp_targets_up_to(self.rmu_layer)
        super().__post_init__()
        if self.rmu_layer < 0:
            raise UnlearnError(f"`rmu_layer` must be >= 0, got {self.rmu_layer}.")
        if self.adapter == "none" and (self.uses_retain or self.steering_scale is not None):
            raise UnlearnError(
                "`rmu` reads the frozen model's activations (the adapter disabled) for its retain term and for "
                "`steering_scale`; with `adapter: none` there is no frozen model, so the retain term would compare the "
                "model with itself. Use `adapter: lora`, or `retain_weight: 0` without `steering_scale`."
            )
        if self.steering_scale is not None and not self.steering_scale > 0:
            raise UnlearnError(
                f"`steering_scale` must be > 0 (Adaptive RMU's beta, e.g. 5), or left out to use `steering_coef`; "
                f"got {self.steering_scale}."
            )


def _detach_input(module, args, kwargs):
    """Forward pre-hook: the layer's hidden-state input without its autograd history."""
    if args:
        return (args[0].detach(), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": kwargs["hidden_states"].detach()}


@register
class RMUTrainer(UnlearnTrainer):
    _name = "rmu"
    _paper = {
        "title": "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning (RMU)",
        "id": "2403.03218",
    }
    config_class = RMUConfig
    data_needs = "forget (+ retain when retain_weight > 0): QA pairs or text"
    can_split_passes = False  # its retain term compares the retain rows of the forget rows' pass

    def layer_setting(self) -> tuple[int, str]:
        """The decoder layer whose output the losses read, and the setting that names it."""
        return self.args.rmu_layer, "rmu_layer"

    def _hidden(self, model, input_ids, attention_mask):
        """The model's outputs and its layer-l output activations, (B, T, H).

        The layers above l run on a detached input: the losses read layer l only, so nothing above it is kept for
        backward (for SmolLM2 at layer 7, 22 of 30 layers' activations). Where the losses apply the output head
        themselves, the model computes the last position's logits only (`outputs.logits` is then (B, 1, V)).
        """
        inner = self.accelerator.unwrap_model(model)
        n_layers = inner.config.num_hidden_layers
        layer, name = self.layer_setting()
        if layer >= n_layers - 1:
            raise UnlearnError(
                f"`{name}` {layer} must be below the last layer ({n_layers - 1}): the last hidden state is normalized."
            )
        if getattr(self, "_layer_above", None) is None:  # found once: the walk over every module is not per step
            layers = next(m for m in inner.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers)
            self._layer_above = layers[layer + 1]
        # Registered for this call only: the model leaves training (to evaluation, attacks, relearning) without it.
        hook = self._layer_above.register_forward_pre_hook(_detach_input, with_kwargs=True)
        extra = {"logits_to_keep": 1} if self.loss_head() is not None else {}
        try:
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **extra)
        finally:
            hook.remove()
        return out, out.hidden_states[layer + 1]

    @torch.no_grad()
    def _logps(self, out, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer log-probs of every row, for the forget-NLL metric (no gradient: RMU's losses read layer l)."""
        head = self.loss_head()
        if head is None:
            return sequence_logps(out.logits, labels)
        return head_sequence_logps(head, out.hidden_states[-1], labels, self.args.loss_chunk_tokens)

    def control_vector(self, hidden: int, device) -> torch.Tensor:
        if getattr(self, "_control", None) is None:
            g = torch.Generator().manual_seed(self.args.seed)
            u = torch.rand(hidden, generator=g)  # WMDP draws from U[0,1) and normalizes
            self._control = (u / u.norm()).to(device)
        return self._control

    @torch.no_grad()
    def _answer_activations(self, model, examples: list[dict]) -> torch.Tensor:
        """Layer-l activations of the scored tokens of `examples`, (N tokens, H)."""
        out = []
        for start in range(0, len(examples), self.args.per_device_eval_batch_size):
            batch = pad_rows(
                examples[start : start + self.args.per_device_eval_batch_size], self.processing_class.pad_token_id
            )
            batch = {k: v.to(self.args.device) for k, v in batch.items()}
            _, h = self._hidden(model, batch["input_ids"], batch["attention_mask"])
            out.append(h[batch["labels"] != IGNORE_INDEX].float())
        return torch.cat(out)

    def steering_coefficient(self, model) -> float:
        """c: `steering_coef`, or Adaptive RMU's beta x the frozen model's mean layer-l activation norm over the
        scored tokens of the first `ADAPTIVE_ROWS` forget rows: measured once, from the same rows on every process
        and after a resume, so that c does not depend on the launcher or on where training stopped."""
        if self.args.steering_scale is None:
            return self.args.steering_coef
        if getattr(self, "_adaptive_coef", None) is None:
            frozen = self.accelerator.unwrap_model(model)
            with reference_mode(frozen):
                norms = self._answer_activations(frozen, self.forget_examples[:ADAPTIVE_ROWS]).norm(dim=-1)
            mean_norm = norms.mean().item()
            self._adaptive_coef = self.args.steering_scale * mean_norm
            logger.info(
                "Adaptive RMU: c = %g x %.4g (mean layer-%d forget activation norm) = %.4g",
                self.args.steering_scale,
                mean_norm,
                self.layer_setting()[0],
                self._adaptive_coef,
            )
        return self._adaptive_coef

    def forward(self, model, inputs):
        """One pass over forget and retain rows, keeping the layer-l activations (`extra["h"]`)."""
        out, h = self._hidden(model, inputs["input_ids"], inputs["attention_mask"])
        logps, n_tokens = self._logps(out, inputs["loss_labels"])
        return Forward(logps, n_tokens, out, extra={"h": h})

    forget_loss = None  # both of RMU's terms are representation losses: `extra_losses`
    retain_loss = None

    def extra_losses(self, model, inputs, fwd):
        """Eq. 1-2: forget activations toward c u; retain activations where the frozen model has them."""
        is_forget, h = inputs["is_forget"], fwd.extra["h"]
        scored = inputs["loss_labels"] != IGNORE_INDEX  # answer tokens (QA) or every token (text)
        h_f = h[is_forget][scored[is_forget]]  # (N_f tokens, H)
        target = self.steering_coefficient(model) * self.control_vector(h.shape[-1], h.device)
        terms = {"forget_loss": Term(F.mse_loss(h_f.float(), target.expand_as(h_f).float()), self.args.forget_weight)}
        is_retain = ~is_forget
        if self.args.uses_retain and is_retain.any():
            frozen = self.accelerator.unwrap_model(model)
            with reference_mode(frozen):
                _, h_ref = self._hidden(frozen, inputs["input_ids"][is_retain], inputs["attention_mask"][is_retain])
            keep = scored[is_retain]
            retain = F.mse_loss(h[is_retain][keep].float(), h_ref[keep].float())
            terms["retain_loss"] = Term(retain, self.args.retain_weight, retain_side=True)
        return terms
