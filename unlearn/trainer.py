"""`UnlearnTrainer`: the machinery every recipe shares, written once.

A recipe subclasses it and overrides `forget_loss` (the paper's equation); everything else lives here:
- data: forget/retain loading, tokenization, and pairing (`unlearn.data`); a step's forget rows and its retain rows
  run as separate forward/backward passes (`split_passes`), so that activation memory is that of one group;
- the adapter: the model is wrapped in a LoRA adapter (`adapter: none` trains all weights);
- the reference model: the same model with the adapter disabled, never a second copy; the reference
  log-probabilities of the forget set are computed once before training when the recipe needs them;
- losses: `forget_weight * forget_loss + retain_weight * retain_loss`, each logged separately and averaged over
  processes; both are means of per-sequence values, so the result does not depend on how a global batch is split
  across processes or accumulation steps;
- safety: a NaN/inf loss or gradient stops training before the bad update is applied.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import Trainer, TrainerCallback, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .adapter import reference_mode, wrap_adapter
from .config import UnlearnConfig
from .data import (
    DataSource,
    ForgetRetainCollator,
    ForgetRetainDataset,
    detect_shape,
    load_records,
)
from .data import tokenize as tokenize_records
from .errors import NonFiniteLossError, UnlearnError
from .logprobs import batched_logps, final_hidden, head_kl, head_matches_logits, logits_kl, model_logps
from .precheck import missing_retain_message, position_limit_warning
from .recipe_catalogue import paper_title

logger = logging.getLogger(__name__)

REFERENCE_FILE = "reference_logps.pt"  # in a checkpoint: the reference values a resumed run must not recompute


def mean_nll(logps: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Mean over sequences of the per-token NLL of each sequence."""
    return (-logps / n_tokens.clamp(min=1)).mean()


@dataclass
class Forward:
    """One forward pass over a batch, as the loss terms read it."""

    logps: torch.Tensor  # (B,) summed answer log-probs
    n_tokens: torch.Tensor  # (B,) answer tokens
    outputs: Any  # the model's outputs (`outputs.logits`: full, or the last position only when `hidden` is set)
    hidden: torch.Tensor | None = None  # (B, T, H) final hidden states, when the losses apply the head themselves
    extra: dict[str, Any] = field(default_factory=dict)  # what a recipe's own `forward` adds (e.g. RMU's layer)


@dataclass
class Term:
    """One named term of the loss: `weight * value`, logged as `value` under its name."""

    value: torch.Tensor
    weight: float = 1.0
    retain_side: bool = False  # a retain term: gradient projection (`projection: gu`) keeps it and projects the rest


def paper(cls) -> str:
    """`Title (arXiv:id)` of a trainer's `_paper`."""
    return paper_title(getattr(cls, "_paper", None))


class _SetEpoch(TrainerCallback):
    """Tells the paired dataset which epoch it is in, so that retain sampling advances per epoch."""

    def __init__(self, dataset: ForgetRetainDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(math.floor((state.epoch or 0) + 1e-6))


class _SaveReference(TrainerCallback):
    """Writes the trainer's cached reference values into each checkpoint it saves (`UnlearnTrainer.train` reads
    them back on resume)."""

    def __init__(self, trainer: UnlearnTrainer):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        saved = self.trainer.reference_state()
        if saved and state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            torch.save(saved, folder / REFERENCE_FILE)


class _FiniteGuard(TrainerCallback):
    """Raises before `optimizer.step()` when any gradient is NaN/inf, so the weights stay at the last good step.

    Gradients are identical on every process after the all-reduce, so every process stops at the same step.
    """

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            raise NonFiniteLossError(state.global_step + 1)


class UnlearnTrainer(Trainer):
    """Base trainer for unlearning recipes. Subclasses set `_name`, `_paper` and override `forget_loss`."""

    _name: ClassVar[str] = "base"
    _paper: ClassVar[dict[str, str]] = {}  # {"title": ..., "id": arXiv id}, as TRL's trainers carry it
    config_class: ClassVar[type[UnlearnConfig]] = UnlearnConfig
    data_needs: ClassVar[str] = "forget: QA pairs or text"
    needs_reference: ClassVar[bool] = False  # True: reference log-probs of the forget set, computed once
    # The cached reference values, saved with every checkpoint: a resumed full fine-tune has no adapter to switch off,
    # so recomputing them would score the half-unlearned weights instead of the model before unlearning.
    reference_attrs: ClassVar[tuple[str, ...]] = ("reference_logps",)
    # False for recipes whose extra terms read forget and retain rows together (RMU, SAE).
    can_split_passes: ClassVar[bool] = True
    # Losses are per-batch means: the Trainer must divide them by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: torch.nn.Module,
        args: UnlearnConfig,
        forget: DataSource,
        retain: DataSource | None = None,
        processing_class=None,
        **kwargs: Any,
    ):
        if processing_class is None:
            raise UnlearnError("`processing_class` (the tokenizer) is required to tokenize forget/retain data.")
        self.forget_records, self.retain_records = self.load_data(args, forget, retain)
        warning = position_limit_warning(args.max_length, getattr(model.config, "max_position_embeddings", None))
        if warning:
            logger.warning(warning)
        self.forget_examples = self._tokenize(self.forget_records, processing_class, args, "forget")
        self.retain_examples = (
            self._tokenize(self.retain_records, processing_class, args, "retain") if args.uses_retain else []
        )
        dataset = ForgetRetainDataset(
            self.forget_examples,
            self.retain_examples,
            args.retain_ratio,
            args.retain_sampling,
            args.seed,
            *self._entities(args),
        )
        set_seed(args.seed)  # before the adapter is created, so its initialization is reproducible
        callbacks = [*(kwargs.pop("callbacks", None) or []), _SetEpoch(dataset), _FiniteGuard(), _SaveReference(self)]
        self.suite_evaluation = None
        if getattr(args.eval_strategy, "value", args.eval_strategy) != "no":
            from .evaluation.during_training import SuiteEvaluation

            self.suite_evaluation = SuiteEvaluation(args, processing_class)
            callbacks.append(self.suite_evaluation)
            # The Trainer insists on an eval dataset when it schedules evaluations; ours is the suite (`evaluate`).
            kwargs.setdefault("eval_dataset", self.forget_examples)
        super().__init__(
            model=wrap_adapter(model, args),
            args=args,
            train_dataset=dataset,
            data_collator=ForgetRetainCollator(processing_class.pad_token_id),
            processing_class=processing_class,
            callbacks=callbacks,
            **kwargs,
        )
        zero3 = self.is_deepspeed_enabled and getattr(self.accelerator.state.deepspeed_plugin, "zero_stage", 0) == 3
        if self.suite_evaluation is not None and (self.is_fsdp_enabled or zero3):
            raise UnlearnError(
                "Evaluation during training reads the whole model, which FSDP / ZeRO-3 shard over the "
                "processes. Evaluate after training instead (`eval_suite` with `eval_strategy: no`)."
            )
        self.reference_logps: torch.Tensor | None = None
        self.retain_reference: torch.Tensor | None = None  # `retain_loss: hold`: the retain rows' answer log-probs
        self._loss_head: torch.nn.Module | bool | None = None  # None: not decided yet; False: full logits
        self._metrics: dict[str, list[torch.Tensor]] = defaultdict(list)  # per step, averaged at the next log
        self._step_metrics: dict[str, torch.Tensor] = {}  # this step's terms, summed over its passes
        self.gradient_plugin = None
        if args.projection == "gu":
            from .projection import GradientProjection

            self.gradient_plugin = GradientProjection(self)
        elif args.smoothing != "none":
            if self.is_deepspeed_enabled:
                raise UnlearnError(
                    f"`smoothing: {args.smoothing}` moves the weights between backward passes of a step, and "
                    "DeepSpeed steps its optimizer inside each backward; run it without DeepSpeed (DDP or FSDP)."
                )
            from .smoothing import SharpnessAware, StableUN

            self.gradient_plugin = {"sam": SharpnessAware, "stableun": StableUN}[args.smoothing](self)

    # ---- data -------------------------------------------------------------------------------------------------

    @classmethod
    def load_data(cls, args: UnlearnConfig, forget: DataSource, retain: DataSource | None = None) -> tuple:
        """(forget records, retain records or None), checked: a retain set where the recipe uses one, neither
        empty, each with the columns the run reads. Needs no model: `unlearn forget` calls it before loading one."""
        if args.uses_retain and retain is None:
            raise UnlearnError(missing_retain_message(cls._name, args.retain_weight))
        sets = {"forget": load_records(forget), "retain": load_records(retain) if args.uses_retain else None}
        for what, ds in sets.items():
            if ds is not None:
                if len(ds) == 0:
                    raise UnlearnError(f"The {what} set is empty: give at least one example.")
                detect_shape(ds, args.question_key, args.answer_key, args.text_key, what)
        return sets["forget"], sets["retain"]

    def _tokenize(self, ds, tokenizer, args: UnlearnConfig, what: str) -> list[dict]:
        shape = detect_shape(ds, args.question_key, args.answer_key, args.text_key, what)
        if what == "forget":
            ds = self.transform_forget(ds, shape, args)
        return tokenize_records(
            ds, tokenizer, shape, args.max_length, args.question_key, args.answer_key, args.text_key
        )

    def _entities(self, args: UnlearnConfig) -> tuple[list | None, list | None]:
        """Each forget row's entity and each retain row's (None: general knowledge), for `retain_sampling: entity`."""
        if args.retain_sampling != "entity":
            return None, None
        key = args.entity_key
        if key not in self.forget_records.column_names:
            raise UnlearnError(
                f"`retain_sampling: entity` groups forget rows by their `{key}` column, which the forget set lacks "
                f"(it has {self.forget_records.column_names}). Add it, or name the column with `entity_key`."
            )
        retain = self.retain_records
        has = retain is not None and key in retain.column_names
        return list(self.forget_records[key]), (list(retain[key]) if has else None)

    def transform_forget(self, ds, shape: str, args: UnlearnConfig):
        """Hook for recipes that rewrite the forget data before tokenization (e.g. `idk` swaps in refusals)."""
        return ds

    # ---- forward ----------------------------------------------------------------------------------------------

    def loss_head(self) -> torch.nn.Module | None:
        """The output head the losses apply themselves, chunk by chunk (`unlearn.logprobs`), or None for the
        model's full logits. Decided once: None when `loss_chunk_tokens: 0`, under FSDP or DeepSpeed ZeRO-3 (the
        head's weights are gathered only inside the model's forward), or when the head does not reproduce the
        model's logits (soft-capped or scaled logits)."""
        if self._loss_head is None:
            self._loss_head = self._find_loss_head() or False
        return self._loss_head or None

    def _find_loss_head(self) -> torch.nn.Module | None:
        if self.args.loss_chunk_tokens == 0:
            return None
        zero3 = self.is_deepspeed_enabled and getattr(self.accelerator.state.deepspeed_plugin, "zero_stage", 0) == 3
        if self.is_fsdp_enabled or zero3:
            logger.info("Losses use the model's full logits: under FSDP / ZeRO-3 the output head is sharded.")
            return None
        inner = self.accelerator.unwrap_model(self.model)
        head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
        probe = torch.tensor([self.forget_examples[0]["input_ids"][:16]], device=self.args.device)
        if head is None or not head_matches_logits(inner, head, probe):
            logger.warning(
                "The model's logits are not its output head applied to its last hidden state (soft-capped or scaled "
                "logits?): the losses use the full logits, which take more memory. `loss_chunk_tokens: 0` says so."
            )
            return None
        return head

    # ---- reference --------------------------------------------------------------------------------------------

    def compute_reference_logps(
        self, model: torch.nn.Module | None = None, examples: list[dict] | None = None
    ) -> torch.Tensor:
        """Per-sequence answer log-probs of every forget example (or of `examples`) under the reference model, (N,).

        `model` is the model as the Trainer wrapped it (DDP, FSDP, DeepSpeed): the forward passes go through the
        wrapper, so sharded weights are gathered as in training, while the adapter is switched off underneath.
        Every process scores the whole forget set, so all processes make the same collective calls.
        """
        inner = self.accelerator.unwrap_model(self.model)
        with reference_mode(inner):
            logps, _ = batched_logps(
                model if model is not None else inner,
                self.forget_examples if examples is None else examples,
                self.processing_class.pad_token_id,
                self.args.per_device_eval_batch_size,
                self.loss_head(),
                self.args.loss_chunk_tokens,
            )
        return logps.to(self.args.device)

    def reference_state(self) -> dict[str, torch.Tensor]:
        """The reference values computed so far (`reference_attrs`), for a checkpoint."""
        return {a: getattr(self, a).cpu() for a in self.reference_attrs if getattr(self, a, None) is not None}

    def train(self, resume_from_checkpoint=None, **kwargs):
        """As `Trainer.train`; a resumed run takes the reference values its checkpoint saved instead of recomputing
        them (a checkpoint from before they were saved is refused under full fine-tuning, where they would be
        wrong)."""
        if self.needs_reference and isinstance(resume_from_checkpoint, (str, os.PathLike)):
            path = Path(resume_from_checkpoint) / REFERENCE_FILE
            if path.is_file():
                for name, value in torch.load(path, map_location="cpu").items():
                    setattr(self, name, value.to(self.args.device))
            elif self.args.adapter == "none":
                raise UnlearnError(
                    f"Checkpoint {resume_from_checkpoint} has no {REFERENCE_FILE}: recipe `{self._name}` compares "
                    "with the model before unlearning, which a resumed full fine-tune cannot recompute. Start the "
                    "run again (`overwrite: true`)."
                )
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    # ---- the recipe contract -------------------------------------------------------------------------------------
    #
    # A recipe supplies its forget loss (`forget_loss`, on the forget rows' answer log-probs) and, where it has them,
    # named extra terms (`extra_losses`: a penalty on the adapter, a representation loss over forget and retain rows
    # together); a recipe whose losses read more than the answer log-probs also supplies its `forward`. The base
    # adds the retain loss (`retain_loss`, set by `retain_loss: nll | kl`), sums the weighted terms, logs each by
    # name, and splits the step into passes where the terms allow it. No recipe overrides the step or the sum.

    def forward(self, model, inputs) -> Forward:
        """The batch's forward pass: answer log-probs of every row, and what the losses read besides."""
        logps, n_tokens, outputs, hidden = model_logps(
            model,
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["loss_labels"],
            self.loss_head(),
            self.args.loss_chunk_tokens,
        )
        return Forward(logps, n_tokens, outputs, hidden)

    def forget_loss(self, logps: torch.Tensor, n_tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The recipe's loss on forget rows: `logps` (B_f,) summed answer log-probs, `n_tokens` (B_f,). A recipe
        whose forget loss is one of its `extra_losses` sets `forget_loss = None`."""
        raise NotImplementedError(f"Recipe `{self._name}` must override `forget_loss`.")

    def extra_losses(self, model, inputs, fwd: Forward) -> dict[str, Term]:
        """Named terms added to the loss and logged under their names; none by default. Called once per step (in
        the pass that holds the forget rows); a term that reads retain rows too needs `can_split_passes = False`."""
        return {}

    def retain_loss(self, model, fwd: Forward, inputs, is_retain: torch.Tensor) -> torch.Tensor:
        """Per retain row (B_r,), the `retain_loss` term (`retain_term`). The base weighs rows by
        `retain_row_weight`."""
        return self.retain_term(self.args.retain_loss, model, fwd, inputs, is_retain)

    def retain_term(self, kind: str, model, fwd: Forward, inputs, is_retain: torch.Tensor) -> torch.Tensor:
        """Per retain row (B_r,): `nll`, its answer's mean token NLL; `hold`, that NLL's excess over the reference
        model's (zero where the row is as likely as before: the answer is held where it was, not trained further);
        or `kl`, KL(reference || model) of the next-token distributions averaged over its answer tokens.

        `fwd.hidden` is the whole batch's final hidden states when the losses apply the head themselves, else None
        and `fwd.outputs.logits` (B, T, V) are full; retain rows are selected only for `kl`, as a boolean index
        copies.
        """
        n_tokens = fwd.n_tokens[is_retain].clamp(min=1)
        if kind == "nll":
            return -fwd.logps[is_retain] / n_tokens
        if kind == "hold":
            if self.retain_reference is None:  # once, at the first retain rows: every process scores the whole set
                self.retain_reference = self.compute_reference_logps(model, self.retain_examples)
            reference = self.retain_reference[inputs["index"][is_retain]]
            return ((reference - fwd.logps[is_retain]) / n_tokens).clamp(min=0)
        return self.reference_kl(model, fwd, inputs, is_retain)

    def reference_kl(self, model, fwd: Forward, inputs, rows: torch.Tensor, adjust=None) -> torch.Tensor:
        """Per selected row (`rows`, a boolean mask over the batch): KL(reference || model) of the next-token
        distributions averaged over its answer tokens, the reference being the adapter-disabled model run on those
        rows; `adjust(ref_logits, targets)` rewrites the reference's logits first (UNDIAL's teacher)."""
        ref = self.accelerator.unwrap_model(model)
        ids, mask, labels = (inputs[k][rows] for k in ("input_ids", "attention_mask", "loss_labels"))
        head = self.loss_head()
        if head is not None:
            with reference_mode(ref):
                _, ref_hidden = final_hidden(ref, ids, mask)
            reference = functools.partial(reference_mode, ref)
            chunk = self.args.loss_chunk_tokens
            return head_kl(head, fwd.hidden[rows], ref_hidden, labels, chunk, reference, adjust)
        with reference_mode(ref):
            ref_logits = ref(input_ids=ids, attention_mask=mask).logits
        return logits_kl(fwd.outputs.logits[rows], ref_logits, labels, adjust)

    # ---- the step ---------------------------------------------------------------------------------------------

    def loss_terms(self, model, inputs) -> tuple[dict[str, Term], Forward]:
        """Every term of this pass's loss, by name: `forget_loss` (on its forget rows), `retain_loss` (its retain
        rows' share of the step's retain mean: rows weighted by `retain_row_weight`), and the recipe's extras."""
        if self.needs_reference and self.reference_logps is None:
            # Once, at the first step: the model is wrapped and placed by then, under every distributed setup.
            self.reference_logps = self.compute_reference_logps(model)
        fwd = self.forward(model, inputs)
        is_forget, index = inputs["is_forget"], inputs["index"]
        terms: dict[str, Term] = {}
        if is_forget.any():
            if self.forget_loss is not None:
                value = self.forget_loss(fwd.logps[is_forget], fwd.n_tokens[is_forget], index[is_forget])
                terms["forget_loss"] = Term(value, self.args.forget_weight)
            terms.update(self.extra_losses(model, inputs, fwd))
        is_retain = ~is_forget
        if self.retain_loss is not None and self.args.uses_retain and is_retain.any():
            per_row = self.retain_loss(model, fwd, inputs, is_retain)
            value = (per_row * inputs["retain_row_weight"][is_retain].to(per_row.dtype)).sum()
            terms["retain_loss"] = Term(value, self.args.retain_weight, retain_side=True)
        if is_forget.any():
            self._step_metrics["forget_nll"] = mean_nll(fwd.logps[is_forget], fwd.n_tokens[is_forget]).detach()
        for name, term in terms.items():  # summed over the passes of a step (a split retain mean adds up)
            self._step_metrics[name] = self._step_metrics.get(name, 0.0) + term.value.detach().float()
        return terms, fwd

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        terms, fwd = self.loss_terms(model, inputs)
        loss = sum(t.weight * t.value for t in terms.values())
        return (loss, fwd.outputs) if return_outputs else loss

    def split_passes(self, inputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """A step's batch as passes: the forget rows, then the retain rows in groups as large as the forget rows.

        Each retain row carries its weight in the step's retain mean (`retain_row_weight`), so the passes'
        gradients add up to the one-pass gradient exactly. Each pass is cut to its own longest row (rows are right
        padded and attention is causal).
        """
        is_forget = inputs["is_forget"]
        n_forget, n_rows = int(is_forget.sum()), len(is_forget)
        # A gradient plug-in (gu, sam) tells the forget gradient from the retain one by pass.
        split = self.args.split_passes or self.gradient_plugin is not None
        if (
            not (split and self.can_split_passes)
            or n_forget in (0, n_rows)
            or self.is_deepspeed_enabled  # DeepSpeed steps its optimizer inside every backward
        ):
            return [inputs]
        rows = torch.arange(n_rows)
        passes = []
        for group in [rows[:n_forget], *rows[n_forget:].split(n_forget)]:
            width = int(inputs["attention_mask"][group].sum(-1).max())
            passes.append({k: v[group][:, :width] if v.dim() == 2 else v[group] for k, v in inputs.items()})
        return passes

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The step as an explicit loop over its passes (`split_passes`), each through the Trainer's own step (loss
        scaling, backward); a gradient plug-in (`projection: gu`, `smoothing: sam`) runs the loop itself and adjusts
        `.grad` or the weights between passes."""
        self._step_metrics = {}
        passes = self.split_passes(inputs)

        def run_pass(i: int, part: dict[str, Any]) -> torch.Tensor:
            # Gradients are all-reduced once, after the last pass (under accumulation, the Trainer's own `no_sync`
            # around this call already holds it back).
            last = i == len(passes) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                return super(UnlearnTrainer, self).training_step(model, part, num_items_in_batch)

        if self.gradient_plugin is not None:
            loss = self.gradient_plugin.run(self, model, passes, run_pass)
        else:
            loss = sum((run_pass(i, part) for i, part in enumerate(passes)), torch.zeros((), device=self.args.device))
        for name, value in self._step_metrics.items():
            self._metrics[name].append(value)
        return loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """With `eval_suite` and `eval_strategy`, an evaluation is the suite on the model as it is now (on the main
        process; the others receive its figures), logged as `eval_<metric>` for the Trainer's best-checkpoint and
        early-stopping machinery."""
        if self.suite_evaluation is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        from accelerate.utils import broadcast_object_list

        holder = [None]
        if self.accelerator.is_main_process:
            holder[0] = self.suite_evaluation.metrics(self.accelerator.unwrap_model(self.model), metric_key_prefix)
        metrics = broadcast_object_list(holder)[0] if self.accelerator.num_processes > 1 else holder[0]
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def log_metric(self, name: str, value: torch.Tensor) -> None:
        """Record a recipe-specific value; it is averaged over steps and processes at the next log."""
        self._metrics[name].append(value.detach().float())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._metrics and "loss" in logs:  # a training log, not the end-of-train summary
            for name, values in sorted(self._metrics.items()):
                value = self.accelerator.reduce(torch.stack(values).float().mean(), reduction="mean")
                logs[name] = round(value.item(), 6)
            self._metrics.clear()
        super().log(logs, start_time)
