"""Per-sample scores of a model on QA pairs: answer NLL and greedy answers.

The building blocks that the demo and the tests use to show that a model forgot; batched, padding masked.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .data import DataSource, detect_shape, format_qa, load_records, tokenize
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
    model, tokenizer, questions: Sequence[str], max_new_tokens: int = 32, batch_size: int = 8
) -> list[str]:
    """Greedy completions of each question, formatted as in training (chat template when there is one)."""
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        for start in range(0, len(questions), batch_size):
            prompts = [format_qa(tokenizer, q, "")[0] for q in questions[start : start + batch_size]]
            templated = bool(getattr(tokenizer, "chat_template", None))
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not templated).to(device)
            ids = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            answers.extend(tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [a.strip() for a in answers]
