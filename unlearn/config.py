"""The run configuration: one dataclass per recipe, on top of `transformers.TrainingArguments`.

A YAML file in `recipes/` is a flat list of overrides of these defaults; `key=value` on the command line overrides
the file. Every default lives here, once: docs and `--help` text read it from the field metadata.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from transformers import TrainingArguments

from .errors import UnlearnError
from .precheck import DEFAULT_KEYS, check_settings, unknown_key_message
from .rundir import default_output_dir

# TrainingArguments fields that hold secrets; never written into a saved config.
SECRET_FIELDS = {"hub_token"}


@dataclass
class UnlearnConfig(TrainingArguments):
    """Shared settings of every recipe: model, data, adapter, loss weights, and the Trainer's own arguments."""

    recipe: str = field(default="ga", metadata={"help": "Recipe name; `unlearn recipes` lists them."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Local directory or Hub id of the causal LM to unlearn (CLI only)."}
    )
    dtype: str = field(
        default="float32", metadata={"help": "dtype to load the model in: float32, bfloat16, float16 or auto."}
    )
    forget: Any = field(
        default=None,
        metadata={
            "help": "Forget data: a local .json/.jsonl/.csv/.parquet file or directory, `tofu:forget10`, a Hub "
            "dataset id, or a mapping {path, name, split}."
        },
    )
    quantization: str = field(
        default="none",
        metadata={
            "help": "`4bit` (QLoRA: NF4 base weights, LoRA adapter in `dtype`) or `8bit` loads the base model with "
            "bitsandbytes (extra `quant`); `none` keeps it in `dtype`. CLI only: a model passed from Python is "
            "used as loaded."
        },
    )
    retain: Any = field(default=None, metadata={"help": "Retain data, in the same forms as `forget`."})
    target: str | None = field(
        default=None,
        metadata={
            "help": 'Forget a target instead of a forget set (`target="Harry Potter"`): the forget, neighbor and '
            "retain sets are built by probing the model into OUTPUT_DIR/target/ (`forget`/`retain` left out)."
        },
    )
    request: str | None = field(
        default=None,
        metadata={
            "help": 'A target in plain words (`request="forget everything about Harry Potter\'s friends"`), '
            "parsed into a target and a scope and echoed back."
        },
    )
    question_key: str = field(
        default=DEFAULT_KEYS["question_key"], metadata={"help": "Column holding the question (QA data)."}
    )
    answer_key: str = field(
        default=DEFAULT_KEYS["answer_key"], metadata={"help": "Column holding the answer (QA data)."}
    )
    text_key: str = field(default=DEFAULT_KEYS["text_key"], metadata={"help": "Column holding raw text (text data)."})
    max_length: int = field(default=512, metadata={"help": "Longest tokenized example; longer ones are truncated."})

    retain_ratio: int = field(
        default=2,
        metadata={
            "help": "Retain examples drawn per forget example. 1 (one-to-one) sees too little of the retain set "
            "to hold utility; 2 doubles it at the cost of one more forward row per forget row. 0 disables retain."
        },
    )
    retain_sampling: str = field(
        default="cycle",
        metadata={
            "help": "`cycle`: walk a shuffled retain set without repeats until it is exhausted; `random`: draw "
            "with replacement; `entity`: modular entity-level sampling (MELU, arXiv:2509.05316): batches hold one "
            "entity's forget rows (column `entity_key`), each bringing rows of that entity's neighbor set (retain "
            "rows with the same `entity_key`) and of the general set (retain rows without one), in turn. All depend "
            "only on (seed, epoch, forget index), not on the number of processes."
        },
    )
    entity_key: str = field(
        default="entity",
        metadata={"help": "`retain_sampling: entity`: the column naming each forget row's entity (and a neighbor's)."},
    )

    adapter: str = field(
        default="lora", metadata={"help": "`lora` trains a LoRA adapter; `none` fine-tunes all weights."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: Any = field(
        default="all-linear", metadata={"help": "Modules that get LoRA: a list of names, or `all-linear`."}
    )
    lora_layers: Any = field(
        default=None,
        metadata={
            "help": "Layers whose `lora_target_modules` get LoRA (default: every layer): a list of indices, `A-B` "
            "(both included), or `P%`, the first P percent of the layers (recipes/target.yaml: `50%`)."
        },
    )

    forget_weight: float = field(default=1.0, metadata={"help": "Weight of the forget loss."})
    retain_weight: float = field(default=0.0, metadata={"help": "Weight of the retain loss (0 ignores retain data)."})
    retain_loss: str = field(
        default="nll",
        metadata={
            "help": "`nll` on retain answers; `hold`, the retain NLL only where it exceeds the reference "
            "(adapter-disabled) model's (the answers held where they were, not trained further); or `kl` to the "
            "reference model; the refusal recipes (idk, idkdpo) also take `ap`, answer preservation (the true "
            "answer kept likelier than a refusal), and `nll+ap`, `hold+ap` or `kl+ap`, a retain loss with it."
        },
    )
    retain_losses: ClassVar[tuple[str, ...]] = ("nll", "hold", "kl")  # the `retain_loss` values this recipe implements

    split_passes: bool = field(
        default=True,
        metadata={
            "help": "Run a step's forget rows, then its retain rows in groups as large as the forget rows, as "
            "separate forward/backward passes whose gradients add up: the same update, with the activation memory "
            "of one group instead of all `(1 + retain_ratio) x batch` rows. False: one pass over all rows (fewer, "
            "larger matmuls; can be faster on a GPU with memory to spare)."
        },
    )
    loss_chunk_tokens: int = field(
        default=512,
        metadata={
            "help": "Labelled tokens per pass through the output head in the losses: the (batch, length, vocabulary) "
            "logits are never built, each chunk's are recomputed in backward (`unlearn.logprobs`). 0 uses the full "
            "logits the model returns (more memory, no recomputation)."
        },
    )

    eval_suite: str | None = field(
        default=None,
        metadata={"help": "Evaluate the result with this suite (e.g. `tofu`) into `output_dir/eval` after training."},
    )
    eval_params: Any = field(default=None, metadata={"help": "Suite parameters, e.g. {forget_split: forget01}."})
    eval_reference: str | None = field(
        default=None,
        metadata={"help": "Reference evaluation for forget quality / privleak; without it they are skipped."},
    )
    eval_utility_floor: float | None = field(
        default=None,
        metadata={
            "help": "With evaluation during training (`eval_strategy: steps` and `eval_suite`): the fraction of the "
            "model utility before unlearning to keep. Logs `eval_forget_quality_at_floor` (forget quality where the "
            "utility ratio is at least this, else 0), for `metric_for_best_model`."
        },
    )
    stop_at_forget_quality: float | None = field(
        default=None,
        metadata={
            "help": "With evaluation during training: stop at the first evaluation whose forget quality reaches this "
            "(e.g. 0.05) with the utility above `eval_utility_floor`."
        },
    )
    projection: str = field(
        default="none",
        metadata={"help": "`gu`: remove from the forget gradient its part in the span of recent retain gradients."},
    )
    projection_history: int = field(default=8, metadata={"help": "Retain gradients that span the `gu` subspace."})
    smoothing: str = field(
        default="none",
        metadata={
            "help": "`sam`: minimize the forget loss at its worst weights within `sam_rho` (sharpness-aware "
            "unlearning, arXiv:2502.05374): two forget passes per step. `stableun`: the forget gradients at SAM's "
            "point and `stableun_noise_points` random ones averaged, then projected off a conflicting retain "
            "gradient (arXiv:2509.20230)."
        },
    )
    sam_rho: float = field(
        default=0.01,
        metadata={"help": "`smoothing: sam | stableun`: radius of the weight perturbation (trainable weights)."},
    )
    stableun_noise_points: int = field(
        default=1,
        metadata={"help": "`smoothing: stableun`: random points (radius `sam_rho`) beside SAM's adversarial one."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an earlier unlearn run in `output_dir`."})
    resume: bool = field(default=False, metadata={"help": "Continue the run in `output_dir` from its last checkpoint."})
    keep_checkpoints: bool = field(
        default=False, metadata={"help": "Keep intermediate checkpoints after a run completes."}
    )

    # TrainingArguments defaults that suit unlearning with a LoRA adapter.
    output_dir: str | None = field(default=None, metadata={"help": "Run directory; defaults to `runs/<recipe>`."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (1e-5 is TOFU's for full FT)."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs over the forget set (TOFU: 5)."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Forget examples per device per step."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (TOFU: 0.01)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N optimizer steps."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint: `epoch`, `steps` or `no`."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept during training."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False: batches are nested."})
    report_to: Any = field(default="none", metadata={"help": "Experiment trackers (`none`, `wandb`, ...)."})

    def __post_init__(self):
        if self.output_dir is None:
            self.output_dir = str(default_output_dir(self.recipe))
        # Ranges first: TrainingArguments and torch would refuse some of these later, in their own words.
        check_settings(vars(self))
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _has_accelerator():
            # Launched as several processes on a machine without an accelerator (`torchrun`, or `accelerate launch
            # --multi_gpu`): without `use_cpu` the Trainer would run each process alone instead of DDP over gloo.
            self.use_cpu = True
            _refuse_sharding_without_accelerator()
        if self.retain_sampling == "entity":
            # The dataset orders the epoch entity by entity (seeded); the Trainer must read it in that order.
            self.train_sampling_strategy = "sequential"
        super().__post_init__()
        _check_choice("adapter", self.adapter, ("lora", "none"))
        if "ap" in self.retain_loss.split("+") and self.retain_loss not in self.retain_losses:
            raise UnlearnError(
                f"`retain_loss: {self.retain_loss}` (answer preservation) keeps the true answer likelier than a refusal, so only the "
                f"refusal recipes (idk, idkdpo) have it; recipe `{self.recipe}` takes {' or '.join(self.retain_losses)}."
            )
        _check_choice("retain_loss", self.retain_loss, self.retain_losses)
        _check_choice("retain_sampling", self.retain_sampling, ("cycle", "random", "entity"))
        _check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16", "auto"))
        _check_choice("projection", self.projection, ("none", "gu"))
        _check_choice("smoothing", self.smoothing, ("none", "sam", "stableun"))
        if self.smoothing != "none" and self.projection != "none":
            raise UnlearnError(
                f"`smoothing: {self.smoothing}` and `projection: {self.projection}` each rewrite the step's gradient; "
                "choose one."
            )
        if self.smoothing != "none" and not self.sam_rho > 0:
            raise UnlearnError(f"`sam_rho` must be > 0 (a radius in weight space, e.g. 0.01), got {self.sam_rho}.")
        if self.stableun_noise_points < 0:
            raise UnlearnError(f"`stableun_noise_points` must be >= 0, got {self.stableun_noise_points}.")
        _check_choice("quantization", self.quantization, ("none", "4bit", "8bit"))
        if self.quantization != "none" and self.adapter == "none":
            raise UnlearnError(
                f"`quantization: {self.quantization}` freezes the base weights in low precision; only an adapter can "
                "be trained on them. Use `adapter: lora` or `quantization: none`."
            )
        if self.projection == "gu" and not self.uses_retain:
            raise UnlearnError(
                "`projection: gu` projects against retain gradients: it needs `retain_weight` > 0 and a retain set."
            )
        if self.remove_unused_columns:
            raise UnlearnError("`remove_unused_columns` must be False: unlearning batches carry extra columns.")
        if {"kl", "hold"} & set(self.retain_loss.split("+")) and self.adapter == "none":
            raise UnlearnError(
                f"`retain_loss: {self.retain_loss}` needs the reference model, which is the base model with the "
                "adapter disabled; with `adapter: none` there is no adapter to disable. Use `adapter: lora` or "
                "`retain_loss: nll`."
            )
        evaluating = getattr(self.eval_strategy, "value", self.eval_strategy) != "no"
        if evaluating and not self.eval_suite:
            raise UnlearnError(
                f"`eval_strategy: {getattr(self.eval_strategy, 'value', self.eval_strategy)}` evaluates during "
                "training with the run's `eval_suite`, and none is set. Set `eval_suite` (e.g. `tofu`, with "
                "`eval_params`), or `eval_strategy: no`."
            )
        for name in ("eval_utility_floor", "stop_at_forget_quality"):
            if getattr(self, name) is not None and not evaluating:
                raise UnlearnError(
                    f"`{name}` acts on evaluations during training: set `eval_strategy: steps` and "
                    "`eval_steps` (and `eval_suite`)."
                )
        if self.eval_utility_floor is not None and not 0 < self.eval_utility_floor <= 1:
            raise UnlearnError(
                f"`eval_utility_floor` is a fraction of the utility before unlearning, in (0, 1]; got "
                f"{self.eval_utility_floor}."
            )
        if self.resume and self.overwrite:
            raise UnlearnError("`resume` and `overwrite` contradict each other; pass one of them.")

    # Fields that __post_init__ computes from others; saving them would make the saved config contradict itself.
    derived_fields: typing.ClassVar[frozenset[str]] = frozenset()

    @property
    def uses_retain(self) -> bool:
        return self.retain_weight > 0 and self.retain_ratio > 0

    def to_yaml_dict(self) -> dict[str, Any]:
        """Every field, resolved, in a form `load_config` reads back (secrets left out)."""
        out = {}
        for f in dataclasses.fields(self):
            if not f.init or f.name in SECRET_FIELDS or f.name in self.derived_fields or f.name.startswith("_"):
                continue
            out[f.name] = _plain(getattr(self, f.name))
        return out


def _has_accelerator() -> bool:
    import torch

    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def _refuse_sharding_without_accelerator() -> None:
    """accelerate (1.16) turns on FSDP and DeepSpeed only for GPU-like process groups: on CPU processes an FSDP or
    DeepSpeed config silently trains plain DDP, every process holding the whole model. Say so instead."""
    for env, kind in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(env, "false").lower() == "true":
            raise UnlearnError(
                f"This launch asks for {kind} ({env}=true, from an accelerate config with `distributed_type: "
                f"{kind.upper()}`), but the machine has no GPU: accelerate runs processes on the CPU only as DDP "
                "(`MULTI_CPU`), so the model would not be sharded and each process would hold all of it. On the CPU "
                "launch with recipes/accelerate/ddp.yaml (DDP over gloo); FSDP and DeepSpeed need GPUs."
            )


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UnlearnError(f"`{name}` must be one of {', '.join(choices)}; got {value!r}.")


def _plain(value: Any) -> Any:
    """A YAML-safe copy of a config value (enums to their value, tuples to lists)."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def build_config(values: dict[str, Any], config_class: type[UnlearnConfig]) -> UnlearnConfig:
    """Instantiate `config_class` from flat `values`, rejecting unknown keys with suggestions.

    By recipe name instead of class: `unlearn.recipes.recipe_config(values)`.
    """
    known = [f.name for f in dataclasses.fields(config_class) if f.init]
    for key in values:
        if key not in known:
            raise UnlearnError(unknown_key_message(values.get("recipe", "ga"), key, known))
    hints = _type_hints(config_class)
    return config_class(**{k: _coerce(k, v, hints.get(k)) for k, v in values.items()})


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only disables coercion
        return {}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """YAML reads `3e-3` (no dot) as a string; turn such strings into the number the field declares."""
    if not isinstance(value, str):
        return value
    kinds = set(typing.get_args(hint)) | {hint}
    for kind in (int, float):
        if kind in kinds:
            try:
                return kind(value)
            except ValueError:
                if kind is float or float not in kinds:
                    raise UnlearnError(f"`{key}` must be a number, got {value!r}.") from None
    return value
