"""The checks of a run that need no training stack, so that `unlearn forget` answers bad input at once.

Importing torch, transformers and the recipes takes seconds, and loading a model tens of seconds; a typo in a data
file or a setting should not wait for either. `precheck_run` reads the raw values of a recipe file (with the
command line's overrides) and checks, importing only the standard library and YAML: the recipe name, the numeric
settings (`check_settings`), the model path and its position limit, the data files (each JSON line parsed, with
the file and line of a bad one; non-empty; the columns the recipe reads), and the output directory.

Nothing here is the only guard: the same rules run again on the resolved config (`UnlearnConfig.__post_init__`
calls `check_settings`), data read from Python goes through the same JSON reader and column rule (`unlearn.data`),
and the trainer checks what depends on a recipe's defaults (a retain set it needs) before the model is loaded.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import UnlearnError, read_mapping_file, unknown_name

logger = logging.getLogger(__name__)

# Column names a run reads by default (the config's `question_key`, `answer_key`, `text_key`).
DEFAULT_KEYS = {"question_key": "question", "answer_key": "answer", "text_key": "text"}
JSON_SUFFIXES = (".json", ".jsonl")
DATA_SUFFIXES = (*JSON_SUFFIXES, ".csv", ".parquet")

# Settings with a range, checked on the raw values (here) and on the resolved config (`UnlearnConfig`).
RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "learning_rate": (lambda v: v > 0, "must be > 0 (e.g. 1e-4 for a LoRA adapter; TOFU fine-tunes at 1e-5)"),
    "max_steps": (
        lambda v: v == -1 or v >= 1,
        "must be a number of optimizer steps >= 1, or -1 (the default) to train `num_train_epochs` epochs; "
        "0 would train nothing",
    ),
    "num_train_epochs": (lambda v: v > 0, "must be > 0 (epochs over the forget set)"),
    "per_device_train_batch_size": (lambda v: v >= 1 and v == int(v), "must be a whole number >= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1 and v == int(v), "must be a whole number >= 1"),
    "lora_r": (lambda v: v >= 1 and v == int(v), "must be a whole number >= 1 (the LoRA rank, e.g. 8)"),
    "lora_alpha": (lambda v: v > 0, "must be > 0 (LoRA's scale is lora_alpha / lora_r)"),
    "lora_dropout": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "retain_ratio": (lambda v: v >= 0 and v == int(v), "must be a whole number >= 0 (0 disables retain)"),
    "loss_chunk_tokens": (lambda v: v >= 0 and v == int(v), "must be a whole number >= 0 (0 turns chunking off)"),
    "max_length": (lambda v: v >= 8 and v == int(v), "must be a whole number of tokens, at least 8"),
    "forget_weight": (math.isfinite, "must be a finite number"),
    "retain_weight": (lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"),
    "weight_decay": (lambda v: v >= 0, "must be >= 0"),
}


LORA_LAYERS_FORMS = (
    "a list of layer indices ([0, 1, 2]), a range `A-B` (layers A to B, both included), or `P%` (the first P "
    "percent of the model's layers, e.g. `50%`)"
)


def lora_layer_indices(spec: Any, num_layers: int | None) -> list[int] | None:
    """The layers `lora_layers` gives LoRA to: None (every layer) when unset. With `num_layers` None (no model yet)
    only the form is checked and None is returned; with it, an index past the model's last layer is refused."""
    if spec is None:
        return None
    share = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", spec) if isinstance(spec, str) else None
    span = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", spec) if isinstance(spec, str) else None
    if share:
        percent = float(share[1])
        if not 0 < percent <= 100:
            raise UnlearnError(f"`lora_layers: {spec}` must be a share above 0% and at most 100%.")
        if num_layers is None:
            return None
        return list(range(max(1, round(num_layers * percent / 100))))
    if span:
        first, last = int(span[1]), int(span[2])
        if first > last:
            raise UnlearnError(f"`lora_layers: {spec}` runs backwards; write the lower layer first ({last}-{first}).")
        layers = list(range(first, last + 1))
    elif isinstance(spec, (list, tuple)) and spec and all(type(i) is int and i >= 0 for i in spec):
        layers = sorted(set(spec))
    else:
        raise UnlearnError(f"`lora_layers` must be {LORA_LAYERS_FORMS}; got {spec!r}.")
    if num_layers is not None and layers[-1] >= num_layers:
        raise UnlearnError(
            f"`lora_layers: {spec}` names layer {layers[-1]}, and the model's layers are 0-{num_layers - 1}."
        )
    return layers


def check_settings(values: Mapping[str, Any]) -> None:
    """Refuse a setting of `RULES` outside its range, naming the setting, the value and what it must be (and a
    `lora_layers` of another form)."""
    lora_layer_indices(values.get("lora_layers"), None)
    for key, (ok, need) in RULES.items():
        value = values.get(key)
        if value is None:
            continue
        number = value
        if isinstance(value, str):  # YAML reads `1e-4` (no dot) as a string; the config coerces it the same way
            try:
                number = float(value)
            except ValueError:
                raise UnlearnError(f"`{key}` must be a number, got {value!r}.") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise UnlearnError(f"`{key}` must be a number, got {value!r}.")
        if not ok(number):
            raise UnlearnError(f"`{key}` {need}; got {value!r}.")


def unknown_key_message(recipe: str, key: str, known: Iterable[str]) -> str:
    return unknown_name(f"config key for recipe `{recipe}`:", key, list(known))


def missing_retain_message(recipe: str, retain_weight: float) -> str:
    return (
        f"Recipe `{recipe}` uses a retain set (`retain_weight={retain_weight}`), but none was given. Pass `retain` "
        "(e.g. `retain: tofu:retain90`) or set `retain_weight: 0`."
    )


def position_limit_warning(max_length: int, limit: int | None) -> str | None:
    """The warning for a `max_length` above the model's positions, or None."""
    if limit and max_length > limit:
        return (
            f"`max_length` is {max_length} tokens, but the model has only {limit} positions "
            f"(`max_position_embeddings`): an example longer than {limit} tokens would run past them. Set "
            f"`max_length` <= {limit}."
        )
    return None


# ---- recipe files ------------------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["learning_rate=1e-5", "lora_target_modules=[q_proj,v_proj]"]` -> typed dict (values parsed as YAML)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UnlearnError(f"Override {item!r} is not of the form key=value (e.g. learning_rate=1e-5).")
        out[key.strip()] = yaml.safe_load(value) if value != "" else None
    return out


def read_recipe_values(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The flat values of a recipe YAML file (a path, or a shipped file by name), with `overrides` applied."""
    from .resources import available, find_shipped

    found = find_shipped("recipes", path)
    if found is None:
        raise UnlearnError(
            f"Config file `{path}` does not exist, and no shipped recipe file has that name. The "
            f"shipped ones (by name or as recipes/NAME.yaml): {', '.join(available('recipes'))}."
        )
    return {**read_mapping_file(found, "Config file"), **(overrides or {})}


# ---- data --------------------------------------------------------------------------------------------------------


def read_json_records(path: Path) -> list[dict]:
    """The examples of a .json (a list, or {"data": [...]}) or .jsonl file; a bad line is named by number."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UnlearnError(f"`{path}` is not UTF-8 text ({e}); save it as UTF-8 JSON.") from None
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UnlearnError(
                    f"`{path}` line {number} is not valid JSON ({e.msg} at column {e.colno}): {_clip(line)}. Each "
                    'line of a .jsonl file must be one JSON object, e.g. {"question": "...", "answer": "..."}.'
                ) from None
            if not isinstance(row, dict):
                raise UnlearnError(
                    f"`{path}` line {number} holds a JSON {type(row).__name__}, not an object: {_clip(line)}. Each "
                    'line must be one example, e.g. {"question": "...", "answer": "..."}.'
                )
            rows.append(row)
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UnlearnError(
            f"`{path}` is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. A .json file holds a list of "
            "examples; for one example per line, name it .jsonl."
        ) from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} style
    if not isinstance(data, list):
        raise UnlearnError(f"`{path}` must hold a JSON list of examples (or JSON Lines).")
    for number, row in enumerate(data):
        if not isinstance(row, dict):
            raise UnlearnError(f"`{path}`: example {number} is a JSON {type(row).__name__}, not an object.")
    return data


def _clip(text: str, n: int = 80) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def data_shape(columns: Iterable[str], question_key: str, answer_key: str, text_key: str, what: str) -> str:
    """`qa` or `text`, from the columns present; a clear error listing the columns otherwise."""
    cols = set(columns)
    if {question_key, answer_key} <= cols:
        return "qa"
    if text_key in cols:
        return "text"
    raise UnlearnError(
        f"The {what} set has columns {sorted(cols)}, but needs `{question_key}` and `{answer_key}` (QA pairs) or "
        f"`{text_key}` (raw text). Set `question_key`/`answer_key`/`text_key` to the names your data uses."
    )


def local_data_files(source: Any) -> list[Path] | None:
    """The local files a data source names (a path, a directory, `tofu:` from a local copy), or None when it is
    something these checks cannot read without the training stack (a Hub dataset, an object from Python)."""
    if isinstance(source, Mapping):
        source = source.get("path")
    if not isinstance(source, (str, Path)):
        return None
    text = str(source)
    if text.startswith("tofu:"):
        from . import tofu

        where = tofu.locate(text.removeprefix("tofu:"))  # an unknown split is refused here, with suggestions
        return [where] if isinstance(where, Path) else None
    path = Path(text).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in DATA_SUFFIXES)
        if not files:
            raise UnlearnError(f"Directory `{path}` holds no {'/'.join(DATA_SUFFIXES)} files.")
        return files
    from .locations import is_hub_id

    if not is_hub_id(text) or path.suffix in DATA_SUFFIXES:
        raise UnlearnError(f"Data file or directory `{text}` does not exist.")
    return None


def check_data_source(source: Any, what: str, keys: Mapping[str, str]) -> None:
    """Parse the local JSON files of `source` and check them: not empty, every example with the columns read."""
    files = local_data_files(source)
    if not files or any(f.suffix not in JSON_SUFFIXES for f in files):
        return  # CSV/Parquet need `datasets` to read: checked when they are loaded
    rows = [(f, i, row) for f in files for i, row in enumerate(read_json_records(f), start=1)]
    if not rows:
        raise UnlearnError(f"The {what} set is empty ({', '.join(str(f) for f in files)}): give at least one example.")
    q, a, t = keys["question_key"], keys["answer_key"], keys["text_key"]
    shape = data_shape(rows[0][2], q, a, t, what)
    needed = (q, a) if shape == "qa" else (t,)
    for f, i, row in rows:
        missing = [k for k in needed if k not in row]
        if missing:
            where = f"line {i}" if f.suffix == ".jsonl" else f"example {i - 1}"
            raise UnlearnError(
                f"`{f}` {where} has no {', '.join(f'`{k}`' for k in missing)} (it has {sorted(row)}); every {what} "
                f"example needs {' and '.join(f'`{k}`' for k in needed)}."
            )


# ---- a whole run ------------------------------------------------------------------------------------------------


def model_position_limit(model: str) -> int | None:
    """`max_position_embeddings` from a local model directory's config.json (a built-in model once converted)."""
    from .models import BUILTIN_MODELS, cache_dir

    path = cache_dir() / model if model in BUILTIN_MODELS else Path(model).expanduser()
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("max_position_embeddings") if isinstance(config, dict) else None


def check_model(model: str | None) -> None:
    if not model:
        raise UnlearnError("No model given: set `model_name_or_path` in the config or pass model_name_or_path=PATH.")
    from .locations import is_hub_id
    from .models import BUILTIN_MODELS

    if model not in BUILTIN_MODELS and not is_hub_id(model) and not Path(model).expanduser().exists():
        raise UnlearnError(f"Model path `{model}` does not exist. Give a local model directory or a Hub id.")


def precheck_run(values: Mapping[str, Any]) -> None:
    """Everything about a run `unlearn forget` can check from its raw values without the training stack."""
    from .recipe_catalogue import NOT_LITERAL, catalogue, config_fields
    from .rundir import check_output_state, default_output_dir

    recipe = values.get("recipe", "ga")
    names = [r["name"] for r in catalogue()]
    if recipe not in names:
        raise UnlearnError(unknown_name("recipe", recipe, names))
    fields = config_fields(recipe) or {}  # empty: a config these sources cannot read; checked once imported
    for key in values:
        if fields and key not in fields:
            raise UnlearnError(unknown_key_message(recipe, key, fields))
    check_settings(values)
    check_model(values.get("model_name_or_path"))
    if values.get("target") or values.get("request"):
        if values.get("forget") is not None:
            raise UnlearnError(
                "Give either a forget set (`forget`) or a `target`/`request` to build one from, not both: drop "
                "`forget` (and `retain`) from the config, or pass forget=null retain=null."
            )
        from .target_request import resolve_request

        resolve_request(values.get("target"), values.get("request"))  # a bad request is refused here
        check_output_state(
            Path(values.get("output_dir") or default_output_dir(recipe)),
            resume=bool(values.get("resume")),
            overwrite=bool(values.get("overwrite")),
        )
        return
    if values.get("forget") is None:
        raise UnlearnError(
            "No forget data given: set `forget` in the config (e.g. `forget: tofu:forget10`) or pass forget=PATH."
        )
    keys = {k: str(values.get(k) or default) for k, default in DEFAULT_KEYS.items()}
    check_data_source(values["forget"], "forget", keys)
    setting = {k: values.get(k, fields.get(k, NOT_LITERAL)) for k in ("retain_weight", "retain_ratio")}
    known = all(isinstance(v, (int, float, str)) for v in setting.values())
    if values.get("retain") is not None:
        check_data_source(values["retain"], "retain", keys)
    elif known and float(setting["retain_weight"]) > 0 and float(setting["retain_ratio"]) > 0:
        raise UnlearnError(missing_retain_message(recipe, setting["retain_weight"]))
    max_length = values.get("max_length")
    if max_length is not None:
        warning = position_limit_warning(int(float(max_length)), model_position_limit(values["model_name_or_path"]))
        if warning:
            logger.warning(warning)
    check_output_state(
        Path(values.get("output_dir") or default_output_dir(recipe)),
        resume=bool(values.get("resume")),
        overwrite=bool(values.get("overwrite")),
    )
