"""Per-sample scores of a model: answer NLL, teacher-forced token statistics, and greedy generations.

The building blocks of the demo and of the evaluation package; batched, padding masked.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import IGNORE_INDEX, DataSource, detect_shape, format_qa, load_records, pad_rows, tokenize
from .logprobs import batched_logps


@torch.no_grad()
def answer_nll(
    model,
    tokenizer,
    data: DataSource,
    batch_size: int = 8,
    max_length: int = 512,
    question_key: str = "question",
    answer_key: str = "answer",
    text_key: str = "text",
) -> list[float]:
    """Per-token negative log-likelihood of each example's answer (or text), one value per example."""
    ds = load_records(data)
    shape = detect_shape(ds, question_key, answer_key, text_key, "scored")
    examples = tokenize(ds, tokenizer, shape, max_length, question_key, answer_key, text_key)
    was_training = model.training
    model.eval()
    logps, n_tokens = batched_logps(model, examples, tokenizer.pad_token_id, batch_size)
    model.train(was_training)
    return (-logps / n_tokens.clamp(min=1)).tolist()


# Rows decoded together. Decoding one token per row is bound by reading the weights, not by arithmetic, so wider
# batches are nearly free per step: SmolLM2-135M on 2 CPU cores, 64 TOFU questions x 64 tokens took 46.5 s at 16,
# 33.9 s at 32, 26.5 s at 64 (`generate`). The likelihood scoring's batch (`batch_size`) is separate: it is bound
# by arithmetic and gains nothing from width.
GENERATION_BATCH_SIZE = 64


@torch.no_grad()
def greedy_answers(
    model,
    tokenizer,
    questions: Sequence[str],
    max_new_tokens: int = 32,
    batch_size: int = GENERATION_BATCH_SIZE,
    raw: bool = False,
) -> list[str]:
    """Greedy completions of each question, formatted as in training (chat template when there is one).

    With `raw`, the strings are used as they are (text prefixes to continue). Questions are batched by prompt
    length (least padding) and answered in input order. A transformers model is decoded by `greedy_decode`, which
    drops each row from the batch once it has ended; other models (or a generation config that changes the
    greedy choice, e.g. a repetition penalty) go through `model.generate`.
    """
    return _answers(model, tokenizer, questions, max_new_tokens, batch_size, raw)


@torch.no_grad()
def sampled_answers(
    model,
    tokenizer,
    questions: Sequence[str],
    samples: int,
    temperature: float,
    seed: int = 0,
    max_new_tokens: int = 32,
    batch_size: int = GENERATION_BATCH_SIZE,
) -> list[list[str]]:
    """`samples` completions of each question drawn at `temperature` (as `greedy_answers` formats and batches
    them), from a generator seeded with `seed`: the same draws on every call, and the global random state is left
    as it was."""
    flat = [q for q in questions for _ in range(samples)]
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    answers = _answers(model, tokenizer, flat, max_new_tokens, batch_size, False, temperature, generator)
    return [answers[i : i + samples] for i in range(0, len(answers), samples)]


def _answers(
    model,
    tokenizer,
    questions: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    raw: bool,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[str]:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    templated = not raw and bool(getattr(tokenizer, "chat_template", None))
    prompts = list(questions) if raw else [format_qa(tokenizer, q, "")[0] for q in questions]
    encoded = [tokenizer(p, add_special_tokens=not templated)["input_ids"] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    own_loop = _takes_a_cache(model) and _plain_greedy(model)
    stop = _stop_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    answers: list[str | None] = [None] * len(encoded)
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="generating", leave=False, disable=None):
            idx = order[start : start + batch_size]
            batch = [encoded[i] for i in idx]
            if own_loop:
                new = greedy_decode(model, batch, max_new_tokens, stop, pad_id, device, temperature, generator)
            else:
                new = _generate(model, batch, max_new_tokens, pad_id, device, temperature, generator)
            for i, tokens in zip(idx, new, strict=True):
                answers[i] = tokenizer.decode(tokens, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return [a.strip() for a in answers]


def _next_token(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """(b, V) last-position logits -> (b,) the argmax, or a draw from softmax(logits / temperature) when
    `temperature` > 0."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def greedy_decode(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    stop: set[int],
    pad_id: int,
    device,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Greedy decoding of left-padded prompts with a key/value cache, each row removed from the batch (and from the
    cache) at its stop token, so that the steps after a row has ended cost nothing for it; the stop token is kept,
    as `generate` keeps it. The same tokens as `model.generate(do_sample=False)` on the same batch. With a
    `temperature` > 0 each token is drawn instead (`_next_token`, from `generator`)."""
    ids, mask = (t.to(device) for t in left_pad(prompts, pad_id))
    cache_kw = _cache_kwarg(model)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = getattr(out, cache_kw)
    position = mask.sum(-1)  # (B,) the next token's position in each row
    rows = torch.arange(len(prompts), device=device)  # the rows still decoding, as indices into `prompts`
    generated: list[list[int]] = [[] for _ in prompts]
    for step in range(max_new_tokens):
        token = _next_token(out.logits[:, -1], temperature, generator)  # (b,)
        ended = torch.zeros_like(token, dtype=torch.bool)
        for k, (r, t) in enumerate(zip(rows.tolist(), token.tolist(), strict=True)):
            generated[r].append(t)
            ended[k] = t in stop
        if step == max_new_tokens - 1 or ended.all():
            break
        if ended.any():
            keep = (~ended).nonzero()[:, 0]
            cache.batch_select_indices(keep)
            rows, token, mask, position = rows[keep], token[keep], mask[keep], position[keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=position[:, None],
            use_cache=True,
            **{cache_kw: cache},
        )
        position = position + 1
    return generated


def _generate(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    pad_id: int,
    device,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """`model.generate` on left-padded prompts -> the new tokens of each row: greedy, or sampled at `temperature`
    with the global random state seeded from `generator` (`generate` takes no generator) and restored after."""
    ids, mask = left_pad(prompts, pad_id)
    sampled = {"do_sample": False}
    if temperature > 0:
        sampled = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    with torch.random.fork_rng(devices=[]):
        if generator is not None:
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            **sampled,
        )
    return [row.tolist() for row in out[:, ids.shape[1] :]]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (input_ids, attention_mask), (B, T), padded on the left so that every row ends at T - 1."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[b, width - len(p) :] = 1
    return ids, mask


# Generation settings under which `generate`'s greedy choice is not the plain argmax of the logits.
_PROCESSORS = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "min_length": 0,
    "min_new_tokens": None,
    "bad_words_ids": None,
    "sequence_bias": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "renormalize_logits": False,
    "stop_strings": None,
}


def _plain_greedy(model) -> bool:
    config = getattr(model, "generation_config", None)
    return config is not None and all(getattr(config, k, v) in (v, None) for k, v in _PROCESSORS.items())


def _stop_ids(model, tokenizer) -> set[int]:
    """The tokens at which `generate` ends a row: the generation config's EOS id(s), else the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


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
def row_stats(
    model, examples: list[dict], pad_token_id: int, batch_size: int = 8, share_prompts: bool = True
) -> list[RowStats]:
    """Every statistic the likelihood metrics need, one forward pass per distinct row, in input order.

    Identical rows are scored once. Rows that share their prompt (a question's answer, paraphrase and perturbed
    answers) share one pass over it: its key/value cache is repeated for every answer, and only the answer tokens
    are run again, so the prompt is neither recomputed nor sent through the vocabulary projection (the values
    match the separate passes to float rounding; `share_prompts=False` turns it off). The other rows are batched
    by length; padding is masked by the labels.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[RowStats | None] = [None] * len(examples)
    first: dict[tuple, int] = {}  # a row's content -> the index that scores it
    copies: list[tuple[int, int]] = []
    for i, ex in enumerate(examples):
        key = (tuple(ex["input_ids"]), tuple(ex["labels"]))
        if key in first:
            copies.append((i, first[key]))
        else:
            first[key] = i
    groups: dict[tuple, list[int]] = {}
    for i in first.values():
        groups.setdefault(tuple(examples[i]["input_ids"][: _prompt_length(examples[i])]), []).append(i)
    share_prompts = share_prompts and _takes_a_cache(model)
    shared = {p: g for p, g in groups.items() if share_prompts and len(g) > 1 and len(p) > 0}
    single = sorted(
        (i for p, g in groups.items() if p not in shared for i in g), key=lambda i: len(examples[i]["input_ids"])
    )
    work = [("shared", part) for part in _pack_prompts(shared, batch_size)]
    work += [("single", [(None, single[s : s + batch_size])]) for s in range(0, len(single), batch_size)]
    for kind, part in tqdm(work, desc="scoring", leave=False, disable=None):
        idx = [i for _, group in part for i in group]
        rows = [examples[i] for i in idx]
        if kind == "single":
            batch = {k: v.to(device) for k, v in pad_rows(rows, pad_token_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]  # (B, T-1): logits[:, t] predicts labels[:, t]
        else:
            prompts = [p for p, _ in part]
            owner = [k for k, (_, group) in enumerate(part) for _ in group]
            logits, labels = _shared_prompt_logits(model, prompts, owner, rows, pad_token_id, device)
        for i, stats in zip(idx, _row_stats_of(logits, labels), strict=True):
            out[i] = stats
    for i, j in copies:
        out[i] = out[j]
    model.train(was_training)
    return out


def _prompt_length(example: dict) -> int:
    """Leading positions that are not scored (the prompt of a QA row; 0 for a text row scored from its start)."""
    labels = example["labels"]
    return next((t for t, y in enumerate(labels) if y != IGNORE_INDEX), len(labels))


def _pack_prompts(shared: dict[tuple, list[int]], batch_size: int) -> list[list[tuple[tuple, list[int]]]]:
    """Work items of at most `batch_size` rows: consecutive prompts with all their rows, packed together so that
    one pass covers several prompts; a prompt with more rows than that is cut into items of its own."""
    items, current, n = [], [], 0
    for prompt, group in shared.items():
        if len(group) > batch_size:
            items += [[(prompt, group[s : s + batch_size])] for s in range(0, len(group), batch_size)]
            continue
        if n + len(group) > batch_size:
            items.append(current)
            current, n = [], 0
        current.append((prompt, group))
        n += len(group)
    if current:
        items.append(current)
    return items


def _shared_prompt_logits(model, prompts: list[tuple], owner: list[int], rows: list[dict], pad_token_id: int, device):
    """One pass over the prompts (left-padded; logits of their last position only), each row's prompt cache
    selected from it (`owner[r]`: the index of row r's prompt), and one pass over the rows' continuations.

    -> (logits (B, A, V), labels (B, A)) with logits[:, t] predicting labels[:, t], t over the continuation.
    Positions are counted from each prompt's first real token, so a padded prompt scores as it would alone.
    """
    ids, prompt_mask = (t.to(device) for t in left_pad(prompts, pad_token_id))
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    cache_kw = _cache_kwarg(model)
    head = model(input_ids=ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = getattr(head, cache_kw)
    select = torch.tensor(owner, device=device)
    cache.batch_select_indices(select)  # (G, ...) -> (B, ...): each row gets its prompt's keys and values
    starts = [len(prompts[k]) for k in owner]  # each row's continuation starts after its own prompt
    tails = pad_rows(
        [{"input_ids": r["input_ids"][n:], "labels": r["labels"][n:]} for r, n in zip(rows, starts, strict=True)],
        pad_token_id,
    )
    tails = {k: v.to(device) for k, v in tails.items()}
    mask = torch.cat([prompt_mask[select], tails["attention_mask"]], dim=1)
    tail_positions = torch.tensor(starts, device=device)[:, None] + torch.arange(
        tails["input_ids"].shape[1], device=device
    )
    logits = model(
        input_ids=tails["input_ids"],
        attention_mask=mask,
        position_ids=tail_positions,
        use_cache=True,
        **{cache_kw: cache},
    ).logits
    logits = torch.cat([head.logits[select, -1:], logits[:, :-1]], dim=1)
    return logits, tails["labels"]


def _takes_a_cache(model) -> bool:
    """A transformers model (or a PEFT model around one) runs from a key/value cache; a wrapper such as ICUL's
    in-context unlearner, which prepends its own context, is scored row by row."""
    from transformers import PreTrainedModel

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return isinstance(base, PreTrainedModel)


def _cache_kwarg(model) -> str:
    """The name a model's forward takes its key/value cache by: `cache` (transformers >= 5.x) or the older one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _row_stats_of(logits: torch.Tensor, labels: torch.Tensor) -> list[RowStats]:
    """RowStats of each row from logits[:, t] predicting labels[:, t]; only the scored positions are computed."""
    mask = labels != IGNORE_INDEX
    target = labels[mask]  # (N,) only the scored positions: the prompt's vocabulary work is skipped
    logp = F.log_softmax(logits[mask].float(), dim=-1)  # (N, V)
    tok = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    match = logp.argmax(-1) == target
    p_logp = logp.exp() * logp
    mu = p_logp.sum(-1)
    sigma = (torch.einsum("nv,nv->n", p_logp, logp) - mu.square()).clamp(min=0).sqrt()
    counts = mask.sum(-1).tolist()
    per_row = [t.split(counts) for t in (tok.cpu(), match.cpu(), mu.cpu(), sigma.cpu())]
    out = []
    for b in range(len(counts)):
        lp, m, u, sd = (t[b].numpy() for t in per_row)
        out.append(RowStats(float(-lp.mean()) if counts[b] else 0.0, counts[b], lp, m, u, sd))
    return out
