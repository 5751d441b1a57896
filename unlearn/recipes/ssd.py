"""Selective Synaptic Dampening (SSD): training-free forgetting of the weights the forget set depends on most.

Foster, Schoepf & Brintrup, "Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening"
(AAAI 2024, arXiv:2308.07707), Eq. 3-4. With []_F and []_R the diagonal Fisher information (mean squared gradient
of the answer NLL) of each weight on the forget and on the retain set, every weight far more important to the
forget set than to the retain set is dampened in proportion:

    theta_i <- beta_i * theta_i   where  []_F,i > alpha * []_R,i,     beta_i = min( lambda * []_R,i / []_F,i , 1 )

Two passes over the data (`ssd_batch_size` rows per gradient; 1: the per-example Fisher), no gradient steps: minutes
where training takes tens of minutes. The paper's I_D is over all training data; here it is the retain set given
(the data whose knowledge stays). Defaults alpha = 10, lambda = 1 and every parameter dampened are the paper's.
The embedding rows of tokens that occur in the forget set and never in the retain set have a retain importance of
0, so SSD zeroes them (and, with a tied output head, the model's ability to say those tokens at all): that is much
of how it forgets names. `ssd_skip` (a regex of parameter names) leaves parameters alone; on the tiny test model,
skipping the embeddings left the forget set untouched at alpha = 10 (forget NLL 0.008 -> 0.008; all parameters:
0.008 -> 2.5 with retain 0.009 -> 0.054).

The change is elementwise, which a LoRA adapter cannot hold: the run stores it as a sparse weight delta
(`unlearn.delta`: the changed elements' positions and new values), which `unlearn eval`, the attacks and the
benchmark load onto the base like any other run. Always `adapter: none`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import torch
from transformers.trainer_utils import TrainOutput

from ..config import UnlearnConfig
from ..data import pad_rows
from ..delta import save_delta
from ..errors import UnlearnError
from ..logprobs import model_logps
from ..trainer import UnlearnTrainer, mean_nll
from .registry import register


@dataclass
class SSDConfig(UnlearnConfig):
    recipe: str = field(default="ssd", metadata={"help": "Recipe name."})
    adapter: str = field(default="none", metadata={"help": "Always `none`: SSD changes the weights themselves."})
    ssd_alpha: float = field(
        default=10.0, metadata={"help": "alpha: dampen weights whose forget importance exceeds alpha x retain's."}
    )
    ssd_lambda: float = field(
        default=1.0, metadata={"help": "lambda: the dampening factor is min(lambda x retain / forget importance, 1)."}
    )
    ssd_batch_size: int = field(default=1, metadata={"help": "Rows per gradient in the Fisher estimates (1: exact)."})
    ssd_skip: str = field(
        default="",
        metadata={"help": "Regex of parameter names left unchanged (e.g. `embed_tokens`); empty: none (the paper)."},
    )
    retain_weight: float = field(
        default=1.0, metadata={"help": "Must be > 0: the retain set's importances decide what is kept."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.adapter != "none":
            raise UnlearnError(
                "`ssd` dampens individual weights, which a LoRA adapter cannot express; it always runs with "
                "`adapter: none` and stores its change as a sparse weight delta. Drop `adapter`."
            )
        if not self.uses_retain:
            raise UnlearnError("`ssd` compares forget and retain importances: it needs a retain set (`retain: ...`).")
        if self.ssd_alpha <= 0 or self.ssd_lambda <= 0 or self.ssd_batch_size < 1:
            raise UnlearnError(
                f"`ssd_alpha` and `ssd_lambda` must be > 0 and `ssd_batch_size` >= 1; got {self.ssd_alpha}, "
                f"{self.ssd_lambda}, {self.ssd_batch_size}."
            )
        if getattr(self.eval_strategy, "value", self.eval_strategy) != "no":
            raise UnlearnError("`ssd` takes no training steps to evaluate between; set `eval_strategy: no`.")


@register
class SSDTrainer(UnlearnTrainer):
    _name = "ssd"
    _paper = {
        "title": "Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening",
        "id": "2308.07707",
    }
    config_class = SSDConfig
    data_needs = "forget + retain: QA pairs or text"

    forget_loss = None  # no loss is minimized
    retain_loss = None

    def importance(self, model, examples: list[dict], params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
        """Diagonal Fisher information of the answer NLL over `examples`: mean over batches of squared gradients."""
        total = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        size = self.args.ssd_batch_size
        batches = 0
        for start in range(0, len(examples), size):
            batch = pad_rows(examples[start : start + size], self.processing_class.pad_token_id)
            batch = {k: v.to(self.args.device) for k, v in batch.items()}
            logps, n_tokens, _, _ = model_logps(
                model,
                batch["input_ids"],
                batch["attention_mask"],
                batch["labels"],
                self.loss_head(),
                self.args.loss_chunk_tokens,
            )
            grads = torch.autograd.grad(mean_nll(logps, n_tokens), list(params.values()), allow_unused=True)
            for (name, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    total[name] += g.float() ** 2
            batches += 1
        return {n: t / max(batches, 1) for n, t in total.items()}

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Dampen the selected weights in place; `self.changes` keeps what changed, for `save_model`."""
        started = time.time()
        model = self.model
        model.eval()  # the Fisher of the model as it answers: no dropout
        skip = re.compile(self.args.ssd_skip) if self.args.ssd_skip else None
        params = {n: p for n, p in model.named_parameters() if p.requires_grad and not (skip and skip.search(n))}
        if not params:
            raise UnlearnError(f"`ssd_skip: {self.args.ssd_skip!r}` leaves no parameter to dampen.")
        forget = self.importance(model, self.forget_examples, params)
        retain = self.importance(model, self.retain_examples, params)
        alpha, lam = self.args.ssd_alpha, self.args.ssd_lambda
        self.changes, changed, total = {}, 0, 0
        with torch.no_grad():
            for name, p in params.items():
                select = (forget[name] > alpha * retain[name]).view(-1)
                index = select.nonzero().squeeze(1)
                total += p.numel()
                if index.numel() == 0:
                    continue
                beta = (lam * retain[name].view(-1)[index] / forget[name].view(-1)[index]).clamp(max=1.0)
                flat = p.data.view(-1)
                flat[index] = (flat[index].float() * beta).to(p.dtype)
                self.changes[name] = (index, flat[index].clone())
                changed += index.numel()
        row = {
            "ssd_changed": changed,
            "ssd_changed_fraction": round(changed / max(total, 1), 8),
            "ssd_parameters_touched": len(self.changes),
            "train_runtime": round(time.time() - started, 2),
            "step": 0,
        }
        self.state.log_history.append(row)
        return TrainOutput(global_step=0, training_loss=0.0, metrics=row)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        out = output_dir or self.args.output_dir
        if not self.accelerator.is_main_process:
            return
        base = self.args.model_name_or_path or getattr(self.model.config, "_name_or_path", None)
        meta = {
            "base_model_name_or_path": base,
            "recipe": self._name,
            "ssd_alpha": self.args.ssd_alpha,
            "ssd_lambda": self.args.ssd_lambda,
        }
        save_delta(out, getattr(self, "changes", {}), meta)
        self.processing_class.save_pretrained(out)
