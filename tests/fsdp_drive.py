"""Train a recipe's adapter under FSDP2 on CPU processes, driven the way the Trainer drives it.

accelerate (1.16) turns FSDP on only for GPU-like process groups: its `AcceleratorState` sets `DistributedType.FSDP`
when the launch type is MULTI_GPU/NPU/XPU/..., not MULTI_CPU, so `accelerate launch` with `recipes/accelerate/
fsdp.yaml` on CPU processes trains plain DDP (which `UnlearnConfig` refuses). torch's FSDP2 itself (`fully_shard`)
runs on gloo. This script does what `Trainer.train` does with accelerate's FSDP2 plugin (TRANSFORMER_BASED_WRAP,
FULL_STATE_DICT), with the pieces the Trainer uses:

- the recipe's Trainer is built as `unlearn forget` builds it (adapter, data, the distributed data loader);
- `fully_shard` on every decoder layer (`_no_split_modules`), then on the root, as accelerate's `fsdp2_prepare_model`;
- the Trainer's own optimizer and scheduler, created over the sharded (DTensor) parameters;
- each step through the recipe's `training_step` (its passes; NPO's reference log-probs, at the first step, run
  through the sharded model), then gradient clipping, `optimizer.step`, `lr_scheduler.step`, as the Trainer's loop;
- at the end the full state dict gathered (`get_model_state_dict(full_state_dict=True)`), the adapter saved by
  the main process as an ordinary PEFT adapter, and evaluated there with the run's `eval_suite`.

    torchrun --nproc_per_node 2 tests/fsdp_drive.py RUN.yaml

writes, in the run's `output_dir`, adapter_model.safetensors (+ adapter_config.json), eval/, and fsdp.json (what
was sharded, per process).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from unlearn.adapter import wrap_adapter
from unlearn.loading import ensure_pad_token, load_model_and_tokenizer
from unlearn.precheck import read_recipe_values
from unlearn.recipes import get_recipe, recipe_config
from unlearn.run import _evaluate_run


def shard(model: torch.nn.Module) -> int:
    """FSDP2 units as accelerate's TRANSFORMER_BASED_WRAP makes them: each decoder layer, then the root."""
    names = set(getattr(model.get_base_model(), "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return len(layers)


def main(config_path: str) -> None:
    config = recipe_config(read_recipe_values(config_path, {}))
    model, tokenizer = load_model_and_tokenizer(config.model_name_or_path, config.dtype)
    ensure_pad_token(tokenizer)
    trainer = get_recipe(config.recipe)(
        model=model, args=config, forget=config.forget, retain=config.retain, processing_class=tokenizer
    )
    rank, world = dist.get_rank(), dist.get_world_size()
    units = shard(trainer.model)
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    local = sum(p.to_local().numel() for p in trainable if isinstance(p, DTensor))
    full = sum(p.numel() for p in trainable)

    loader = trainer.get_train_dataloader()
    steps_per_epoch = len(loader)
    epochs = math.ceil(config.num_train_epochs)
    trainer.create_optimizer_and_scheduler(num_training_steps=steps_per_epoch * epochs)
    trainer.current_gradient_accumulation_steps = 1
    losses = []
    for epoch in range(epochs):
        trainer.train_dataset.set_epoch(epoch)  # what the Trainer's `_SetEpoch` callback does
        loader.set_epoch(epoch)
        for inputs in loader:
            losses.append(trainer.training_step(trainer.model, inputs).item())
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            trainer.optimizer.step()
            trainer.lr_scheduler.step()
            trainer.model.zero_grad()

    state = get_model_state_dict(trainer.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    out = Path(config.output_dir)
    if rank == 0:
        # The gathered weights into a fresh, unsharded copy: an ordinary PEFT adapter, saved and evaluated.
        base, _ = load_model_and_tokenizer(config.model_name_or_path, config.dtype)
        whole = wrap_adapter(base, config)
        set_peft_model_state_dict(whole, get_peft_model_state_dict(whole, state_dict=state))
        whole.save_pretrained(out)
        if config.eval_suite:
            _evaluate_run(whole, tokenizer, config)
    report = {"rank": rank, "world": world, "units": units, "local_trainable": local, "trainable": full}
    reports = [None] * world
    dist.all_gather_object(reports, {**report, "losses": losses})
    if rank == 0:
        (out / "fsdp.json").write_text(json.dumps(reports, indent=2))
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
