"""Log-probabilities of the labelled tokens, with or without the model's full (B, T, V) logits.

A causal LM returns logits for every position: B x T x V floats, and as many again for their gradient. With a 49k
(SmolLM2) or 128k (Llama 3) vocabulary they are the largest tensors of a LoRA step (0.6 GB each for 4 x 256 tokens
of SmolLM2 in float32), yet the losses read one number per labelled token. So, where the model allows it, the model
is run to its final hidden states (one position's logits, which nothing reads) and the output head is applied here,
to the labelled positions only, `chunk_tokens` at a time, each chunk's logits recomputed in backward instead of kept:
the idea of fused linear cross-entropy (Liger Kernel) and Cut Cross-Entropy (arXiv:2411.09009), written with
`torch.utils.checkpoint` instead of a kernel. Peak memory for the head falls from ~3 x B x T x V floats to
~3 x chunk_tokens x V; compute rises by one head forward per chunk, less the head's work on unlabelled positions.

`head_matches_logits` checks, once per model, that applying the head to the last hidden state gives the model's
own logits; models that scale or cap logits after the head (Gemma 2's soft-capping, Cohere's logit scale) fail it
and keep the full-logits path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .data import IGNORE_INDEX, pad_rows


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) labels -> (B, T) targets: position t predicts token t + 1; the last position predicts nothing."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token log-probabilities over the labelled tokens of each row, and their count.

    logits (B, T, V), labels (B, T) with IGNORE_INDEX outside the loss -> (B,), (B,).
    """
    # Shift the labels, not the logits: slicing (B, T, V) logits would copy them, and their gradient, in full.
    targets = shift_labels(labels)
    token_nll = F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(targets.shape)
    return -token_nll.sum(-1), (targets != IGNORE_INDEX).sum(-1)


def final_hidden(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Run `model` for its final hidden states (B, T, H), computing the logits of the last position only.

    Returns (outputs, hidden). `output_hidden_states` costs no memory in training: each layer's output is kept for
    backward anyway.
    """
    outputs = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, logits_to_keep=1)
    return outputs, outputs.hidden_states[-1]


@torch.no_grad()
def head_matches_logits(model: torch.nn.Module, head: torch.nn.Module, input_ids: torch.Tensor) -> bool:
    """Whether `head(last hidden state)` reproduces the logits `model` returns, on `input_ids` (1, T)."""
    try:
        outputs = model(input_ids=input_ids, output_hidden_states=True)
    except TypeError:  # a model whose forward takes no `output_hidden_states`
        return False
    if outputs.logits is None or not outputs.hidden_states:
        return False
    theirs = outputs.logits.float()
    mine = head(outputs.hidden_states[-1]).float()
    if mine.shape != theirs.shape:
        return False
    return bool(torch.allclose(mine, theirs, rtol=1e-3, atol=1e-3 * theirs.abs().max().clamp(min=1).item()))


def _chunked(fn: Callable[..., torch.Tensor], chunk_tokens: int, *rows: torch.Tensor) -> torch.Tensor:
    """`fn` over row chunks of `rows` (N, ...) -> (N,); under autograd each chunk is recomputed in backward."""
    n = rows[0].shape[0]
    step = chunk_tokens if chunk_tokens > 0 else max(n, 1)
    parts = []
    for start in range(0, max(n, 1), step):  # one call even when n == 0, so the graph still reaches `rows`
        chunk = [r[start : start + step] for r in rows]
        if torch.is_grad_enabled() and any(r.requires_grad for r in chunk):
            parts.append(checkpoint(fn, *chunk, use_reentrant=False))
        else:
            parts.append(fn(*chunk))
    return torch.cat(parts)


def _per_row(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum the per-token `values` (N,) of the True positions of `mask` (B, T) back into their rows -> (B,)."""
    out = values.new_zeros(mask.shape[0])
    return out.index_add(0, mask.nonzero()[:, 0], values)


def _token_logps(head: torch.nn.Module, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(head(h).float(), targets, reduction="none")  # (n,)


def head_sequence_logps(
    head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logps(head(hidden), labels)` without the (B, T, V) logits: hidden (B, T, H) -> (B,), (B,)."""
    targets = shift_labels(labels)
    mask = targets != IGNORE_INDEX  # (B, T)
    token_logps = _chunked(functools.partial(_token_logps, head), chunk_tokens, hidden[mask], targets[mask])
    return _per_row(token_logps, mask), mask.sum(-1)


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(reference || model) of the next-token distributions, per position: (..., V) logits -> (...)."""
    log_p = F.log_softmax(logits.float(), -1)
    log_ref = F.log_softmax(ref_logits.float(), -1)
    return (log_ref.exp() * (log_ref - log_p)).sum(-1)


LogitAdjust = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ref logits (n, V), targets (n,)) -> (n, V)


def _token_kl(
    head: torch.nn.Module,
    reference: Callable[[], AbstractContextManager],
    adjust: LogitAdjust | None,
    h: torch.Tensor,
    h_ref: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    with reference():  # the reference head: the same module with the adapter (if it has one) switched off
        ref_logits = head(h_ref)
    if adjust is not None:
        ref_logits = adjust(ref_logits, targets)
    return token_kl(head(h), ref_logits)  # (n,)


def head_kl(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    ref_hidden: torch.Tensor,
    labels: torch.Tensor,
    chunk_tokens: int,
    reference: Callable[[], AbstractContextManager],
    adjust: LogitAdjust | None = None,
) -> torch.Tensor:
    """Mean over labelled positions of KL(reference || model) of the next-token distributions, per row -> (B,).

    hidden, ref_hidden (B, T, H): final hidden states of the model and of the reference; `reference()` is a context
    in which `head` is the reference's head, without gradients. `adjust(ref_logits, targets)` rewrites the
    reference's logits at each position given the labelled next token (UNDIAL's teacher) before the KL.
    """
    targets = shift_labels(labels)
    mask = targets != IGNORE_INDEX
    fn = functools.partial(_token_kl, head, reference, adjust)
    kl = _chunked(fn, chunk_tokens, hidden[mask], ref_hidden[mask], targets[mask])
    return _per_row(kl, mask) / mask.sum(-1).clamp(min=1)


def logits_kl(
    logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, adjust: LogitAdjust | None = None
) -> torch.Tensor:
    """`head_kl` from full logits (B, T, V) of the model and of the reference -> (B,)."""
    targets = shift_labels(labels)
    mask = targets != IGNORE_INDEX
    ref = ref_logits[mask]
    if adjust is not None:
        ref = adjust(ref, targets[mask])
    return _per_row(token_kl(logits[mask], ref), mask) / mask.sum(-1).clamp(min=1)


def model_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    head: torch.nn.Module | None = None,
    chunk_tokens: int = 0,
):
    """The model's `sequence_logps` on a batch -> (logps (B,), n_tokens (B,), outputs, final hidden (B, T, H)).

    With `head` (the model's output head, checked by `head_matches_logits`) the logits are never built in full
    (`unlearn.logprobs`) and `outputs.logits` holds the last position only; without it, hidden is None.
    """
    if head is None:
        outputs = model(input_ids=input_ids, attention_mask=attention_mask)
        return *sequence_logps(outputs.logits, labels), outputs, None
    outputs, hidden = final_hidden(model, input_ids, attention_mask)
    return *head_sequence_logps(head, hidden, labels, chunk_tokens), outputs, hidden


@torch.no_grad()
def batched_logps(
    model: torch.nn.Module,
    examples: list[dict],
    pad_token_id: int,
    batch_size: int,
    head: torch.nn.Module | None = None,
    chunk_tokens: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logps` over tokenized examples, in padded batches on the model's device -> (N,), (N,)."""
    device = next(model.parameters()).device
    logps, n_tokens = [], []
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in pad_rows(examples[start : start + batch_size], pad_token_id).items()}
        lp, n, _, _ = model_logps(
            model, batch["input_ids"], batch["attention_mask"], batch["labels"], head, chunk_tokens
        )
        logps.append(lp)
        n_tokens.append(n)
    return torch.cat(logps), torch.cat(n_tokens)
