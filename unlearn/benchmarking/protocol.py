"""A benchmark protocol: one YAML file naming the model, the data, how the target and retain models are trained, the
evaluation suite, the recipes x settings to compare and the attacks to run on each.

    name: tofu_smollm2_cpu
    model: smollm2-135m                        # the base that the target and retain models are fine-tuned from
    data:
      forget: tofu:forget01
      retain: {path: tofu:retain90, limit: 160}  # any data source; `limit`/`start` slice it
      holdout: null                            # QA rows never trained on: privleak, when the suite reads it
    finetune: {learning_rate: 1.0e-5, num_train_epochs: 5}   # TOFU's recipe (full fine-tuning)
    suite: tofu
    suite_params: {forget_split: forget01, limit: 40}
    entries:
      - recipe: ga
      - {recipe: graddiff, grid: {learning_rate: [1.0e-4, 5.0e-4]}}
      - recipe: idkdpo                         # more rows for this entry's recipe to keep (never the suite's rows):
        name: idkdpo-general                   # `answer_key` picks the answer column
        extra_retain: {path: tofu:real_authors_perturbed, start: 40, answer_key: original_answer}
    attacks:
      relearn: {steps: 20}                     # k: half the forget rows unless given
      quantize: {bits: [4]}

A protocol that reuses another's models and evaluations can `include:` it (a shipped name or a path) and give only
the keys that differ, each replacing the included key whole:

    include: tofu_smollm2_cpu
    name: tofu_smollm2_cpu_robust
    entries: [{recipe: idkdpo, settings: {learning_rate: 1.0e-3}}]

Everything is checked when the file is read, before any model is loaded: unknown keys, recipes, recipe settings,
attacks and their options, suites and their metrics.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnlearnError, read_mapping_file, reject_unknown, unknown_name
from ..errors import as_mapping as _mapping

TOP_KEYS = (
    "include",
    "name",
    "description",
    "model",
    "target",
    "retain_model",
    "data",
    "finetune",
    "suite",
    "suite_params",
    "skip",
    "eval",
    "defaults",
    "entries",
    "attacks",
    "sanity",
    "select",
)
DATA_KEYS = ("forget", "retain", "holdout")
EVAL_KEYS = ("batch_size", "max_new_tokens", "generation_batch_size")
ENTRY_KEYS = ("recipe", "settings", "grid", "name", "extra_retain")
SANITY_KEYS = ("max_forget_quality", "enforce")
# Which entry of a recipe is its recommended setting: the best forget quality among those keeping at least this
# fraction of the target's model utility (the results table marks it).
SELECT_DEFAULTS = {"utility_floor": 0.95}
# TOFU's fine-tuning recipe for its target and retain models (Maini et al., 2024, section 3).
FINETUNE_DEFAULTS = {"learning_rate": 1e-5, "num_train_epochs": 5, "per_device_train_batch_size": 4}
# Settings of the attacks when the protocol leaves them out: 20 relearning steps on half of the forget rows.
ATTACK_DEFAULTS: dict[str, dict[str, Any]] = {"relearn": {"steps": 20, "eval_every": 5}, "quantize": {"bits": [4]}}
# Before any unlearning is judged, the target must be told apart from the retain model on the forget set.
SANITY_DEFAULTS = {"max_forget_quality": 0.05, "enforce": True}
# The options every attack function takes positionally (filled by the benchmark, not the protocol).
_ATTACK_POSITIONAL = {"models", "tokenizer", "forget", "retain", "before", "original"}


@dataclass
class Entry:
    """One row of the results table: a recipe and its settings (on top of the protocol's `defaults`)."""

    recipe: str
    settings: dict[str, Any]
    name: str
    # Rows this entry's recipe keeps besides `data.retain` (data sources, sliced like `data`), e.g. general knowledge
    # of the kind model utility measures. The target and retain models never see them.
    extra_retain: list[Any] = field(default_factory=list)

    @staticmethod
    def slug(recipe: str, own: dict[str, Any]) -> str:
        parts = [recipe] + [f"{k}={_short(v)}" for k, v in sorted(own.items())]
        return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "-".join(parts))


@dataclass
class Protocol:
    name: str
    model: str | None
    data: dict[str, Any]
    suite: str
    entries: list[Entry]
    target: str | None = None
    target_trained_on: Any = None
    retain_model: str | None = None
    finetune: dict[str, Any] = field(default_factory=dict)
    suite_params: dict[str, Any] = field(default_factory=dict)
    skip: list[str] = field(default_factory=list)
    eval: dict[str, Any] = field(default_factory=dict)
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    sanity: dict[str, Any] = field(default_factory=dict)
    select: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # the settings every entry starts from
    description: str = ""
    source: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # top-level keys replaced on the command line

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "target": self.target,
            "retain_model": self.retain_model,
            "data": self.data,
            "finetune": self.finetune,
            "suite": self.suite,
            "suite_params": self.suite_params,
            "skip": self.skip,
            "eval": self.eval,
            "entries": [
                {"name": e.name, "recipe": e.recipe, "settings": e.settings}
                | ({"extra_retain": e.extra_retain} if e.extra_retain else {})
                for e in self.entries
            ],
            "attacks": self.attacks,
            "sanity": self.sanity,
            "select": self.select,
        }


def load_protocol(source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None) -> Protocol:
    """Read and check a protocol from a YAML file or a mapping; `overrides` replace top-level keys."""
    where = "the protocol"
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        from ..resources import available, find_shipped

        path = find_shipped("protocols", source)
        if path is None:
            raise UnlearnError(
                f"Benchmark protocol `{source}` does not exist, and no shipped protocol has that name. The shipped "
                f"ones (by name or as benchmarks/protocols/NAME.yaml): {', '.join(available('protocols'))}."
            )
        raw = _read_with_includes(path)
        where = f"`{path}`"
    if isinstance(source, dict) and raw.get("include"):
        raw = _with_includes(raw, Path.cwd(), ())
    raw.update(overrides or {})
    reject_unknown(raw, TOP_KEYS, "protocol key", where)
    if not raw.get("name"):
        raise UnlearnError(f"{where} needs a `name` (it names the run directory, runs/benchmark/NAME).")
    target, trained_on = _target(raw.get("target"), where)
    if raw.get("model") is None and (target is None or raw.get("retain_model") is None):
        raise UnlearnError(
            f"{where} needs `model` (the base to fine-tune the target and retain models from), or "
            "both `target` and `retain_model` given as already fine-tuned models."
        )
    data = _section(raw, "data", DATA_KEYS, "data set", where)
    if data.get("forget") is None:
        raise UnlearnError(f"{where} needs `data.forget`, the rows to unlearn (e.g. `forget: tofu:forget01`).")
    if data.get("retain") is None:
        raise UnlearnError(
            f"{where} needs `data.retain`, the rows the retain model is trained on and that the "
            "recipes keep (e.g. `retain: tofu:retain99`)."
        )
    eval_opts = _section(raw, "eval", EVAL_KEYS, "evaluation option", where)
    sanity = _section(raw, "sanity", SANITY_KEYS, "sanity option", where, SANITY_DEFAULTS)
    protocol = Protocol(
        name=str(raw["name"]),
        description=str(raw.get("description") or ""),
        model=raw.get("model"),
        target=target,
        target_trained_on=trained_on,
        retain_model=raw.get("retain_model"),
        data=data,
        finetune={**FINETUNE_DEFAULTS, **_mapping(raw.get("finetune"), "finetune", where)},
        suite=str(raw.get("suite") or "tofu"),
        suite_params=_mapping(raw.get("suite_params"), "suite_params", where),
        skip=list(raw.get("skip") or []),
        eval=eval_opts,
        entries=_entries(raw.get("entries"), _mapping(raw.get("defaults"), "defaults", where), where),
        defaults=_mapping(raw.get("defaults"), "defaults", where),
        attacks=_attacks(raw.get("attacks", {name: {} for name in ATTACK_DEFAULTS}), where),
        sanity=sanity,
        select={**SELECT_DEFAULTS, **_mapping(raw.get("select"), "select", where)},
        source=None if isinstance(source, dict) else str(source),
        overrides=dict(overrides or {}),
    )
    _check_finetune(protocol.finetune, where)
    _check_suite(protocol, where)
    return protocol


def _read_with_includes(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise UnlearnError(f"Benchmark protocol `{path}` includes itself ({chain}); remove the loop of `include:`.")
    return _with_includes(read_mapping_file(path, "Benchmark protocol"), path.parent, (*seen, path))


def _with_includes(raw: dict[str, Any], folder: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """`raw` over the protocols it names in `include:` (a name or path, or a list of them; a relative path is read
    from `folder` first, then among the shipped protocols). A key of `raw` replaces the included one's whole: a
    protocol that reuses another's models and evaluations names only what differs (`name`, `entries`...)."""
    from ..resources import find_shipped

    raw = dict(raw)
    includes = raw.pop("include", None) or []
    merged: dict[str, Any] = {}
    for name in [includes] if isinstance(includes, str) else includes:
        here = [p for p in (folder / str(name), folder / f"{name}.yaml") if p.is_file()]
        found = here[0] if here else find_shipped("protocols", str(name))
        if found is None:
            raise UnlearnError(
                f"Protocol include `{name}` is neither a file in {folder} nor a shipped protocol; give its path."
            )
        merged.update(_read_with_includes(Path(found), seen))
    merged.update(raw)
    return merged


def _section(raw: dict, key: str, allowed: tuple[str, ...], kind: str, where: str, defaults=None) -> dict[str, Any]:
    """`raw[key]` as a mapping over `defaults`, every key of it among `allowed`."""
    section = {**(defaults or {}), **_mapping(raw.get(key), key, where)}
    for name in section:
        if name not in allowed:
            raise UnlearnError(f"In {where}, `{key}`: " + unknown_name(kind, name, allowed))
    return section


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _target(value: Any, where: str) -> tuple[str | None, Any]:
    """`target: PATH` or `target: {path: PATH, trained_on: DATA | [DATA, ...] | unknown}`."""
    if value is None or isinstance(value, str):
        return value, None
    spec = _mapping(value, "target", where)
    bad = set(spec) - {"path", "trained_on"}
    if bad or "path" not in spec:
        raise UnlearnError(
            f"In {where}, `target` is a model path or {{path: ..., trained_on: ...}}; got keys {sorted(spec)}."
        )
    return str(spec["path"]), spec.get("trained_on")


def _entries(value: Any, defaults: dict[str, Any], where: str) -> list[Entry]:
    from ..config import build_config
    from ..recipes import get_recipe

    if not value:
        raise UnlearnError(f"{where} needs `entries`: a list of recipes to compare, e.g. `- recipe: npo`.")
    if not isinstance(value, list):
        raise UnlearnError(f"In {where}, `entries` must be a list of {{recipe, settings, grid}} mappings.")
    entries: list[Entry] = []
    for i, item in enumerate(value):
        item = {"recipe": item} if isinstance(item, str) else _mapping(item, f"entries[{i}]", where)
        for key in item:
            if key not in ENTRY_KEYS:
                raise UnlearnError(f"In {where}, `entries[{i}]`: " + unknown_name("entry key", key, ENTRY_KEYS))
        recipe = item.get("recipe")
        if not recipe:
            raise UnlearnError(f"In {where}, `entries[{i}]` names no `recipe`.")
        config_class = get_recipe(str(recipe)).config_class  # an unknown recipe fails here, with suggestions
        settings = _mapping(item.get("settings"), f"entries[{i}].settings", where)
        extra = item.get("extra_retain") or []
        extra = extra if isinstance(extra, list) else [extra]
        if extra and "name" not in item:
            raise UnlearnError(
                f"In {where}, `entries[{i}]` has `extra_retain`: give it a `name`, which its settings alone do not "
                "tell apart from the same recipe and settings without the extra rows."
            )
        grid = _mapping(item.get("grid"), f"entries[{i}].grid", where)
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise UnlearnError(f"In {where}, `entries[{i}].grid.{key}` must be a non-empty list of values.")
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
            own = {**settings, **dict(zip(keys, combo, strict=True))}
            merged = {**defaults, **own}
            try:
                build_config({"recipe": recipe, **merged, "output_dir": "unused"}, config_class)
            except ValueError as e:  # ours, or TrainingArguments' own (e.g. bf16 on a machine without a GPU)
                raise UnlearnError(f"In {where}, `entries[{i}]` ({recipe}): {e}") from None
            name = item.get("name") if not keys and item.get("name") else Entry.slug(str(recipe), own)
            if extra and keys:  # a grid of an entry with extra rows: its name says so
                name = f"{item['name']}-{name}"
            entries.append(Entry(str(recipe), merged, str(name), extra))
    names = [e.name for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UnlearnError(f"In {where}, entries repeat: {dupes}. Give each a different `name` or settings.")
    return entries


def _attacks(value: Any, where: str) -> dict[str, dict[str, Any]]:
    from ..attacks import ATTACKS

    if isinstance(value, list):
        value = {name: {} for name in value}
    attacks = _mapping(value, "attacks", where)
    out = {}
    for name, options in attacks.items():
        if name not in ATTACKS:
            raise UnlearnError(f"In {where}, `attacks`: " + unknown_name("attack", name, list(ATTACKS)))
        options = {**ATTACK_DEFAULTS.get(name, {}), **_mapping(options, f"attacks.{name}", where)}
        params = inspect.signature(ATTACKS[name]).parameters
        known = [p for p, v in params.items() if p not in _ATTACK_POSITIONAL and v.kind is v.POSITIONAL_OR_KEYWORD]
        for key in options:
            if key not in known:
                raise UnlearnError(f"In {where}, `attacks.{name}`: " + unknown_name(f"{name} option", key, known))
        out[name] = options
    return out


def _check_finetune(settings: dict[str, Any], where: str) -> None:
    from ..config import build_config
    from ..finetuning import FinetuneConfig

    try:
        build_config({"recipe": "finetune", **settings, "output_dir": "unused"}, FinetuneConfig)
    except ValueError as e:
        raise UnlearnError(f"In {where}, `finetune`: {e}") from None


def _check_suite(protocol: Protocol, where: str) -> None:
    from ..evaluation import load_suite

    try:
        suite = load_suite(protocol.suite, **protocol.suite_params)
    except UnlearnError as e:
        raise UnlearnError(f"In {where}, `suite`: {e}") from None
    metrics = suite["metrics"]
    for name in protocol.skip:
        if name not in metrics:
            raise UnlearnError(f"In {where}, `skip`: " + unknown_name("metric entry", name, list(metrics)))
    needed = ["forget_quality", "model_utility"]
    kept = [m for m in metrics if m not in protocol.skip]
    missing = [m for m in needed if m not in kept]
    if missing:
        raise UnlearnError(
            f"In {where}: the results table reads {missing} from the suite, which suite "
            f"`{protocol.suite}` does not compute (or `skip` leaves out). Use a suite that includes "
            "tofu.yaml, or add those metric entries to yours."
        )
    for key in protocol.select:
        if key not in SELECT_DEFAULTS:
            raise UnlearnError(f"In {where}, `select`: " + unknown_name("option", key, list(SELECT_DEFAULTS)))
    floor = protocol.select["utility_floor"]
    if not isinstance(floor, (int, float)) or not 0 <= floor <= 1:
        raise UnlearnError(
            f"In {where}, `select.utility_floor` is a fraction of the target's model utility in "
            f"[0, 1] (e.g. 0.95); got {floor!r}."
        )
