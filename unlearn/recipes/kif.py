"""Knowledge-signature erasure (KIF): find where the forget set's knowledge lives in the activations, and remove it
there instead of suppressing the output.

After "Representation-Aware Unlearning via Activation Signatures: From Suppression to Knowledge-Signature Erasure":
the activation signature of the target knowledge is the subspace in which a layer's activations on the forget set
differ from those on the retain set; erasing it means that the model's internal state on a forget question no
longer carries what set it apart, so no output head, probe or relearning step finds it there.

1. Signature (once, on the frozen model): at layer l, the answer-token activations of the forget rows, centred on
   the retain rows' mean mu_r, D = H_f - mu_r; S = the top `kif_rank` right singular vectors of D (H x k).
2. Erasure: train the adapter so that the forget activations' coordinates in S vanish, and the retain
   activations stay where the frozen model has them:

       L = E_f || S^T (h_l(x_f) - mu_r) ||^2 / E_f^frozen[ same ]
         + retain_weight * E_r || h_l(x_r) - h_l^frozen(x_r) ||^2 / E_r^frozen || h_l(x_r) ||^2

   Both terms are relative (the forget term is the fraction of the signature's energy left, 1 at the start; the
   retain term the relative drift), so the defaults carry across models whose activation scales differ.

The layer machinery (LoRA on the MLPs of layers l-2..l, the layers above l not kept for backward) is RMU's; where
RMU steers forget activations to a random direction, KIF removes the measured one. The paper's exact procedure
is not reproduced here beyond this: its signature extraction and erasure objective as we read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..adapter import reference_mode
from ..config import UnlearnConfig
from ..data import IGNORE_INDEX
from ..errors import UnlearnError
from ..trainer import Term
from .registry import register
from .rmu import RMUTrainer, mlp_targets_up_to


@dataclass
class KIFConfig(UnlearnConfig):
    recipe: str = field(default="kif", metadata={"help": "Recipe name."})
    kif_layer: int = field(default=7, metadata={"help": "Decoder layer whose output carries the signature."})
    kif_rank: int = field(default=8, metadata={"help": "Dimensions of the knowledge signature (top singular)."})
    kif_retain_rows: int = field(
        default=256, metadata={"help": "Retain rows read for the retain mean mu_r (the first N)."}
    )
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the relative retain activation drift."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    lora_target_modules: object = field(
        default=None, metadata={"help": "Default: the MLP down-projections of layers kif_layer-2..kif_layer."}
    )

    def __post_init__(self):
        if self.lora_target_modules is None:
            self.lora_target_modules = mlp_targets_up_to(self.kif_layer)
        super().__post_init__()
        if self.kif_layer < 0 or self.kif_rank < 1:
            raise UnlearnError(f"`kif_layer` must be >= 0 and `kif_rank` >= 1; got {self.kif_layer}, {self.kif_rank}.")
        if self.adapter == "none":
            raise UnlearnError(
                "`kif` compares with the frozen model's activations (the adapter disabled); use `adapter: lora`."
            )


@register
class KIFTrainer(RMUTrainer):
    _name = "kif"
    _paper = {
        "title": "Representation-Aware Unlearning via Activation Signatures: From Suppression to Knowledge-Signature "
        "Erasure"
    }
    config_class = KIFConfig
    data_needs = "forget + retain: QA pairs or text"

    def layer_setting(self) -> tuple[int, str]:
        return self.args.kif_layer, "kif_layer"

    def signature(self, model) -> dict[str, torch.Tensor]:
        """S, mu_r and the normalizers, measured once on the frozen model."""
        if getattr(self, "_signature", None) is None:
            if not self.retain_examples:
                raise UnlearnError("`kif` finds the signature against the retain set: give `retain` data.")
            frozen = self.accelerator.unwrap_model(model)
            with reference_mode(frozen):
                h_f = self._answer_activations(frozen, self.forget_examples)
                h_r = self._answer_activations(frozen, self.retain_examples[: self.args.kif_retain_rows])
            mu_r = h_r.mean(0)
            _, _, vh = torch.linalg.svd(h_f - mu_r, full_matrices=False)
            basis = vh[: self.args.kif_rank].T  # (H, k)
            self._signature = {
                "basis": basis,
                "mu_r": mu_r,
                "energy": (((h_f - mu_r) @ basis) ** 2).sum(-1).mean().clamp(min=1e-12),
                "retain_scale": (h_r**2).sum(-1).mean().clamp(min=1e-12),
            }
        return self._signature

    def extra_losses(self, model, inputs, fwd):
        sig = self.signature(model)
        is_forget, h = inputs["is_forget"], fwd.extra["h"]
        scored = inputs["loss_labels"] != IGNORE_INDEX
        h_f = h[is_forget][scored[is_forget]].float()  # (N_f tokens, H)
        coords = (h_f - sig["mu_r"]) @ sig["basis"]
        terms = {"forget_loss": Term((coords**2).sum(-1).mean() / sig["energy"], self.args.forget_weight)}
        is_retain = ~is_forget
        if self.args.uses_retain and is_retain.any():
            frozen = self.accelerator.unwrap_model(model)
            with reference_mode(frozen):
                _, h_ref = self._hidden(frozen, inputs["input_ids"][is_retain], inputs["attention_mask"][is_retain])
            keep = scored[is_retain]
            drift = ((h[is_retain][keep].float() - h_ref[keep].float()) ** 2).sum(-1).mean() / sig["retain_scale"]
            terms["retain_loss"] = Term(drift, self.args.retain_weight, retain_side=True)
        return terms
