"""`unlearn.benchmark()`: the standard protocol, step by step, in one run directory.

    RUN/data/            the forget, retain (and holdout) rows as used, JSON Lines
    RUN/target/          the base fine-tuned on forget + retain (TOFU's target), unless the protocol gives one
    RUN/retain/          the base fine-tuned on retain only (the reference), unless the protocol gives one
    RUN/eval/retain/     its evaluation: the reference log every forget quality is computed against
    RUN/eval/target/     the target's evaluation, and the sanity check that the target learned the forget set
    RUN/entries/NAME/    per recipe x settings: train/ (the unlearning run), eval/, attack-relearn/, attack-quantize/
    RUN/RESULTS.md, RUN/results.json, RUN/tradeoff.png, RUN/relearn_curves.png

Every step is cached under a key of what it depends on (`steps.Steps`): run the same command again and it
continues where it stopped; change one entry's settings and only that entry is redone.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..data import fingerprint, load_records
from ..errors import UnlearnError
from ..rundir import jsonl, write_atomic
from .protocol import Entry, Protocol, load_protocol
from .steps import Steps

logger = logging.getLogger(__name__)

# Keys of a data mapping read here (slicing, the answer column), not passed on to the loader.
SOURCE_KEYS = ("start", "limit", "answer_key")


def benchmark(
    protocol: str | os.PathLike | dict[str, Any] | Protocol,
    out: str | os.PathLike | None = None,
    only: str | None = None,
) -> dict[str, Any]:
    """Run a benchmark protocol (a YAML path, a mapping or a `Protocol`); returns the `results.json` content.

    `out` defaults to `runs/benchmark/NAME`. `only="models"` stops after the target and retain models and their
    evaluations, with every entry's retain file written (`data/retain-NAME.jsonl` for entries with `extra_retain`):
    what the shipped recipe files unlearn from.
    """
    p = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    if only not in (None, "models"):
        raise UnlearnError(f"`only` must be `models` or left out, got {only!r}.")
    root = Path(out or Path("runs") / "benchmark" / p.name)
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / "protocol.json", json.dumps(p.to_dict(), indent=2, default=str))
    data = materialize(p, root / "data")
    check_data(p, data)  # every refusal happens here, before any model is loaded
    steps = Steps(root)
    models = build_models(p, data, steps)
    if only == "models":
        for entry in p.entries:
            entry_retain(entry, data)
        return {"target": models["target"], "retain": models["retain"]}
    if "relearn" in p.attacks:
        models["relearn_baseline"] = relearn_baseline(p.attacks["relearn"], data, models, steps)
    for entry in p.entries:
        run_entry(p, entry, data, models, steps)
    from .report import write_results

    return write_results(p, root, steps, models)


# ---- data -------------------------------------------------------------------------------------------------------


def materialize(p: Protocol, where: Path) -> dict[str, dict[str, Any]]:
    """Each data set of the protocol, sliced as asked and written to `where/NAME.jsonl` -> {name: {rows, path,
    fingerprint}}. The files are what every step reads, so that a step's key can name their content."""
    return {
        name: _write_rows(where / f"{name}.jsonl", _rows(spec, f"`data.{name}`"))
        for name, spec in p.data.items()
        if spec is not None
    }


def _rows(spec: Any, what: str) -> list[dict[str, str]]:
    """The QA rows of one data source: `{path, start, limit, answer_key}` slices it and picks the answer column."""
    source, start, limit, answer_key = spec, 0, None, "answer"
    if isinstance(spec, dict) and set(spec) & set(SOURCE_KEYS):
        start, limit = int(spec.get("start", 0)), spec.get("limit")
        answer_key = spec.get("answer_key", answer_key)
        source = {k: v for k, v in spec.items() if k not in SOURCE_KEYS}
        source = source["path"] if set(source) == {"path"} else source
    ds = load_records(source)
    missing = {"question", answer_key} - set(ds.column_names)
    if missing:
        raise UnlearnError(f"{what} needs `question` and `{answer_key}` columns (QA pairs); it has {ds.column_names}.")
    rows = [{"question": str(r["question"]), "answer": str(r[answer_key])} for r in ds]
    rows = rows[start : start + int(limit)] if limit is not None else rows[start:]
    if not rows:
        raise UnlearnError(f"{what} is empty after slicing (start={start}, limit={limit}).")
    return rows


def _write_rows(path: Path, rows: list[dict[str, str]]) -> dict[str, Any]:
    text = jsonl(rows)
    if not path.is_file() or path.read_text() != text:
        write_atomic(path, text)
    return {"rows": rows, "path": str(path), "fingerprint": fingerprint(load_records(rows))}


def _extra_rows(entry: Entry) -> list[dict[str, str]]:
    return [r for i, spec in enumerate(entry.extra_retain) for r in _rows(spec, f"`{entry.name}`.extra_retain[{i}]")]


def entry_retain(entry: Entry, data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The rows `entry`'s recipe keeps: `data.retain`, then its `extra_retain` rows (checked by `check_data`),
    written beside the retain set as `retain-NAME.jsonl`."""
    if not entry.extra_retain:
        return data["retain"]
    where = Path(data["retain"]["path"]).parent
    return _write_rows(where / f"retain-{entry.name}.jsonl", data["retain"]["rows"] + _extra_rows(entry))


def _pairs(rows: list[dict]) -> set[tuple[str, str]]:
    return {(r["question"].strip(), r["answer"].strip()) for r in rows}


def _questions(rows) -> set[str]:
    return {str(r["question"]).strip() for r in rows}


def check_data(p: Protocol, data: dict[str, dict[str, Any]]) -> None:
    """Refuse data that would make the table meaningless, naming the fix."""
    forget, retain = data["forget"]["rows"], data["retain"]["rows"]
    overlap = _questions(forget) & _questions(retain)
    if overlap:
        example = next(iter(sorted(overlap)))
        raise UnlearnError(
            f"`data.retain` shares {len(overlap)} question(s) with `data.forget` (e.g. {example!r}): "
            "the retain model would learn what it is the reference for never having seen. Remove them "
            "from the retain set (TOFU: forget01 pairs with retain99, forget05 with retain95, forget10 "
            "with retain90)."
        )
    if "holdout" in data:
        seen = _questions(data["holdout"]["rows"]) & (_questions(forget) | _questions(retain))
        if seen:
            raise UnlearnError(
                f"`data.holdout` shares {len(seen)} question(s) with the forget or retain set; a "
                "holdout must be rows no model here was trained on."
            )
    if p.target is not None:
        _check_target_data(p, forget)
    _check_suite_forget(p, forget)
    _check_extra_retain(p, forget)


def _check_extra_retain(p: Protocol, forget: list[dict]) -> None:
    """An entry's `extra_retain` rows must be neither forget rows nor rows the suite evaluates, else utility would
    be measured on rows the recipe was trained to keep."""
    entries = [e for e in p.entries if e.extra_retain]
    if not entries:
        return
    evaluated = _questions(forget).union(*(questions for _, questions in _suite_questions(p).values()))
    for entry in entries:
        clash = _questions(_extra_rows(entry)) & evaluated
        if clash:
            raise UnlearnError(
                f"Entry `{entry.name}`: {len(clash)} `extra_retain` question(s) are forget rows or rows the suite "
                f"evaluates, e.g. {next(iter(sorted(clash)))!r}; slice them off (`start:` past the suite's `limit`)."
            )


def _check_target_data(p: Protocol, forget: list[dict]) -> None:
    if p.target_trained_on == "unknown":
        logger.warning("`target.trained_on: unknown`: not checking that the target was trained on the forget set.")
        return
    if p.target_trained_on is None:
        raise UnlearnError(
            f"`target` is given ({p.target}) without what it was fine-tuned on, so it cannot be "
            "checked that it ever learned the forget set. Write `target: {path: "
            f"{p.target}, trained_on: [DATA, ...]}}` (e.g. [tofu:forget10, tofu:retain90]), or "
            "`trained_on: unknown` to skip this check."
        )
    sources = p.target_trained_on if isinstance(p.target_trained_on, list) else [p.target_trained_on]
    trained: set[tuple[str, str]] = set()
    for source in sources:
        trained |= _pairs([dict(r) for r in load_records(source)])
    missing = _pairs(forget) - trained
    if missing:
        example = next(iter(sorted(missing)))[0]
        raise UnlearnError(
            f"{len(missing)} of the {len(forget)} forget rows are not in what the target was trained "
            f"on (`target.trained_on`), e.g. {example!r}: unlearning data the model never saw "
            "measures nothing. Use a forget set drawn from the target's training data, or a target "
            "fine-tuned on it."
        )


def _suite_questions(p: Protocol, role: str | None = None) -> dict[str, tuple[str, set[str]]]:
    """{dataset: (its path, its questions as the suite evaluates them, after `start`/`limit`)} of the QA datasets the
    suite's metrics read (those of `role` only, when given); text datasets have no questions and are left out."""
    from ..evaluation.suite import dataset_rows, load_suite

    suite = load_suite(p.suite, **p.suite_params)
    names = {s["data"] for s in suite["metrics"].values() if "data" in s and (role is None or s.get("role") == role)}
    out = {}
    for name in sorted(names):
        spec = suite["datasets"][name]
        ds = dataset_rows(spec)
        qk = spec.get("question_key", "question")
        if qk in ds.column_names:
            out[name] = (str(spec["path"]), _questions([{"question": r[qk]} for r in ds]))
    return out


def _check_suite_forget(p: Protocol, forget: list[dict]) -> None:
    """The suite's forget-side datasets must hold the forget rows, or forget quality measures rows never unlearned."""
    known = _questions(forget)
    for name, (path, questions) in _suite_questions(p, role="forget").items():
        stray = questions - known
        if stray:
            raise UnlearnError(
                f"The suite's forget-side dataset `{name}` ({path}) holds {len(stray)} "
                f"question(s) that are not in `data.forget`, e.g. {next(iter(sorted(stray)))!r}: "
                "forget quality would be measured on rows that were never unlearned. Make them match "
                "(for the tofu suite: `suite_params: {forget_split: ...}` as the forget set)."
            )


# ---- models -----------------------------------------------------------------------------------------------------


def _resume_flags(run_dir: Path) -> dict[str, Any] | None:
    """None when the run in `run_dir` is complete; `resume` when it was interrupted; nothing for a new one."""
    from ..rundir import CONFIG_FILE, RUN_FILE

    if (run_dir / RUN_FILE).is_file():
        return None
    return {"resume": True} if (run_dir / CONFIG_FILE).is_file() else {}


def _finetune_step(p: Protocol, rows: list[dict]):
    from ..finetuning import finetune
    from ..loading import ensure_pad_token, load_model_and_tokenizer

    def fn(d: Path) -> dict[str, Any]:
        out = d / "model"
        flags = _resume_flags(out)
        if flags is not None:
            model, tokenizer = load_model_and_tokenizer(p.model)
            ensure_pad_token(tokenizer)
            finetune(model, tokenizer, rows, output_dir=out, disable_tqdm=True, **p.finetune, **flags)
        return {"model": str(out)}

    return fn


def build_models(p: Protocol, data: dict[str, dict[str, Any]], steps: Steps) -> dict[str, Any]:
    """The target and retain models (trained or given) and their evaluations; checks that the target learned the
    forget set. -> {target, retain: model paths, target_eval, retain_eval: evaluation directories, keys}."""
    fps = {n: d["fingerprint"] for n, d in data.items()}
    base = {"model": p.model, "finetune": p.finetune}
    if p.target is None:
        rows = data["forget"]["rows"] + data["retain"]["rows"]
        rec = steps.run("target", {**base, "data": [fps["forget"], fps["retain"]]}, _finetune_step(p, rows), "finetune")
        target, target_key = rec["result"]["model"], rec["key"]
    else:
        target, target_key = p.target, {"given": p.target}
    if p.retain_model is None:
        rec = steps.run(
            "retain", {**base, "data": [fps["retain"]]}, _finetune_step(p, data["retain"]["rows"]), "finetune"
        )
        retain, retain_key = rec["result"]["model"], rec["key"]
    else:
        retain, retain_key = p.retain_model, {"given": p.retain_model}
    evals = {"suite": p.suite, "params": p.suite_params, "skip": p.skip, "eval": p.eval, "holdout": fps.get("holdout")}
    ref = steps.run("eval/retain", {"model": retain_key, **evals}, _eval_step(p, retain, None), "evaluation")
    ref_dir = str(steps.root / "eval" / "retain")
    tgt = steps.run(
        "eval/target",
        {"model": target_key, "reference": ref["key"], **evals},
        _eval_step(p, target, ref_dir),
        "evaluation",
    )
    _sanity(p, tgt["result"]["metrics"], ref["result"]["metrics"], steps.root)
    return {
        "target": target,
        "retain": retain,
        "target_key": target_key,
        "retain_key": retain_key,
        "reference": ref_dir,
        "reference_key": ref["key"],
        "evals": evals,
    }


def _eval_step(p: Protocol, model_path: str, reference: str | None):
    """Evaluate `model_path` with the protocol's suite. Without `reference` (the retain model itself) the reference
    metrics are computed in a second pass against its own log, from the cached scores: forget quality 1 by
    definition, as in TOFU's table."""
    from ..evaluation import METRICS, evaluate, load_suite
    from ..loading import ensure_pad_token, load_model_or_adapter

    def fn(d: Path) -> dict[str, Any]:
        model, tokenizer = load_model_or_adapter(model_path)
        ensure_pad_token(tokenizer)
        opts = {**p.eval, **p.suite_params}
        if reference is None:
            suite = load_suite(p.suite, **p.suite_params)
            skip = [*p.skip, *(n for n, s in suite["metrics"].items() if METRICS[s["metric"]].needs_reference)]
            evaluate(model, tokenizer, suite=p.suite, out=d, skip=skip, **opts)
        result = evaluate(model, tokenizer, suite=p.suite, reference=reference or str(d), out=d, skip=p.skip, **opts)
        return {"metrics": result.summary(), "model": model_path}

    return fn


def _sanity(p: Protocol, target: dict[str, float], retain: dict[str, float], root: Path) -> None:
    """The target must know the forget set better than the retain model, measurably: else nothing is unlearned."""
    limit = float(p.sanity["max_forget_quality"])
    fq, pt, pr = target["forget_quality"], target.get("forget_probability"), retain.get("forget_probability")
    problems = []
    if fq >= limit:
        problems.append(f"forget quality of the target against the retain model is {fq:.3g}, not below {limit:g}")
    if pt is not None and pr is not None and pt <= pr:
        problems.append(f"the target's forget probability {pt:.3f} is not above the retain model's {pr:.3f}")
    record = {
        "passed": not problems,
        "problems": problems,
        "target_forget_quality": fq,
        "target_forget_probability": pt,
        "retain_forget_probability": pr,
        "max_forget_quality": limit,
    }
    write_atomic(root / "eval" / "sanity.json", json.dumps(record, indent=2))
    if problems and p.sanity["enforce"]:
        raise UnlearnError(
            "The target did not learn the forget set well enough to measure unlearning: "
            + "; ".join(problems)
            + ". Train it longer or harder (`finetune.num_train_epochs`, "
            "`finetune.learning_rate`), or set `sanity: {enforce: false}` to go on and have the "
            "table say so."
        )
    for problem in problems:
        logger.warning("Sanity check failed: %s (the results table says so).", problem)


# ---- entries ----------------------------------------------------------------------------------------------------


def run_entry(p: Protocol, entry: Entry, data: dict[str, dict[str, Any]], models: dict[str, Any], steps: Steps):
    """Unlearn from the target with one recipe x settings, evaluate against the reference, run the attacks."""
    base = f"entries/{entry.name}"
    retain = entry_retain(entry, data)
    train = steps.run(
        f"{base}/train",
        {
            "target": models["target_key"],
            "recipe": entry.recipe,
            "settings": entry.settings,
            "data": [data["forget"]["fingerprint"], retain["fingerprint"]],
        },
        _unlearn_step(entry, data["forget"]["path"], retain["path"], models["target"]),
        "unlearning",
    )
    run_dir = train["result"]["run"]
    steps.run(
        f"{base}/eval",
        {"train": train["key"], "reference": models["reference_key"], **models["evals"]},
        _eval_step(p, run_dir, models["reference"]),
        "evaluation",
    )
    for name, options in p.attacks.items():
        steps.run(
            f"{base}/attack-{name}",
            {"train": train["key"], "attack": name, "options": options, "baseline": models["retain_key"]},
            _attack_step(name, options, data, run_dir, models),
            "attacks",
        )


def _relearn_options(options: dict[str, Any], forget: list[dict[str, Any]]) -> dict[str, Any]:
    # Relearn on half the forget rows, measure on the other half, unless the protocol says otherwise.
    return {"k": len(forget) // 2, **options}


def relearn_baseline(options: dict[str, Any], data: dict[str, dict[str, Any]], models, steps: Steps) -> list[float]:
    """The retain model relearned as every entry's relearning attack is (how fast a model that never saw the forget
    set learns it): the same for every entry, so computed once, as its own cached step."""
    from ..attacks.relearn import baseline_curve
    from ..loading import ensure_pad_token, load_model_and_tokenizer

    opts = _relearn_options(options, data["forget"]["rows"])

    def fn(d: Path) -> dict[str, Any]:
        model, tokenizer = load_model_and_tokenizer(models["retain"])
        ensure_pad_token(tokenizer)
        return {"curve": baseline_curve(model, tokenizer, data["forget"]["rows"], data["retain"]["rows"], **opts)}

    record = steps.run(
        "attacks/relearn-baseline",
        {"retain": models["retain_key"], "options": opts, "forget": data["forget"]["fingerprint"]},
        fn,
        "attacks",
    )
    return record["result"]["curve"]


def _unlearn_step(entry: Entry, forget_path: str, retain_path: str, target: str):
    from ..loading import ensure_pad_token, load_model_and_tokenizer
    from ..run import forget

    def fn(d: Path) -> dict[str, Any]:
        out = d / "run"
        flags = _resume_flags(out)
        if flags is not None:
            model, tokenizer = load_model_and_tokenizer(target)
            ensure_pad_token(tokenizer)
            forget(
                model,
                tokenizer,
                forget_path,
                retain_path,
                recipe=entry.recipe,
                output_dir=out,
                **{"disable_tqdm": True, **entry.settings, **flags},
            )
        log = json.loads((out / "run.json").read_text())
        return {"run": str(out), "final": log.get("final"), "global_step": log.get("global_step")}

    return fn


def _attack_step(name: str, options: dict[str, Any], data: dict[str, dict[str, Any]], run_dir: str, models):
    from peft import PeftModel

    from ..attacks import attack
    from ..loading import ensure_pad_token, load_model_and_tokenizer, load_model_or_adapter

    def fn(d: Path) -> dict[str, Any]:
        model, tokenizer = load_model_or_adapter(run_dir)
        ensure_pad_token(tokenizer)
        # An adapter's base is the target; a full fine-tune needs the target beside it.
        original = None if isinstance(model, PeftModel) else load_model_and_tokenizer(models["target"])[0]
        forget = data["forget"]["rows"]
        opts = dict(options)
        if name == "relearn":
            opts = _relearn_options(opts, forget)
            opts["baseline_curve"] = models["relearn_baseline"]
        result = attack(
            model, tokenizer, name, forget=forget, retain=data["retain"]["rows"], original=original, out=d, **opts
        )
        details = {k: v for k, v in result.details.items() if isinstance(v, (int, float, str, list, dict))}
        return {"recovered": result.recovered, "row": result.row(), "details": details}

    return fn
