"""`evaluate()`: score each dataset of a suite once, compute its metrics, and write the logs.

Each dataset is scored in one pass: the answer, paraphrased and perturbed rows of every question go into shared
forward batches (`scoring.row_stats`: a prompt shared by several rows is run once), and greedy generations are
made once; every metric on that dataset reads these shared scores. Scores of finished datasets are kept in `out/.partial/`, so an interrupted
evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..data import detect_shape, fingerprint, load_records, tokenize
from ..errors import UnlearnError
from ..rundir import write_atomic
from ..scoring import GENERATION_BATCH_SIZE, RowStats, greedy_answers, row_stats
from .metrics import METRICS, REFERENCE_HINT, MetricResult, dependencies
from .reference import load_reference, reference_agg, reference_values
from .suite import dataset_rows, load_suite

logger = logging.getLogger(__name__)
SCORES_VERSION = 1


@dataclass
class DatasetScores:
    name: str
    fingerprint: str
    inputs: list[str]  # questions, or text prefixes
    targets: list[str]  # answers, or text continuations (what generations are compared with)
    texts: list[str]  # what the `answer` rows score: the answer, or the whole text
    answer: list[RowStats] | None = None
    paraphrased: list[RowStats] | None = None
    perturbed: list[list[RowStats]] | None = None
    generations: list[str] | None = None


@dataclass
class EvalResult:
    """Per-sample values and aggregates of every metric of a suite."""

    suite: str
    params: dict[str, Any]
    metrics: dict[str, MetricResult]
    specs: dict[str, dict[str, Any]]
    scores: dict[str, DatasetScores] = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        return {name: r.agg_value for name, r in self.metrics.items()}

    def __getitem__(self, name: str) -> float:
        return self.metrics[name].agg_value

    def eval_log(self) -> dict[str, Any]:
        """The EVAL.json content: metric -> {agg_value, value_by_index, ...} (open-unlearning's shape)."""
        log = {}
        for name, result in self.metrics.items():
            entry = result.to_log()
            spec = self.specs[name]
            entry.update({k: spec[k] for k in ("metric", "data", "role") if k in spec})
            s = self.scores.get(spec.get("data", ""))
            if s is not None and s.generations is not None and METRICS[spec["metric"]].needs & {"generation"}:
                for i, item in entry.get("value_by_index", {}).items():
                    j = int(i)
                    item.update(input=s.inputs[j], ground_truth=s.targets[j], generation=s.generations[j])
            log[name] = entry
        return log

    def save(self, out: str | os.PathLike) -> Path:
        from .report import write_report

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "EVAL.json", self.eval_log())
        summary = {
            **self.meta,
            "suite": self.suite,
            "params": self.params,
            "metrics": self.summary(),
            "higher_is_better": {n: r.higher_is_better for n, r in self.metrics.items()},
            "roles": {n: s.get("role") for n, s in self.specs.items()},
        }
        _write_json(out / "SUMMARY.json", summary)
        write_report(self, out)
        return out


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=float))


class _Context:
    def __init__(self, model, tokenizer, scores, reference, reference_path):
        self.model, self.tokenizer = model, tokenizer
        self.scores, self.results, self.reference, self.reference_path = scores, {}, reference, reference_path
        self.name = ""

    def data(self, spec: dict[str, Any]) -> DatasetScores:
        return self.scores[spec["data"]]

    def reference_values(self, key: str) -> list[float]:
        return reference_values(self.reference, key, self.reference_path)

    def reference_agg(self, key: str) -> float:
        return reference_agg(self.reference, key, self.reference_path)


def model_fingerprint(model: torch.nn.Module) -> str:
    """Cheap and change-sensitive: the trainable (adapter) weights in full, and a strided sample of the rest."""
    h = hashlib.sha256(str(getattr(getattr(model, "config", None), "_name_or_path", "")).encode())
    for name, p in model.named_parameters():
        t = p.detach().float().flatten()
        sample = t if p.requires_grad or "lora_" in name else t[:: max(1, t.numel() // 256)]
        h.update(name.encode())
        h.update(sample.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def evaluate(
    model: torch.nn.Module,
    tokenizer,
    suite: str | os.PathLike = "tofu",
    reference: str | os.PathLike | dict | None = None,
    out: str | os.PathLike | None = None,
    skip: tuple[str, ...] | list[str] = (),
    batch_size: int = 8,
    max_new_tokens: int = 64,
    generation_batch_size: int = GENERATION_BATCH_SIZE,
    **params: Any,
) -> EvalResult:
    """Evaluate `model` on `suite` (a name from `eval/` or a YAML path); `params` fill the suite's parameters.

    `reference`: a directory or EVAL.json of the reference (retain-only) model, ours or open-unlearning's, for
    forget quality and privacy leakage. A metric that needs it fails before any scoring when it is missing.
    `batch_size` rows per likelihood pass; `generation_batch_size` questions decoded together (ROUGE, fluency).
    """
    spec = load_suite(suite, **params)
    specs = {n: s for n, s in spec["metrics"].items() if n not in set(skip)}
    for name, s in specs.items():
        for dep in dependencies(s):
            if dep not in specs:
                raise UnlearnError(f"Metric `{name}` needs `{dep}`, which is skipped or not in the suite.")
    ref_log = load_reference(reference) if isinstance(reference, (str, os.PathLike)) else reference
    for name, s in specs.items():
        if METRICS[s["metric"]].needs_reference and ref_log is None:
            raise UnlearnError(
                f"Metric `{name}` compares with a reference model and no `reference` was given. "
                + REFERENCE_HINT.format(name=name)
            )
    needs: dict[str, set[str]] = {}
    for s in specs.values():
        if "data" in s:
            needs.setdefault(s["data"], set()).update(METRICS[s["metric"]].needs)
        if "holdout" in s:
            needs.setdefault(s["holdout"], set()).add("answer")
    fp = model_fingerprint(model)
    partial = Path(out) / ".partial" if out is not None else None
    scores = {}
    for dname, what in needs.items():
        scores[dname] = _score_dataset(
            model,
            tokenizer,
            dname,
            spec["datasets"][dname],
            what,
            (batch_size, generation_batch_size),
            max_new_tokens,
            fp,
            partial,
        )
    ctx = _Context(model, tokenizer, scores, ref_log, str(reference) if reference is not None else None)
    pending = dict(specs)
    while pending:
        ready = [n for n, s in pending.items() if all(d in ctx.results for d in dependencies(s))]
        if not ready:
            raise UnlearnError(f"Metric dependencies form a cycle among {sorted(pending)}.")
        for name in ready:
            ctx.name = name
            ctx.results[name] = METRICS[pending.pop(name)["metric"]].fn(ctx, specs[name])
    meta = {
        "model": str(getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__)),
        "model_fingerprint": fp,
        "data_fingerprints": {n: s.fingerprint for n, s in scores.items()},
        "reference": str(reference) if isinstance(reference, (str, os.PathLike)) else None,
        "settings": {
            "batch_size": batch_size,
            "generation_batch_size": generation_batch_size,
            "max_new_tokens": max_new_tokens,
            "skip": list(skip),
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    result = EvalResult(spec["name"], spec["params"], {n: ctx.results[n] for n in specs}, specs, scores, meta)
    if out is not None:
        result.save(out)
    return result


def _score_dataset(model, tokenizer, name, dspec, needs, batch_sizes, max_new_tokens, fp, partial) -> DatasetScores:
    batch_size, generation_batch_size = batch_sizes
    ds = dataset_rows(dspec)
    qk, ak, tk = dspec.get("question_key", "question"), dspec.get("answer_key", "answer"), dspec.get("text_key", "text")
    shape = detect_shape(ds, qk, ak, tk, f"`{name}` evaluation")
    key = hashlib.sha256(
        json.dumps(
            [SCORES_VERSION, fp, dspec, sorted(needs), max_new_tokens, fingerprint(ds)], sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:16]
    cache = partial / f"{name}-{key}.pkl" if partial is not None else None
    if cache is not None and cache.is_file():
        logger.info("Resuming: scores of `%s` loaded from %s.", name, cache)
        with open(cache, "rb") as fh:
            return pickle.load(fh)
    for col in ("paraphrased", "perturbed"):
        if col in needs and dspec.get(f"{col}_key", f"{col}_answer") not in ds.column_names:
            raise UnlearnError(
                f"Dataset `{name}` has no `{dspec.get(f'{col}_key', f'{col}_answer')}` column, needed "
                f"by a metric on it (columns: {ds.column_names}). Set `{col}_key` in the suite."
            )
    if shape == "qa":
        inputs, targets = [str(q) for q in ds[qk]], [str(a) for a in ds[ak]]
    else:
        inputs, targets = _split_texts(tokenizer, [str(t) for t in ds[tk]], int(dspec.get("prefix_tokens", 32)))
    texts = targets if shape == "qa" else [str(t) for t in ds[tk]]
    scores = DatasetScores(name, fingerprint(ds), inputs, targets, texts)
    # One list of rows: answers, then paraphrased, then every perturbed answer; scored in shared batches.
    rows = [{"question": q, "answer": a} for q, a in zip(inputs, targets, strict=True)] if shape == "qa" else None
    spans: dict[str, tuple[int, int]] = {}
    flat: list[dict] = []
    if "answer" in needs or "perturbed" in needs:
        spans["answer"] = (len(flat), len(flat) + len(ds))
        flat += rows if rows is not None else [{"text": t} for t in ds[tk]]
    if "paraphrased" in needs:
        spans["paraphrased"] = (len(flat), len(flat) + len(ds))
        flat += [
            {"question": q, "answer": str(a)}
            for q, a in zip(inputs, ds[dspec.get("paraphrased_key", "paraphrased_answer")], strict=True)
        ]
    widths = []
    if "perturbed" in needs:
        start = len(flat)
        for q, perts in zip(inputs, ds[dspec.get("perturbed_key", "perturbed_answer")], strict=True):
            perts = perts if isinstance(perts, list) else [perts]
            widths.append(len(perts))
            flat += [{"question": q, "answer": str(p)} for p in perts]
        spans["perturbed"] = (start, len(flat))
    if flat:
        examples = tokenize(
            load_records(flat), tokenizer, "qa" if shape == "qa" else "text", 1024, "question", "answer", "text"
        )
        stats = row_stats(model, examples, tokenizer.pad_token_id, batch_size)
        if "answer" in spans:
            scores.answer = stats[slice(*spans["answer"])]
        if "paraphrased" in spans:
            scores.paraphrased = stats[slice(*spans["paraphrased"])]
        if "perturbed" in spans:
            it = iter(stats[slice(*spans["perturbed"])])
            scores.perturbed = [[next(it) for _ in range(w)] for w in widths]
    if "generation" in needs:
        scores.generations = greedy_answers(
            model, tokenizer, inputs, max_new_tokens, generation_batch_size, raw=shape == "text"
        )
    if cache is not None:
        write_atomic(cache, pickle.dumps(scores))
    return scores


def _split_texts(tokenizer, texts: list[str], prefix_tokens: int) -> tuple[list[str], list[str]]:
    """Text -> (prefix of `prefix_tokens` tokens, the rest): the verbatim-memorization prompt and target."""
    prefixes, rests = [], []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prefixes.append(tokenizer.decode(ids[:prefix_tokens]))
        rests.append(tokenizer.decode(ids[prefix_tokens:]))
    return prefixes, rests
