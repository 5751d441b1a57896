"""Reward unlearning with Group Relative Policy Optimization (TRL's `GRPOTrainer`, with a LoRA adapter).

Following "Reinforcement Unlearning via Group Relative Policy Optimization" (PURGE): the model answers the forget
prompts, a group of completions is sampled per prompt, and a verifiable reward penalizes every mention of a
forbidden concept; GRPO's group-relative advantage (Shao et al., arXiv:2402.03300, Eq. 3) pushes the policy away
from them, with no reward model. Guards against degenerate solutions are rewards too: empty, repetitive or
non-fluent completions score low, and on retain prompts the answer should stay close to the reference answer.
TRL logs each reward separately (`rewards/<name>/mean`).

Forbidden concepts: given per target (`concepts: {target: [alias, ...]}` or a list), or extracted from the forget
answers (names, dates, numbers and distinctive words that the retain answers do not contain). They are logged and
saved with the run (`forbidden_concepts.json`); matching is case-, punctuation- and alias-normalized.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from transformers import set_seed
from trl import GRPOConfig, GRPOTrainer

from ..adapter import lora_config
from ..config import UnlearnConfig
from ..data import format_qa, load_records, name_counts
from ..errors import UnlearnError
from ..evaluation.metric_math import ngram_entropy, rouge_l_recall
from .registry import register

logger = logging.getLogger(__name__)
ALL = "*"  # the target of concepts given as a plain list or extracted: every forget prompt
STOP = set(
    [
        "the",
        "a",
        "an",
        "of",
        "and",
        "or",
        "in",
        "on",
        "at",
        "to",
        "for",
        "with",
        "by",
        "from",
        "is",
        "was",
        "were",
        "are",
        "be",
        "been",
        "his",
        "her",
        "their",
        "its",
        "this",
        "that",
        "as",
        "it",
        "he",
        "she",
        "they",
        "who",
        "which",
        "what",
        "when",
        "where",
        "how",
        "has",
        "have",
        "had",
        "not",
        "but",
        "also",
        "into",
        "about",
        "after",
        "before",
        "book",
        "books",
        "author",
        "authors",
        "work",
        "works",
        "writing",
        "written",
        "novel",
        "novels",
    ]
)


def normalize(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9]+", " ", text.lower()).strip() + " "


def extract_concepts(forget_answers: list[str], retain_answers: list[str], top: int = 12) -> list[str]:
    """Names, dates/numbers and distinctive words of the forget answers that never occur in the retain answers."""
    retain_text = normalize(" ".join(retain_answers))
    names = name_counts(forget_answers)
    numbers = Counter(m for a in forget_answers for m in set(re.findall(r"\b\d[\d/.,-]*\d\b|\b\d\b", a)))
    words = Counter(w for a in forget_answers for w in set(normalize(a).split()) if len(w) > 3 and w not in STOP)
    ranked = (
        [n for n, _ in names.most_common()]
        + [n for n, _ in numbers.most_common()]
        + [w for w, _ in words.most_common()]
    )
    out = []
    for concept in ranked:
        if normalize(concept) not in retain_text and normalize(concept).strip() and concept not in out:
            out.append(concept)
    return out[:top]


def _text(completion) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return " ".join(str(m.get("content", "")) for m in completion)
    return str(completion)


def make_rewards(concepts: dict[str, list[str]], token_counter: Counter) -> list:
    """The composable rewards, each a TRL reward function named for its log line."""
    aliases = {t: [normalize(a) for a in [t, *al] if normalize(a).strip()] for t, al in concepts.items()}

    def forbidden_concepts(prompts, completions, completion_ids=None, kind=None, target=None, **kw):
        """-1 for each forbidden concept of the prompt's target that the completion mentions (forget prompts)."""
        out = []
        for i, c in enumerate(completions):
            if kind[i] != "forget":
                out.append(None)  # not scored on retain prompts
                continue
            text = normalize(_text(c))
            names = aliases.get(target[i]) or [a for al in aliases.values() for a in al]
            out.append(-float(sum(a in text for a in names)))
            token_counter[target[i]] += len(completion_ids[i]) if completion_ids is not None else 0
        return out

    def non_degenerate(prompts, completions, **kw):
        """0 for a fluent completion; down to -1 when empty, repetitive or non-fluent (n-gram entropy)."""
        out = []
        for c in completions:
            words = _text(c).split()
            if not words:
                out.append(-1.0)
                continue
            distinct = len(set(words)) / len(words)
            fluency = min(1.0, ngram_entropy(_text(c)) / 2.0) if len(words) >= 3 else 0.5
            out.append(-1.0 + 0.5 * distinct + 0.5 * fluency)
        return out

    def retain_fidelity(prompts, completions, kind=None, answer=None, **kw):
        """ROUGE-L recall of the completion against the reference answer, on retain prompts."""
        return [rouge_l_recall(_text(c), answer[i]) if kind[i] == "retain" else None for i, c in enumerate(completions)]

    return [forbidden_concepts, non_degenerate, retain_fidelity]


@dataclass
class GRPOUnlearnConfig(UnlearnConfig, GRPOConfig):
    recipe: str = field(default="grpo", metadata={"help": "Recipe name."})
    concepts: Any = field(
        default=None,
        metadata={
            "help": "Forbidden concepts: {target: [aliases]} or a list; extracted from the forget answers if unset."
        },
    )
    num_concepts: int = field(default=12, metadata={"help": "How many concepts to extract when none are given."})
    num_generations: int = field(default=4, metadata={"help": "Completions sampled per prompt (the GRPO group)."})
    max_completion_length: int = field(default=48, metadata={"help": "Longest sampled completion, in tokens."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient to the reference policy (TRL default 0)."})
    retain_weight: float = field(default=1.0, metadata={"help": "Retain prompts join the prompt set when > 0."})
    learning_rate: float = field(default=1e-5, metadata={"help": "GRPO learning rate (TRL's default)."})

    derived_fields = frozenset({"generation_batch_size"})  # TRL derives it from steps_per_generation


@register
class GRPOUnlearnTrainer(GRPOTrainer):
    """Composes `trl.GRPOTrainer`: builds the prompt set and the rewards, and hands both to TRL."""

    _name = "grpo"
    _paper = {
        "title": "Reinforcement Unlearning via Group Relative Policy Optimization (PURGE); GRPO from DeepSeekMath",
        "id": "2402.03300",
    }
    config_class = GRPOUnlearnConfig
    data_needs = "forget: QA pairs (+ retain prompts); forbidden concepts given or extracted"

    def __init__(
        self, model, args: GRPOUnlearnConfig, forget, retain=None, processing_class=None, callbacks=None, **kw
    ):
        if processing_class is None:
            raise UnlearnError("`processing_class` (the tokenizer) is required.")
        self.forget_records, self.retain_records = self.load_data(args, forget, retain)
        f_rows = [dict(r) for r in self.forget_records]
        r_rows = [dict(r) for r in self.retain_records] if self.retain_records is not None else []
        self.concepts = self._concepts(args, f_rows, r_rows)
        logger.warning("Forbidden concepts: %s", json.dumps(self.concepts))
        target = next(iter(self.concepts)) if len(self.concepts) == 1 else None
        rows = [
            {"kind": "forget", "answer": r["answer"], "target": target or self._target_of(r), "q": r["question"]}
            for r in f_rows
        ] + [{"kind": "retain", "answer": r["answer"], "target": "", "q": r["question"]} for r in r_rows]
        templated = bool(getattr(processing_class, "chat_template", None))
        for r in rows:
            q = r.pop("q")
            r["prompt"] = [{"role": "user", "content": q}] if templated else format_qa(processing_class, q, "")[0]
        self.tokens_per_target: Counter = Counter()
        peft_config = lora_config(args, model) if args.adapter == "lora" else None
        set_seed(args.seed)
        super().__init__(
            model=model,
            reward_funcs=make_rewards(self.concepts, self.tokens_per_target),
            args=args,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=processing_class,
            callbacks=callbacks,
            peft_config=peft_config,
        )

    @classmethod
    def load_data(cls, args: GRPOUnlearnConfig, forget, retain=None) -> tuple:
        """(forget records, retain records or None): QA pairs, the forget set not empty; retain is optional."""
        sets = {"forget": load_records(forget)}
        sets["retain"] = load_records(retain) if retain is not None and args.retain_weight > 0 else None
        if len(sets["forget"]) == 0:
            raise UnlearnError("The forget set is empty: give at least one example to forget.")
        for what, ds in sets.items():
            if ds is not None and not {"question", "answer"} <= set(ds.column_names):
                raise UnlearnError(
                    f"Recipe `grpo` reads QA pairs: the {what} set needs `question` and `answer` columns; it has "
                    f"{sorted(ds.column_names)}."
                )
        return sets["forget"], sets["retain"]

    def _concepts(self, args, f_rows, r_rows) -> dict[str, list[str]]:
        given = args.concepts
        if isinstance(given, dict) and given:
            return {str(t): [str(a) for a in (al or [])] for t, al in given.items()}
        if isinstance(given, (list, tuple)) and given:
            return {ALL: [str(c) for c in given]}
        found = extract_concepts([r["answer"] for r in f_rows], [r["answer"] for r in r_rows], args.num_concepts)
        if not found:
            raise UnlearnError(
                "`grpo` has no forbidden concepts: none were given (`concepts: {target: [aliases]}` or a list) and "
                "none could be extracted: the forget answers contain no name, number or word absent from the "
                "retain answers. Give `concepts` explicitly."
            )
        return {ALL: found}

    def _target_of(self, row) -> str:
        text = normalize(row["answer"])
        return next(
            (t for t, al in self.concepts.items() if any(normalize(a) in text for a in [t, *al])),
            next(iter(self.concepts)),
        )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        if output_dir and self.accelerator.is_main_process:
            report = {"concepts": self.concepts, "generated_tokens_per_target": dict(self.tokens_per_target)}
            Path(output_dir, "forbidden_concepts.json").write_text(json.dumps(report, indent=2))
