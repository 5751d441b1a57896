"""Per-sample scores of a model: answer NLL, teacher-forced token statistics, and greedy generations.

The building blocks of the demo and of the evaluation package; batched, padding masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import IGNORE_INDEX, DataSource, detect_shape, format_qa, load_records, pad_rows, tokenize
from .trainer import batched_logps


@torch.no_grad()
def answer_nll(
    model, tokenizer, data: DataSource, batch_size: int = 8, max_length: int = 512,
    question_key: str = "question", answer_key: str = "answer", text_key: str = "text",
) -> list[float]:  # fmt: skip
    """Per-token negative log-likelihood of each example's answer (or text), one value per example."""
    ds = load_records(data)
    shape = detect_shape(ds, question_key, answer_key, text_key, "scored")
    examples = tokenize(ds, tokenizer, shape, max_length, question_key, answer_key, text_key)
    was_training = model.training
    model.eval()
    logps, n_tokens = batched_logps(model, examples, tokenizer.pad_token_id, batch_size)
    model.train(was_training)
    return (-logps / n_tokens.clamp(min=1)).tolist()


@torch.no_grad()
def greedy_answers(
    model, tokenizer, questions: Sequence[str], max_new_tokens: int = 32, batch_size: int = 8, raw: bool = False
) -> list[str]:
    """Greedy completions of each question, formatted as in training (chat template when there is one).

    With `raw`, the strings are used as they are (text prefixes to continue).
    """
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    templated = not raw and bool(getattr(tokenizer, "chat_template", None))
    answers: list[str] = []
    try:
        for start in tqdm(range(0, len(questions), batch_size), desc="generating", leave=False, disable=None):
            chunk = questions[start : start + batch_size]
            prompts = list(chunk) if raw else [format_qa(tokenizer, q, "")[0] for q in chunk]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not templated).to(device)
            ids = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            answers.extend(tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [a.strip() for a in answers]


@dataclass
class RowStats:
    """Teacher-forced statistics of one (prompt, target) row, over its target tokens."""

    nll: float  # mean token NLL
    n_tokens: int
    token_logps: np.ndarray  # (n,) log p(y_t)
    argmax_match: np.ndarray  # (n,) bool: the greedy next token is y_t
    mu: np.ndarray  # (n,) E_{z~p}[log p(z)], for Min-K%++
    sigma: np.ndarray  # (n,) std of log p(z)


@torch.no_grad()
def row_stats(model, examples: list[dict], pad_token_id: int, batch_size: int = 8) -> list[RowStats]:
    """Every statistic the likelihood metrics need, from one forward pass per row.

    Rows are batched by length (less padding) and returned in input order; padding is masked by the labels.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    out: list[RowStats | None] = [None] * len(examples)
    for start in tqdm(range(0, len(order), batch_size), desc="scoring", leave=False, disable=None):
        idx = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in pad_rows([examples[i] for i in idx], pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]  # (B, T-1)
        mask = labels != IGNORE_INDEX
        target = labels[mask]  # (N,) only the scored positions: the prompt's vocabulary work is skipped
        logp = F.log_softmax(logits[:, :-1][mask].float(), dim=-1)  # (N, V)
        tok = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        match = logp.argmax(-1) == target
        p_logp = logp.exp() * logp
        mu = p_logp.sum(-1)
        sigma = (torch.einsum("nv,nv->n", p_logp, logp) - mu.square()).clamp(min=0).sqrt()
        counts = mask.sum(-1).tolist()
        per_row = [t.split(counts) for t in (tok.cpu(), match.cpu(), mu.cpu(), sigma.cpu())]
        for b, i in enumerate(idx):
            lp, m, u, sd = (t[b].numpy() for t in per_row)
            out[i] = RowStats(float(-lp.mean()) if counts[b] else 0.0, counts[b], lp, m, u, sd)
    model.train(was_training)
    return out
