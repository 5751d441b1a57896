"""Plain supervised fine-tuning, on the same machinery as the recipes: it builds the models that unlearning is
measured against (TOFU's "target", trained on everything, and "retain" model, trained on the retain set only)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import UnlearnConfig, build_config
from .data import DataSource
from .trainer import UnlearnTrainer, mean_nll


@dataclass
class FinetuneConfig(UnlearnConfig):
    recipe: str = field(default="finetune", metadata={"help": "Supervised fine-tuning (not an unlearning recipe)."})
    adapter: str = field(default="none", metadata={"help": "TOFU's reference models are full fine-tunes."})
    learning_rate: float = field(default=1e-5, metadata={"help": "TOFU's fine-tuning learning rate."})


class FinetuneTrainer(UnlearnTrainer):
    """Minimizes the NLL of the data in the `forget` slot, which here is the data to learn."""

    _name = "finetune"
    _paper = {"title": "Supervised fine-tuning, as for TOFU's target and retain models", "id": "2401.06121"}
    config_class = FinetuneConfig

    def forget_loss(self, logps, n_tokens, index):
        return mean_nll(logps, n_tokens)


def finetune(
    model: torch.nn.Module,
    tokenizer,
    data: DataSource,
    output_dir: str | os.PathLike | None = None,
    callbacks: list | None = None,
    **overrides: Any,
) -> torch.nn.Module:
    """Fine-tune `model` on `data` (QA pairs or text); returns the trained model, saved to `output_dir` if given."""
    from .run import run

    values = {"recipe": "finetune", "retain_weight": 0.0, **overrides}
    if output_dir is not None:
        config = build_config({**values, "output_dir": str(output_dir)}, FinetuneConfig)
        return run(config, model, tokenizer, data, None, trainer_class=FinetuneTrainer, callbacks=callbacks)
    with tempfile.TemporaryDirectory(prefix="unlearn-ft-") as tmp:
        config = build_config({**values, "output_dir": tmp, "save_strategy": "no"}, FinetuneConfig)
        return run(config, model, tokenizer, data, None, save=False, trainer_class=FinetuneTrainer, callbacks=callbacks)
