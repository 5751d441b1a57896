"""Forget and retain data: loading from anywhere, formatting QA pairs, tokenizing, and pairing forget with retain.

Two shapes of data are understood: question/answer pairs (loss on the answer tokens only) and raw text (loss on
every token). A tokenized example is a dict `{input_ids, labels, index}`, `labels` being -100 outside the loss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from . import tofu
from .errors import UnlearnError
from .precheck import DATA_SUFFIXES, JSON_SUFFIXES, data_shape, local_data_files, read_json_records

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
FILE_LOADERS = {s: "json" if s in JSON_SUFFIXES else s.removeprefix(".") for s in DATA_SUFFIXES}

DataSource = datasets.Dataset | Sequence[Mapping[str, Any]] | str | Path | Mapping[str, Any]


def load_records(source: DataSource, split: str | None = None) -> datasets.Dataset:
    """Turn any supported data source into a `datasets.Dataset`.

    Accepted: a `datasets.Dataset`; a list of dicts; a local .json/.jsonl/.csv/.parquet file or a directory of
    them; `tofu:<split>` (TOFU from `$UNLEARN_TOFU_DIR` or the Hub); a Hub dataset id; or a mapping
    `{path: ..., name: ..., split: ...}` for the Hub or TOFU with a config name.
    """
    if isinstance(source, datasets.Dataset):
        return source
    if isinstance(source, datasets.DatasetDict):
        raise UnlearnError(f"Got a DatasetDict with splits {list(source)}; pass one split, e.g. `ds['train']`.")
    if isinstance(source, Mapping):
        extra = set(source) - {"path", "name", "split"}
        if "path" not in source or extra:
            raise UnlearnError(
                f"A data mapping needs `path` and may have `name` and `split`; got keys {sorted(source)}."
            )
        return _load_path(str(source["path"]), name=source.get("name"), split=source.get("split", split))
    if isinstance(source, (str, Path)):
        return _load_path(str(source), name=None, split=split)
    if isinstance(source, Sequence):
        if not all(isinstance(r, Mapping) for r in source):
            raise UnlearnError("A list of examples must hold dicts such as {'question': ..., 'answer': ...}.")
        return datasets.Dataset.from_list([dict(r) for r in source])
    raise UnlearnError(f"Unsupported data source of type {type(source).__name__}: {source!r}.")


def load_tofu(split: str, source: str | Path | None = None) -> datasets.Dataset:
    """One TOFU split as a `datasets.Dataset`, from a local directory of `<split>.jsonl` files or the Hub.

    `source` defaults to `$UNLEARN_TOFU_DIR` when set, else the Hub (`locuslab/TOFU`); see `tofu.locate`.
    """
    where = tofu.locate(split, source)
    if isinstance(where, Path):
        return _load_files([where])
    try:
        return datasets.load_dataset(where, split, split="train")
    except Exception as e:  # noqa: BLE001
        raise UnlearnError(
            f"Could not load TOFU split `{split}` from the Hub (`{where}`): {e}. Offline, point "
            "`UNLEARN_TOFU_DIR` at a local copy (a directory of <split>.jsonl files)."
        ) from e


def _load_path(path: str, name: str | None, split: str | None) -> datasets.Dataset:
    files = local_data_files(path)  # the same resolution `unlearn.precheck` checks before anything is imported
    if files is not None:
        return _load_files(files)
    if path.startswith("tofu:"):
        return load_tofu(path.removeprefix("tofu:"))  # from the Hub: no local copy
    return _load_hub(path, name, split or "train")


def _load_files(files: list[Path]) -> datasets.Dataset:
    kinds = {FILE_LOADERS.get(f.suffix) for f in files}
    if None in kinds or len(kinds) != 1:
        raise UnlearnError(
            f"Cannot read {[str(f) for f in files]}: pass files of one format among {', '.join(FILE_LOADERS)}."
        )
    if kinds == {"json"}:  # read JSON ourselves: no cache directory, no schema guessing across files
        return datasets.Dataset.from_list([row for f in files for row in read_json_records(f)])
    return datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train")


def _load_hub(repo_id: str, name: str | None, split: str) -> datasets.Dataset:
    try:
        return datasets.load_dataset(repo_id, name, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; all mean "could not load"
        raise UnlearnError(
            f"Could not load Hub dataset `{repo_id}` (config {name!r}, split {split!r}): {e}. If you meant a local "
            "file, check the path; offline, only datasets already in the Hugging Face cache can be loaded."
        ) from e


def detect_shape(ds: datasets.Dataset, question_key: str, answer_key: str, text_key: str, what: str) -> str:
    """`qa` or `text`, from the columns present; a clear error listing the columns otherwise."""
    return data_shape(ds.column_names, question_key, answer_key, text_key, what)


NAME = re.compile(r"\b[A-Z][\w'-]+(?:\s+(?:[A-Z][\w'-]+|de|van|von|da|al|el|bin))*\s+[A-Z][\w'-]+\b")
NAME_LEADING = {"Author", "Authors", "Writer", "The", "A", "Novelist", "Poet", "Dr", "Mr", "Mrs", "Ms"}


def find_names(text: str) -> list[str]:
    """Multi-word capitalized names in `text` ("Basil Mahfouz Al-Kuwaiti"), without a possessive or a leading title."""
    out = []
    for m in NAME.finditer(text):
        words = re.sub(r"'s$", "", m.group(0)).split()
        while words and words[0] in NAME_LEADING:
            words = words[1:]
        if len(words) >= 2:
            out.append(" ".join(words))
    return out


def name_counts(texts) -> Counter:
    """How many of `texts` mention each name (`find_names`): the entities a set of answers is about."""
    return Counter(n for t in texts for n in set(find_names(str(t))))


def fingerprint(ds: datasets.Dataset) -> str:
    """A content hash of the records: identifies the data in metadata without storing it."""
    h = hashlib.sha256()
    for row in ds:
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# ---- formatting and tokenization ---------------------------------------------------------------------------------


def format_qa(tokenizer, question: str, answer: str) -> tuple[str, str, bool]:
    """(prompt, completion, prompt_has_special_tokens) for one QA pair.

    With a chat template, the prompt is the rendered user turn plus the generation prompt, and the completion is
    whatever the template renders after it for the assistant turn (answer and end-of-turn tokens). Without one:
    "Question: ...\\nAnswer:" and " answer<eos>".
    """
    if getattr(tokenizer, "chat_template", None):
        user = [{"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=False)
        if full.startswith(prompt) and answer in full[len(prompt) :]:
            return prompt, full[len(prompt) :], True
        return prompt, answer + (tokenizer.eos_token or ""), True
    return f"Question: {question}\nAnswer:", f" {answer}{tokenizer.eos_token or ''}", False


def tokenize(
    ds: datasets.Dataset, tokenizer, shape: str, max_length: int, question_key: str, answer_key: str, text_key: str
) -> list[dict[str, Any]]:
    """Tokenize every example; warn once with the count of the ones truncated to `max_length`."""
    examples, truncated = [], 0
    for i, row in enumerate(ds):
        if shape == "qa":
            prompt, completion, templated = format_qa(tokenizer, str(row[question_key]), str(row[answer_key]))
            ids, labels = prompt_completion_ids(tokenizer, prompt, completion, templated)
        else:
            ids = tokenizer(str(row[text_key]))["input_ids"]
            labels = list(ids)
        if len(ids) > max_length:
            truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        if all(t == IGNORE_INDEX for t in labels[1:]):
            raise UnlearnError(
                f"Example {i} has no answer tokens left within `max_length={max_length}` (its prompt alone is "
                f"{len(ids)}+ tokens). Raise `max_length`."
            )
        examples.append({"input_ids": ids, "labels": labels, "index": i})
    if truncated:
        logger.warning(
            "%d of %d examples were longer than max_length=%d tokens and were truncated.",
            truncated,
            len(ds),
            max_length,
        )
    return examples


def prompt_completion_ids(tokenizer, prompt: str, completion: str, templated: bool) -> tuple[list[int], list[int]]:
    """(input ids, labels) of a prompt and its completion, tokenized apart so that the labels mask exactly the
    prompt; a templated prompt carries its own special tokens, a plain one gets the tokenizer's (BOS)."""
    p_ids = tokenizer(prompt, add_special_tokens=not templated)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return p_ids + c_ids, [IGNORE_INDEX] * len(p_ids) + c_ids


def tokenize_prompts(tokenizer, prompts: list[str], completions: list[str], max_length: int = 1024) -> list[dict]:
    """Rows from already formatted prompts and their completions; the loss (and scoring) is on the completion.

    Prompts made with the chat template carry their own special tokens; plain prompts get the tokenizer's (BOS).
    """
    templated = bool(getattr(tokenizer, "chat_template", None))
    examples = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        ids, labels = prompt_completion_ids(tokenizer, prompt, completion, templated)
        ids, labels = ids[-max_length:], labels[-max_length:]  # keep the completion when too long: it is scored
        examples.append({"input_ids": ids, "labels": labels, "index": i})
    return examples


# ---- forget/retain pairing ---------------------------------------------------------------------------------------


class ForgetRetainDataset(torch.utils.data.Dataset):
    """The forget set drives the epoch; each forget example brings `ratio` retain examples along.

    Which retain examples come with forget example `i` in epoch `e` depends only on (seed, e, i), so the global
    batch, and the result, do not change with the number of processes or the per-device batch split.
    `cycle` walks a seeded permutation of the retain set (every retain example is used once before any repeats);
    `random` draws with replacement.
    """

    def __init__(
        self,
        forget: list[dict],
        retain: list[dict] | None,
        ratio: int,
        sampling: str,
        seed: int,
        entities: Sequence[str] | None = None,
        retain_entities: Sequence[str | None] | None = None,
    ):
        if not forget:
            raise UnlearnError("The forget set is empty: give at least one example to forget.")
        self.forget, self.retain = forget, retain or []
        self.ratio = ratio if self.retain else 0
        self.sampling, self.seed, self.epoch = sampling, seed, 0
        if sampling == "entity":
            self._entity_pools(entities, retain_entities)

    def _entity_pools(self, entities, retain_entities) -> None:
        """`entity` sampling (MELU): each forget row's entity, and per entity its neighbor rows (retain rows of the
        same entity) and the general rows (retain rows of no entity)."""
        if entities is None or len(entities) != len(self.forget):
            raise UnlearnError("`retain_sampling: entity` needs an entity for every forget row (`entity_key`).")
        self.entities = [str(e) for e in entities]
        retain_entities = list(retain_entities) if retain_entities is not None else [None] * len(self.retain)
        self.neighbors: dict[str, list[int]] = {e: [] for e in self.entities}
        self.general: list[int] = []
        for j, e in enumerate(retain_entities):
            if e is None or str(e) == "":
                self.general.append(j)
            else:
                self.neighbors.setdefault(str(e), []).append(j)

    def order(self) -> list[int]:
        """The forget rows in this epoch's order: by entity (entities and the rows within each in a seeded order)
        under `entity` sampling, so consecutive rows, and so batches, hold one entity's requests; else as given."""
        if self.sampling != "entity":
            return list(range(len(self.forget)))
        if getattr(self, "_order_epoch", None) != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            names = sorted(set(self.entities))
            groups = {e: [i for i, x in enumerate(self.entities) if x == e] for e in names}
            self._order = [
                int(groups[names[g]][r])
                for g in rng.permutation(len(names))
                for r in rng.permutation(len(groups[names[g]]))
            ]
            self._order_epoch = self.epoch
        return self._order

    def __len__(self) -> int:
        return len(self.forget)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def retain_indices(self, i: int) -> list[int]:
        n, k = len(self.retain), self.ratio
        if k == 0:
            return []
        if self.sampling == "random":
            return np.random.default_rng([self.seed, self.epoch, i]).integers(n, size=k).tolist()
        if self.sampling == "entity":
            # In turn from the row's own neighbor set and the general set (either alone when the other is empty).
            pools = [p for p in (self.neighbors.get(self.entities[i], []), self.general) if p] or [list(range(n))]
            rng = np.random.default_rng([self.seed, self.epoch, i])
            return [int(pools[j % len(pools)][rng.integers(len(pools[j % len(pools)]))]) for j in range(k)]
        out = []
        for pos in range((self.epoch * len(self.forget) + i) * k, (self.epoch * len(self.forget) + i + 1) * k):
            block, offset = divmod(pos, n)
            out.append(int(np.random.default_rng([self.seed, block]).permutation(n)[offset]))
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = self.order()[i] if self.sampling == "entity" else i
        return {"forget": self.forget[i], "retain": [self.retain[j] for j in self.retain_indices(i)]}


class ForgetRetainCollator:
    """Pads forget rows then retain rows into one batch, so one forward pass serves both losses.

    Batch: `input_ids`, `attention_mask`, `loss_labels` (B, T) with B = forget rows + retain rows (right padded);
    `is_forget` (B,) bool; `index` (B,) position of each row in its own dataset; `retain_row_weight` (B,) each
    retain row's weight in the step's retain mean (1 / retain rows; 0 for forget rows), which stays right when the
    step is split into passes.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [it["forget"] for it in items] + [r for it in items for r in it["retain"]]
        n_forget = len(items)
        batch = pad_rows(rows, self.pad_token_id)
        # Not `labels`: the Trainer would treat the batch as its own (count tokens, gather counts across processes,
        # and on older versions skip the gradient-accumulation division); our losses are per-sequence means.
        batch["loss_labels"] = batch.pop("labels")
        batch["is_forget"] = torch.arange(len(rows)) < n_forget
        batch["index"] = torch.tensor([r["index"] for r in rows])
        n_retain = len(rows) - n_forget
        batch["retain_row_weight"] = (~batch["is_forget"]).float() / max(n_retain, 1)
        return batch


def pad_rows(rows: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r["input_ids"])
        input_ids[b, :n] = torch.tensor(r["input_ids"])
        labels[b, :n] = torch.tensor(r["labels"])
        attention_mask[b, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
