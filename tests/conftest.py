"""Shared fixtures: a tiny Llama and a tokenizer trained in-process, fine-tuned on a TOFU subset so that it knows
what the tests ask it to forget. Everything is local; the Hub is never contacted."""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from unlearn import scoring  # noqa: E402
from unlearn.data import load_records, pad_rows, tokenize  # noqa: E402
from unlearn.logprobs import sequence_logps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the tiny model's tokenizer recipe lives there, shared with benchmarks
from tiny_model import save_tiny_llama  # noqa: E402

TOFU_DIR = ROOT.parent / "shared" / "data" / "tofu"
N_FORGET, N_RETAIN = 8, 16
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def read_jsonl(name: str, n: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in (TOFU_DIR / f"{name}.jsonl").read_text().splitlines() if line.strip()]
    return rows[:n] if n else rows


def answer_nll(model, tokenizer, rows: list[dict]) -> float:
    """Mean over examples of the per-token answer NLL."""
    return statistics.fmean(scoring.answer_nll(model, tokenizer, rows, max_length=256))


@pytest.fixture(scope="session")
def tofu_rows():
    return {"forget": read_jsonl("forget01", N_FORGET), "retain": read_jsonl("retain99", N_RETAIN)}


def train_tiny(model, tokenizer, rows: list[dict], steps: int = 150, lr: float = 3e-3):
    """Full-batch fine-tuning until the tiny model knows `rows` (seconds on CPU)."""
    examples = tokenize(load_records(rows), tokenizer, "qa", 256, "question", "answer", "text")
    batch = pad_rows(examples, tokenizer.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logps, n = sequence_logps(logits, batch["labels"])
        loss = (-logps / n).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.fixture(scope="session")
def tiny_init_dir(tmp_path_factory, tofu_rows) -> Path:
    """A randomly initialized 2-layer Llama (seed 0) and its BPE tokenizer: the "pretrained" base (built as the
    benchmarks build theirs, `benchmarks/tiny_model.py`)."""
    texts = [r["question"] + " " + r["answer"] for r in read_jsonl("retain99", 400) + tofu_rows["forget"]]
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-init"), texts, max_positions=512)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_init_dir, tofu_rows) -> Path:
    """The TOFU "target": the tiny base fine-tuned on forget + retain rows until it knows them."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_init_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_init_dir)
    train_tiny(model, tokenizer, tofu_rows["forget"] + tofu_rows["retain"])
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def tiny(tiny_model_dir):
    """A fresh copy of the tiny target model and its tokenizer."""
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def data_files(tmp_path, tofu_rows) -> dict[str, Path]:
    paths = {}
    for name, rows in tofu_rows.items():
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths
