"""SAE-latent redirection: make a forgotten entity look, inside the model, like an entity it never knew.

Following "Sparse-Autoencoder-Guided Internal Representation Unlearning for LLMs": a sparse autoencoder (sae-lens)
reads layer `sae_layer`; the known profile mu_k is the mean SAE latent vector of the entities the model knows (forget
and retain entities), the unknown profile mu_u that of fabricated names. For each forget entity e, with z(e) the SAE
latents at the last token of `entity_template` filled with e:

    L = mean_e [ ||z(e) - mu_u||^2 - separation_weight * ||z(e) - mu_k||^2 ] / d_sae
        + retain_weight * ( NLL(retain answers) + mean_r ||z(r) - z_ref(r)||^2 / d_sae )
        + forget_weight * (-NLL(forget answers))   (0 by default: the representation carries the forgetting)

A LoRA adapter on the layers up to the SAE layer is trained. `separation()` reports, per forget entity,
(||z - mu_k|| - ||z - mu_u||) / ||mu_k - mu_u||: negative = reads as known, positive = reads as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..adapter import reference_mode
from ..config import UnlearnConfig
from ..data import name_counts
from ..errors import UnlearnError, require
from ..trainer import Term, UnlearnTrainer, mean_nll
from .registry import register

FIRST = ["Alder", "Brisa", "Corvin", "Dalia", "Emrys", "Fenna", "Galen", "Hesper", "Ilsa", "Joren", "Kaida", "Lio"]
LAST = ["Quenby", "Marrowfield", "Tessaly", "Ondrake", "Vellacourt", "Pimsleigh", "Rathbone", "Sorvik", "Wendermere"]
LLAMA_MODULES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def fabricated_names(n: int, seed: int = 0) -> list[str]:
    """Names of people who do not exist (first x last syllables), for the unknown-entity profile."""
    rng = np.random.default_rng(seed)
    pairs = {(FIRST[int(rng.integers(len(FIRST)))], LAST[int(rng.integers(len(LAST)))]) for _ in range(n * 4)}
    return [f"{a} {b}" for a, b in sorted(pairs)][:n]


@dataclass
class SAEUnlearnConfig(UnlearnConfig):
    recipe: str = field(default="sae", metadata={"help": "Recipe name."})
    sae_path: str | None = field(default=None, metadata={"help": "Directory of a sae-lens SAE (`unlearn sae-train`)."})
    sae_layer: int = field(default=0, metadata={"help": "Decoder layer whose output the SAE reads."})
    forget_entities: Any = field(
        default=None, metadata={"help": "Entities to forget; default: names in forget answers."}
    )
    retain_entities: Any = field(default=None, metadata={"help": "Entities to keep; default: names in retain answers."})
    unknown_entities: Any = field(default=None, metadata={"help": "Unknown entities; default: fabricated names."})
    entity_template: str = field(default="Tell me about {name}", metadata={"help": "Prompt ending with the entity."})
    separation_weight: float = field(default=0.5, metadata={"help": "Weight of the push away from the known profile."})
    forget_weight: float = field(default=0.0, metadata={"help": "Weight of gradient ascent on forget answers."})
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of retain NLL + retain latent drift."})
    lora_target_modules: Any = field(default=None, metadata={"help": "Default: every linear of layers 0..sae_layer."})

    def __post_init__(self):
        if self.lora_target_modules is None:
            self.lora_target_modules = [f"layers.{i}.{m}" for i in range(self.sae_layer + 1) for m in LLAMA_MODULES]
        super().__post_init__()
        if not self.sae_path:
            raise UnlearnError(
                "`sae` needs `sae_path`, a sparse autoencoder for layer `sae_layer`; train one with "
                "`unlearn sae-train --model MODEL --text FILE --layer N --out DIR`."
            )


@register
class SAEUnlearnTrainer(UnlearnTrainer):
    _name = "sae"
    _paper = {"title": "Sparse-Autoencoder-Guided Internal Representation Unlearning for LLMs"}
    config_class = SAEUnlearnConfig
    data_needs = "forget + retain QA naming entities (or entity lists); a trained SAE (extra `sae`)"
    can_split_passes = False  # its retain drift is counted with the forget rows' pass

    def __init__(self, model, args, forget, retain=None, processing_class=None, **kwargs):
        sae_lens = require("sae_lens", "sae")
        super().__init__(model, args, forget, retain, processing_class, **kwargs)
        self.sae = sae_lens.SAE.load_from_disk(args.sae_path, device=str(self.args.device)).eval()
        for p in self.sae.parameters():
            p.requires_grad_(False)
        f_rows = [dict(r) for r in self.forget_records]
        r_rows = [dict(r) for r in self.retain_records] if self.retain_records is not None else []
        self.forget_entities = list(args.forget_entities or self._names(f_rows))
        self.retain_entities = [
            e for e in (args.retain_entities or self._names(r_rows)) if e not in self.forget_entities
        ]
        self.unknown_entities = list(args.unknown_entities or fabricated_names(16, args.seed))
        if not self.forget_entities:
            raise UnlearnError("No forget entity: give `forget_entities` or forget answers that name them.")
        base = self.accelerator.unwrap_model(self.model)
        with reference_mode(base):
            known = self.latents(base, self.forget_entities + self.retain_entities)
            self.mu_known, self.mu_unknown = known.mean(0), self.latents(base, self.unknown_entities).mean(0)
            self.retain_ref = self.latents(base, self.retain_entities) if self.retain_entities else None

    @staticmethod
    def _names(rows) -> list[str]:
        return [n for n, c in name_counts(r.get("answer", "") for r in rows).most_common() if c > 1][:8]

    def latents(self, model, entities: list[str]) -> torch.Tensor:
        """SAE latents at the last token of the template for each entity, (E, d_sae)."""
        tok = self.processing_class
        side, tok.padding_side = tok.padding_side, "left"  # the last position is the entity's last token
        try:
            enc = tok([self.args.entity_template.format(name=e) for e in entities], return_tensors="pt", padding=True)
        finally:
            tok.padding_side = side
        enc = {k: v.to(self.args.device) for k, v in enc.items()}
        h = model(**enc, output_hidden_states=True).hidden_states[self.args.sae_layer + 1][:, -1]  # (E, H)
        return self.sae.encode(h.float())

    def separation(self) -> list[float]:
        model = self.accelerator.unwrap_model(self.model)
        with torch.no_grad():
            z = self.latents(model, self.forget_entities)
        gap = (self.mu_known - self.mu_unknown).norm().clamp(min=1e-8)
        return (((z - self.mu_known).norm(dim=-1) - (z - self.mu_unknown).norm(dim=-1)) / gap).tolist()

    def forget_loss(self, logps, n_tokens, index):
        return -mean_nll(logps, n_tokens)

    def extra_losses(self, model, inputs, fwd):
        """The latent redirection of the forget entities and, with a retain set, the drift of the retain ones."""
        d = self.mu_known.numel()
        n_forget = len(self.forget_entities)
        z_all = self.latents(model, self.forget_entities + self.retain_entities)  # one pass for both lists
        z = z_all[:n_forget]
        redirect = (
            (z - self.mu_unknown).square().sum(-1) - self.args.separation_weight * (z - self.mu_known).square().sum(-1)
        ).mean() / d
        terms = {"latent_redirect": Term(redirect)}
        if self.retain_ref is not None and self.args.uses_retain and (~inputs["is_forget"]).any():
            drift = (z_all[n_forget:] - self.retain_ref).square().sum(-1).mean() / d
            terms["retain_latent_drift"] = Term(drift, self.args.retain_weight, retain_side=True)
        return terms


def train_sae(
    model_path: str,
    texts: list[str],
    layer: int,
    out: str,
    d_sae: int | None = None,
    training_tokens: int = 200_000,
    context_size: int = 128,
    l1_coefficient: float = 0.01,
    lr: float = 1e-3,
):
    """Train a standard SAE on `model_path`'s layer-`layer` output with sae-lens, offline, on `texts`; save to `out`."""
    import datasets
    from transformers import AutoConfig

    sl = require("sae_lens", "sae")
    hidden = AutoConfig.from_pretrained(model_path).hidden_size
    cfg = sl.LanguageModelSAERunnerConfig(
        sae=sl.StandardTrainingSAEConfig(d_in=hidden, d_sae=d_sae or 4 * hidden, l1_coefficient=l1_coefficient),
        model_name=model_path,
        model_class_name="AutoModelForCausalLM",
        hook_name=f"model.layers.{layer}",
        dataset_path="local",
        is_dataset_tokenized=False,
        streaming=False,
        context_size=context_size,
        training_tokens=training_tokens,
        train_batch_size_tokens=256,
        n_batches_in_buffer=4,
        store_batch_size_prompts=8,
        device="cpu",
        logger=sl.LoggingConfig(log_to_wandb=False),
        output_path=out,
        n_checkpoints=0,
        lr=lr,
        verbose=False,
    )
    ds = datasets.Dataset.from_list([{"text": t} for t in texts])
    return sl.LanguageModelSAETrainingRunner(cfg, override_dataset=ds).run()
