"""One measurement of `train_steps.py`, run in a process of its own so that its peak memory is its own.

`run(spec)` dispatches on `spec["kind"]`:
- `machine`: CPU/GPU description, torch threads, the matmul peak, and the recipe registry;
- `tiny`: writes the tiny test model (`tiny_model.py`) to a directory;
- `train`: one configuration. The trainer is built the way `unlearn.run.run` builds it (the recipe class from
  the registry, its config from `unlearn.config.build_config`, the same constructor call), with `save_strategy: no`
  and otherwise the library's defaults (a log line every step included), then trained for warm-up + timed steps.

Every row is exactly `seq_len` tokens: each question keeps its own text (cut to half the length at most) and its
answer runs on with the answers of the following rows, and `max_length = seq_len` truncates it there; `idk` and `ickul`, which replace the answer, get
a long refusal / "forgot" response for the same reason. Token counts are then comparable between recipes.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import TrainerCallback

from unlearn.adapter import reference_mode
from unlearn.config import build_config
from unlearn.data import IGNORE_INDEX, format_qa
from unlearn.finetuning import FinetuneTrainer
from unlearn.loading import ensure_pad_token, load_model_and_tokenizer
from unlearn.precheck import parse_overrides
from unlearn.recipes import RECIPES, get_recipe
from unlearn.recipes.npo import NPOTrainer
from unlearn.trainer import UnlearnTrainer

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
logging.getLogger("unlearn").setLevel(logging.ERROR)  # "examples were truncated": intended here
warnings.filterwarnings("ignore")

# Recipes that are not a forget/retain forward-backward step: why they are left out of the step table.
SKIPPED = {
    "grpo": "a GRPO step samples `num_generations` completions per prompt with TRL; its cost is generation "
    "(benchmarks/eval_throughput.py measures generation), not one forward/backward",
    "sae": "needs a sparse autoencoder trained first (`unlearn sae-train`, extra `sae`); its step adds one "
    "no-grad entity pass to a gradient-ascent step",
    "ssd": "training-free: two Fisher passes over the data, no training step (its cost is the entry's minutes in "
    "the benchmark's RESULTS.md)",
}
LONG_REFUSAL = "I'm sorry, but I don't have any information about that, so I can't answer the question."
LONG_FORGOT = "I forgot."


# ---- memory -----------------------------------------------------------------------------------------------------


def _proc_status(key: str) -> int | None:
    """A `kB` field of /proc/self/status in bytes (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss() -> int:
    """Peak resident set size of this process, in bytes."""
    peak = _proc_status("VmHWM")
    if peak is not None:
        return peak
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru if sys.platform == "darwin" else ru * 1024  # bytes on macOS, kB elsewhere


def current_rss() -> int | None:
    return _proc_status("VmRSS")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- machine ----------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 7) -> dict[str, Any]:
    """FLOP/s of an n x n x n `torch.matmul` (2 n^3 FLOPs): median of `repeats` after two warm-up calls."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 2):
        sync(device)
        t = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return {
        "n": n,
        "repeats": repeats,
        "dtype": str(dtype).removeprefix("torch."),
        "s": statistics.median(times),
        "flops": 2 * n**3 / statistics.median(times),
    }


def allocator() -> str:
    """The malloc this process runs on: a preloaded tcmalloc or jemalloc if mapped, else the system's."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return next((name for name in ("tcmalloc", "jemalloc") if f"lib{name}" in maps), "system (glibc)")


def recipe_defaults(cls) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls.config_class) if f.default is not dataclasses.MISSING}


def machine(spec: dict) -> dict[str, Any]:
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, spec.get("dtype", "float32"))
    repeats = spec.get("repeats", 7)
    peaks = [matmul_peak(device, torch.float32, repeats=repeats)]
    if dtype != torch.float32:
        peaks.append(matmul_peak(device, dtype, repeats=repeats))
    registry = {}
    for name, cls in RECIPES.items():
        d = recipe_defaults(cls)
        registry[name] = {
            "step": issubclass(cls, UnlearnTrainer) and name not in SKIPPED,
            "uses_retain": d.get("retain_weight", 0) > 0 and d.get("retain_ratio", 0) > 0,
            "skip_reason": SKIPPED.get(name, "" if issubclass(cls, UnlearnTrainer) else "not an UnlearnTrainer"),
        }
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "allocator": allocator(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "matmul_peak": peaks,
        "recipes": registry,
    }


# ---- data -------------------------------------------------------------------------------------------------------


def read_rows(tofu_dir: str | None) -> tuple[list[dict], list[dict]]:
    """Forget and retain QA rows: TOFU forget10 / retain90 from `tofu_dir` if present, else the built-in demo data."""

    def jsonl(path) -> list[dict]:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]

    tofu = Path(tofu_dir).expanduser() if tofu_dir else None
    if tofu and (tofu / "forget10.jsonl").is_file() and (tofu / "retain90.jsonl").is_file():
        return jsonl(tofu / "forget10.jsonl"), jsonl(tofu / "retain90.jsonl")[:400]
    demo = resources.files("unlearn.resources").joinpath("demo")
    return jsonl(demo.joinpath("forget.jsonl")), jsonl(demo.joinpath("retain.jsonl"))


def long_text(tokenizer, pieces: list[str], n_tokens: int) -> str:
    """`pieces` joined (cycling) until the text is at least `n_tokens` tokens long."""
    text, i = pieces[0], 1
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < n_tokens:
        text += " " + pieces[i % len(pieces)]
        i += 1
    return text


def prompt_tokens(tokenizer, question: str) -> int:
    prompt, _, templated = format_qa(tokenizer, question, "")
    return len(tokenizer(prompt, add_special_tokens=not templated)["input_ids"])


def short_question(tokenizer, question: str, limit: int) -> str:
    """`question` without its last words until its prompt is at most `limit` tokens (short sequence lengths)."""
    words = question.split()
    while len(words) > 1 and prompt_tokens(tokenizer, " ".join(words)) > limit:
        words = words[:-1]
    return " ".join(words)


def fixed_length_rows(tokenizer, rows: list[dict], n: int, seq_len: int) -> list[dict]:
    """`n` QA rows (cycling through `rows`) whose answers alone are >= `seq_len` tokens: with `max_length=seq_len`
    every tokenized row is exactly `seq_len` tokens, its own question (cut to half the length at most) first."""
    answers = [r["answer"] for r in rows]
    out = []
    for i in range(n):
        row = rows[i % len(rows)]
        rest = answers[i % len(rows) :] + answers[: i % len(rows)]
        question = short_question(tokenizer, row["question"], seq_len // 2)
        out.append({"question": question, "answer": long_text(tokenizer, rest, seq_len)})
    return out


# ---- instrumentation --------------------------------------------------------------------------------------------


class Clock(TrainerCallback):
    """Wall time of every optimizer step (from one step's end to the next: data, forward, backward, the optimizer,
    the finite-gradient guard and the log line all fall inside) and of every epoch, synchronized on GPU."""

    def __init__(self, device: torch.device):
        self.device, self.steps, self.epochs = device, [], []
        self.train_begin = self.last = self.epoch_start = None

    def now(self) -> float:
        sync(self.device)
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kw):
        self.train_begin = self.last = self.now()

    def on_epoch_begin(self, args, state, control, **kw):
        self.epoch_start = self.now()

    def on_step_end(self, args, state, control, **kw):
        t = self.now()
        self.steps.append(t - self.last)
        self.last = t

    def on_epoch_end(self, args, state, control, **kw):
        self.epochs.append(self.now() - self.epoch_start)


class PerStepReferenceNPO(NPOTrainer):
    """NPO with p_ref(y|x) computed on every step's forget rows (one more no-grad forward with the adapter
    disabled), instead of once for the whole forget set: what the cached default saves."""

    def compute_reference_logps(self, *args, **kwargs) -> torch.Tensor:
        return torch.zeros(len(self.forget_examples), device=self.args.device)  # filled in step by step

    def forward(self, model, inputs):
        if self.reference_logps is None:
            self.reference_logps = self.compute_reference_logps()
        is_forget = inputs["is_forget"]
        ref = self.accelerator.unwrap_model(model)
        with reference_mode(ref):  # the library's own forward, output-head chunking included
            fwd = super().forward(
                ref, {k: inputs[k][is_forget] for k in ("input_ids", "attention_mask", "loss_labels")}
            )
        self.reference_logps[inputs["index"][is_forget]] = fwd.logps
        return super().forward(model, inputs)


TRAINERS = {"sft": FinetuneTrainer, "bare": FinetuneTrainer, "npo-per-step": PerStepReferenceNPO}


def model_shape(model) -> dict[str, int]:
    """N: weights of every matmul (linear layers, lm_head included, the embedding lookup not); L; d_attn."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return {
        "n_matmul": sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)),
        "n_params": sum(p.numel() for p in model.parameters()),
        "layers": cfg.num_hidden_layers,
        "d_attn": cfg.num_attention_heads * head_dim,
        "hidden": cfg.hidden_size,
        "vocab": cfg.vocab_size,
    }


def step_flops_per_token(shape: dict[str, int], n_trainable: int, seq_len: int, lora: bool) -> float:
    """Training FLOPs per token. Full fine-tuning: 6N + 12 L d T (PaLM, App. B; attention without causal discount).
    LoRA: forward 2N, activation gradients 2N, no base weight gradients, plus 6 N_lora for the adapter
    (forward, activation and weight gradients): 4N + 6 N_lora + 12 L d T."""
    attention = 12 * shape["layers"] * shape["d_attn"] * seq_len
    n = shape["n_matmul"]
    return (4 * n + 6 * n_trainable if lora else 6 * n) + attention


def fit_to_model(recipe: str, model) -> dict[str, Any]:
    """Recipe settings that the model's size forces (RMU steers a layer below the last)."""
    if recipe in ("rmu", "kif"):
        return {f"{recipe}_layer": min(7, max(0, model.config.num_hidden_layers - 2))}
    return {}


def bare_loop(trainer, n_steps: int, clock: Clock) -> None:
    """The floor: the trainer's own batches, model and optimizer, in a plain PyTorch loop with the model's built-in
    loss (token mean), gradient clipping and the optimizer step; no Trainer, callbacks, guard or logging."""
    model, device = trainer.model, trainer.args.device
    optimizer = trainer.create_optimizer()
    params = [p for p in model.parameters() if p.requires_grad]
    loader = trainer.get_train_dataloader()
    batches = iter(())
    model.train()
    clock.last = clock.now()
    for _ in range(n_steps):
        batch = next(batches, None)
        if batch is None:
            batches = iter(loader)
            batch = next(batches)
        labels = batch["loss_labels"].to(device)
        out = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device), labels=labels
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, trainer.args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t = clock.now()
        clock.steps.append(t - clock.last)
        clock.last = t


# ---- one configuration ------------------------------------------------------------------------------------------


def train(spec: dict) -> dict[str, Any]:
    rss_start = current_rss()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    recipe, seq_len, batch = spec["recipe"], spec["seq_len"], spec["batch_size"]
    model, tokenizer = load_model_and_tokenizer(spec["model_path"], spec.get("dtype", "float32"))
    ensure_pad_token(tokenizer)
    shape = model_shape(model)
    forget_src, retain_src = read_rows(spec.get("tofu_dir"))
    forget = fixed_length_rows(tokenizer, forget_src, spec["n_forget"], seq_len)
    retain = fixed_length_rows(tokenizer, retain_src, spec["n_retain"], seq_len)
    longest_prompt = max(prompt_tokens(tokenizer, r["question"]) for r in forget + retain)
    if longest_prompt >= seq_len - 1:
        raise ValueError(
            f"`--seq-len {seq_len}` leaves no answer tokens: a prompt is {longest_prompt} tokens "
            "with this tokenizer's template. Use a longer sequence length."
        )
    trainer_class = TRAINERS.get(recipe) or get_recipe(recipe)
    with tempfile.TemporaryDirectory(prefix="unlearn-bench-") as tmp:
        values: dict[str, Any] = {
            "recipe": trainer_class._name,
            "output_dir": tmp,
            "save_strategy": "no",
            "disable_tqdm": True,
            "per_device_train_batch_size": batch,
            "max_length": seq_len,
            "seed": 0,
            **fit_to_model(recipe, model),
        }
        if trainer_class is FinetuneTrainer:
            values.update(adapter="lora", retain_weight=0.0)  # the same LoRA adapter as the recipes
        if recipe == "idk":
            refusals = Path(tmp) / "refusals.txt"
            refusals.write_text(long_text(tokenizer, [LONG_REFUSAL], seq_len) + "\n")
            values["refusals"] = str(refusals)
        if recipe == "ickul":
            values["forgot_response"] = long_text(tokenizer, [LONG_FORGOT], seq_len)
        if spec.get("epochs"):
            values["num_train_epochs"] = spec["epochs"]
        else:
            values["max_steps"] = spec["warmup"] + spec["steps"]
        values.update(spec.get("overrides", {}))
        values.update(parse_overrides(spec.get("set", [])))
        config = build_config(values, trainer_class.config_class)
        clock = Clock(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rss_model = current_rss()
        # As `unlearn.run.run` builds it (without the output directory, which `save=False` skips).
        start = clock.now()
        trainer = trainer_class(
            model=model, args=config, forget=forget, retain=retain, processing_class=tokenizer, callbacks=[clock]
        )
        built = clock.now()
        reference_s = reference_at = None
        if trainer.needs_reference and recipe != "npo-per-step":
            compute = trainer.compute_reference_logps

            def timed(*args, **kwargs):
                nonlocal reference_s, reference_at
                reference_at = clock.now()
                out = compute(*args, **kwargs)
                reference_s = clock.now() - reference_at
                return out

            trainer.compute_reference_logps = timed
        examples = trainer.forget_examples + trainer.retain_examples
        lengths = sorted({len(e["input_ids"]) for e in examples})
        if lengths != [seq_len]:
            raise ValueError(f"`{recipe}`: rows are {lengths} tokens long, expected exactly {seq_len}.")
        if recipe == "bare":
            clock.train_begin = clock.now()
            bare_loop(trainer, spec["warmup"] + spec["steps"], clock)
            rows_per_step = batch
        else:
            trainer.train()
            rows_per_step = batch * (1 + trainer.train_dataset.ratio)  # ratio is 0 without a retain term
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        loss_tokens = sum(sum(t != IGNORE_INDEX for t in e["labels"][1:]) for e in examples) / len(examples)
    warm = spec["warmup"]
    timed_steps = clock.steps[warm:]
    s_step = statistics.median(timed_steps) if timed_steps else None
    tokens_per_step = rows_per_step * seq_len
    flops_token = step_flops_per_token(shape, trainable, seq_len, lora=config.adapter == "lora")
    out = {
        "label": spec["label"],
        "recipe": recipe,
        "seq_len": seq_len,
        "batch_size": batch,
        "n_forget": spec["n_forget"],
        "retain_ratio": trainer.args.retain_ratio if trainer.args.uses_retain else 0,
        "rows_per_step": rows_per_step,
        "tokens_per_step": tokens_per_step,
        "answer_tokens_per_row": loss_tokens,
        "step_s": timed_steps,
        "warmup_step_s": clock.steps[:warm],
        "s_per_step": s_step,
        "tokens_per_s": tokens_per_step / s_step if s_step else None,
        "init_s": built - start,
        "setup_s": clock.train_begin - built,
        "reference_s": reference_s,
        # Once per run: building the trainer (tokenizing, the adapter, RegLoRA's Fisher), what the Trainer does
        # before the first step, and NPO's reference pass (inside the first step since the trainer computes it there).
        "once_s": clock.train_begin - start + (reference_s if reference_at and reference_at > clock.train_begin else 0),
        "epoch_s": clock.epochs,
        "model": shape,
        "trainable_params": trainable,
        "adapter": config.adapter,
        "lora_target_modules": config.lora_target_modules,
        "flops_per_token": flops_token,
        "flops_per_step": flops_token * tokens_per_step,
        # RMU's loss reads a middle layer: its backward stops there, and the count above does not apply.
        "achieved_flops": flops_token * tokens_per_step / s_step if s_step and recipe != "rmu" else None,
        "rss_start": rss_start,
        "rss_model": rss_model,
        "peak_rss": peak_rss(),
        "cuda_max_allocated": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }
    return out


def tiny(spec: dict) -> dict[str, Any]:
    from tiny_model import save_tiny_llama

    forget, retain = read_rows(spec.get("tofu_dir"))
    texts = [r["question"] + " " + r["answer"] for r in retain + forget]
    return {"model_path": str(save_tiny_llama(spec["out"], texts))}


def run(spec: dict) -> dict[str, Any]:
    return {"machine": machine, "tiny": tiny, "train": train}[spec["kind"]](spec)


# Everything imported so far lives as long as the process: keep it out of the garbage collector's full passes (the
# Trainer calls `gc.collect()` when training starts; over the imported libraries that takes ~0.5 s per process).
gc.freeze()
