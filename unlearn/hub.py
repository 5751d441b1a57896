"""Share a finished run on the Hugging Face Hub, and load one back.

`push_to_hub` uploads what someone needs to use and judge the result: the adapter (or, for `adapter: none`, the
weights), the tokenizer, `unlearn_config.yaml`, `run.json`, the training log, evaluation and attack summaries, and a
model card written from those records only. What was forgotten stays home: the forget/retain data are never
uploaded, and files that quote them (per-sample evaluation logs with the questions, answers and generations, the
full attack log, GRPO's forbidden concepts) go up only with `include_data=True`.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .delta import DELTA_CONFIG, DELTA_FILE, is_delta_dir
from .errors import UnlearnError
from .locations import HUB_ID, is_hub_id, offline
from .rundir import CERTIFICATE_FILE, CONFIG_FILE, LOG_FILE, RUN_FILE

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
CARD_TEMPLATE = "model_card.md.j2"  # in unlearn/resources/
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FULL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
EVAL_FILES = ("SUMMARY.json", "report.md", "*.png")
ATTACK_FILES = ("ATTACKS.md", "*.png")
# Files that quote the forget set (questions, answers, generations, forbidden names): uploaded only on request.
DATA_FILES = ("EVAL.json", "forbidden_concepts.json")
DATA_FIELDS = ("forget", "retain", "concepts")  # config fields that may hold the data itself rather than its source
SKIPPED_DIRS = ("checkpoint-*", "last-good-step-*", ".*", "*.tmp")
KNOWN_LICENSES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0"}
FINAL_KEYS_SKIPPED = ("epoch", "step")


# ---- what a run holds ---------------------------------------------------------------------------------------------


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def check_run(run_dir: str | os.PathLike) -> Path:
    """The run directory, if it holds a finished run with its weights; else an error saying what is missing."""
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise UnlearnError(f"`run_dir` `{run}` is not a directory. Give the `output_dir` of `unlearn forget`.")
    meta = _read_json(run / RUN_FILE)
    if meta is None or meta.get("status") != "complete":
        if (run / CONFIG_FILE).is_file():
            raise UnlearnError(
                f"`{run}` holds an unfinished unlearn run (no complete {RUN_FILE}); only finished runs can be pushed. "
                f"Finish it with `unlearn forget {run / CONFIG_FILE} resume=true`."
            )
        raise UnlearnError(
            f"`{run}` is not an unlearn run directory (no {RUN_FILE}). Push the `output_dir` that "
            "`unlearn forget` wrote."
        )
    names = [p.name for p in run.iterdir() if p.is_file()]
    if (run / "adapter_config.json").is_file():
        needed = ["adapter_model.safetensors"]
    elif is_delta_dir(run):  # a training-free run: a sparse weight delta on its base (`unlearn.delta`)
        needed = []
    elif (run / "config.json").is_file():  # adapter: none, a full model
        shards = [n for n in names if _matches(n, ("model.safetensors", "model-*-of-*.safetensors"))]
        needed = [] if shards else ["model.safetensors"]
    else:
        needed = ["adapter_config.json (or config.json for `adapter: none`)"]
    missing = [n for n in needed if n not in names]
    if missing:
        raise UnlearnError(
            f"`{run}` has a {RUN_FILE} but no {', '.join(missing)}: the weights are missing, so there "
            "is nothing to push. Rerun with `overwrite=true`."
        )
    return run


def _result_dirs(run: Path, marker: str) -> list[Path]:
    """Directories inside the run (the run itself included) that hold `marker`; checkpoints and caches skipped."""
    found = []
    for root, dirs, files in os.walk(run):
        dirs[:] = sorted(d for d in dirs if not _matches(d, SKIPPED_DIRS))
        if marker in files:
            found.append(Path(root))
    return found


def _config(run: Path) -> dict[str, Any]:
    if not (run / CONFIG_FILE).is_file():
        return {}
    return yaml.safe_load((run / CONFIG_FILE).read_text()) or {}


def _public_config(run: Path, include_data: bool) -> bytes | None:
    """`unlearn_config.yaml` as uploaded: data given inline (a list of rows, GRPO's concepts) is replaced by a note
    unless `include_data`."""
    path = run / CONFIG_FILE
    if not path.is_file():
        return None
    if include_data:
        return path.read_bytes()
    config = _config(run)
    inline = [k for k in DATA_FIELDS if config.get(k) is not None and not isinstance(config[k], str)]
    inline = [k for k in inline if not (isinstance(config[k], dict) and "path" in config[k])]  # a source, not rows
    if not inline:
        return path.read_bytes()
    for k in inline:
        n = len(config[k]) if hasattr(config[k], "__len__") else "?"
        config[k] = f"<given inline ({n} entries); not uploaded>"
    return yaml.safe_dump(config, sort_keys=False).encode()


def _public_attacks(path: Path) -> bytes:
    """ATTACKS.json without the per-sample logs (they hold generations on the forget questions): the table only."""
    return json.dumps({"table": json.loads(path.read_text())["table"]}, indent=2, default=float).encode()


def _public_adapter_config(run: Path, base_id: str | None) -> bytes:
    """`adapter_config.json`, its `base_model_name_or_path` pointing at the Hub id of the base when we know it, so that
    `AutoPeftModelForCausalLM.from_pretrained(repo)` finds the base on another machine."""
    config = json.loads((run / "adapter_config.json").read_text())
    if not base_id or config.get("base_model_name_or_path") == base_id:
        return (run / "adapter_config.json").read_bytes()
    config["base_model_name_or_path"] = base_id
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def files_to_upload(run_dir: str | os.PathLike, include_data: bool = False) -> dict[str, Path | bytes]:
    """Path in the repo -> local file or content, for every file `push_to_hub` uploads (the card aside)."""
    run = check_run(run_dir)
    base_id = base_model_id(run)
    out: dict[str, Path | bytes] = {}
    top = sorted(p.name for p in run.iterdir() if p.is_file())
    if (run / "adapter_config.json").is_file():
        weights = ADAPTER_FILES
    elif is_delta_dir(run):
        weights = (DELTA_FILE, DELTA_CONFIG)
    else:
        weights = FULL_FILES
    wanted = weights + TOKENIZER_FILES + (RUN_FILE, LOG_FILE, CERTIFICATE_FILE) + (DATA_FILES if include_data else ())
    for name in top:
        if _matches(name, wanted):
            out[name] = run / name
    if "adapter_config.json" in out:
        out["adapter_config.json"] = _public_adapter_config(run, base_id)
    if DELTA_CONFIG in out and base_id:  # the base as a Hub id, so that the delta can be applied elsewhere
        delta = json.loads((run / DELTA_CONFIG).read_text())
        out[DELTA_CONFIG] = (json.dumps({**delta, "base_model_name_or_path": base_id}, indent=2) + "\n").encode()
    config = _public_config(run, include_data)
    if config is not None:
        out[CONFIG_FILE] = config
    for d in _result_dirs(run, "SUMMARY.json"):
        for f in sorted(d.iterdir()):
            if f.is_file() and (_matches(f.name, EVAL_FILES) or (include_data and f.name == "EVAL.json")):
                out[f.relative_to(run).as_posix()] = f
    for d in _result_dirs(run, "ATTACKS.json"):
        for f in sorted(d.iterdir()):
            if f.is_file() and _matches(f.name, ATTACK_FILES):
                out[f.relative_to(run).as_posix()] = f
        rel = (d / "ATTACKS.json").relative_to(run).as_posix()
        out[rel] = d / "ATTACKS.json" if include_data else _public_attacks(d / "ATTACKS.json")
    return out


# ---- the model card -----------------------------------------------------------------------------------------------


def base_model_id(run_dir: str | os.PathLike) -> str | None:
    """The Hub id of the run's base model, when the records name one: a Hub id, or a built-in name (the built-in
    SmolLM2 is HuggingFaceTB/SmolLM2-135M-Instruct, converted locally), or the local copy of a built-in."""
    from .models import BUILTIN_MODELS, cache_dir

    run = Path(run_dir)
    meta = _read_json(run / RUN_FILE) or {}
    adapter = _read_json(run / "adapter_config.json") or {}
    for base in (meta.get("base_model"), adapter.get("base_model_name_or_path")):
        if not base:
            continue
        if base in BUILTIN_MODELS:
            return BUILTIN_MODELS[base]["hub_id"]
        for name, spec in BUILTIN_MODELS.items():
            if Path(base).expanduser().resolve() == (cache_dir() / name).resolve():
                return spec["hub_id"]
        if is_hub_id(base, namespaced=True):
            return base
    return None


def _fmt(v: Any, spec: str = ".4g") -> str:
    return (
        "n/a" if v is None else format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
    )


def _paper_link(paper: str) -> str:
    """`Title (arXiv:id)` -> the title with a link to the abstract."""
    m = re.search(r"\(arXiv:([\d.]+)\)", paper or "")
    if not m:
        return paper or "not recorded"
    return f"{paper[: m.start()].strip()} ([arXiv:{m.group(1)}](https://arxiv.org/abs/{m.group(1)}))"


def _hyperparameters(config: dict[str, Any], recipe: str) -> list[list[Any]]:
    keys = [
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "lr_scheduler_type",
        "warmup_steps",
        "weight_decay",
        "max_grad_norm",
        "seed",
        "max_length",
        "adapter",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "lora_layers",
        "forget_weight",
        "retain_weight",
        "retain_loss",
        "retain_ratio",
        "retain_sampling",
        "projection",
    ]
    keys += [k for k in _recipe_fields(recipe) if k not in keys]
    rows = []
    for k in keys:
        if k not in config or k in DATA_FIELDS or (k == "max_steps" and config[k] in (-1, None)):
            continue  # data fields (e.g. GRPO's `concepts`) name what was forgotten: never shown
        if k.startswith("lora_") and config.get("adapter") == "none":
            continue
        rows.append([f"`{k}`", f"`{config[k]}`"])
    return rows


def _recipe_fields(recipe: str) -> list[str]:
    """The fields a recipe's config class declares itself (its loss weights and knobs), in declaration order."""
    from .recipes import RECIPES

    cls = RECIPES.get(recipe)
    if cls is None:
        return []
    return [k for k in cls.config_class.__dict__.get("__annotations__", {}) if k != "recipe"]


def _data_rows(meta: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for role, d in (meta.get("data") or {}).items():
        if not d:
            continue
        source = d.get("source")
        if source == "NoneType":  # passed to `unlearn.forget()` in Python: the config names no source
            source = "given in Python (source not recorded)"
        elif isinstance(source, dict):
            source = "`" + ", ".join(f"{k}={v}" for k, v in source.items()) + "`"
        else:
            source = f"`{source}`"
        rows.append([role, source, d.get("rows", "n/a"), f"`{d.get('fingerprint', 'n/a')}`"])
    return rows


def _certificate(run: Path) -> dict[str, Any] | None:
    """The risk certificate `unlearn sweep` wrote into the run it picked, with its budgets as table rows."""
    cert = _read_json(run / CERTIFICATE_FILE)
    if cert is None:
        return None
    rows = [[f"`{b['name']}`", _fmt(b["level"]), _fmt(b["calibration_risk"]), b["means"]] for b in cert["budgets"]]
    return {**cert, "table": rows}


def _evaluations(run: Path) -> list[dict[str, Any]]:
    """Each evaluation uploaded with the run: its header line and metric rows, from its SUMMARY.json."""
    from .evaluation.report import direction

    out = []
    for d in _result_dirs(run, "SUMMARY.json"):
        summary = json.loads((d / "SUMMARY.json").read_text())
        log = _read_json(d / "EVAL.json") or {}  # read for metric types only; not uploaded by default
        rel = d.relative_to(run).as_posix()
        params = ", ".join(f"{k}={v}" for k, v in (summary.get("params") or {}).items() if v is not None)
        header = (
            f"Suite `{summary.get('suite')}`"
            + (f" ({params})" if params else "")
            + f", from `{rel}/SUMMARY.json`; model fingerprint `{summary.get('model_fingerprint', 'n/a')}`, "
            f"reference: {summary.get('reference') or 'none'}."
        )
        rows = []
        for name, value in summary.get("metrics", {}).items():
            role = (summary.get("roles") or {}).get(name)
            spec = {"role": role, "metric": log.get(name, {}).get("metric", name)}
            better = direction(spec, (summary.get("higher_is_better") or {}).get(name, True))
            rows.append([name, role or "", _fmt(value), better])
        out.append({"header": header, "rows": rows})
    return out


def _attacks(run: Path) -> list[dict[str, Any]]:
    """Each attack table uploaded with the run: where it is, and one row per attack."""
    keys = (
        "original_probability",
        "unlearned_probability",
        "attacked_probability",
        "recovered_fraction",
        "attacked_rouge",
    )
    out = []
    for d in _result_dirs(run, "ATTACKS.json"):
        table = json.loads((d / "ATTACKS.json").read_text()).get("table", [])
        rows = [[r.get("attack"), *(_fmt(r.get(k), ".3f") for k in keys)] for r in table]
        out.append({"source": (d / "ATTACKS.json").relative_to(run).as_posix(), "rows": rows})
    return out


def _training(run: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The step count and timing, and the first and final logged values (or the final ones of run.json)."""
    log = run / LOG_FILE
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    steps = [r for r in rows if "loss" in r and "train_runtime" not in r]
    out: dict[str, Any] = {k: meta.get(k, "n/a") for k in ("seed", "finished")}
    out.update(steps=meta.get("global_step", "n/a"), runtime=meta.get("runtime_s", "n/a"), header=None, rows=[])
    if steps:
        first, last = steps[0], steps[-1]
        keys = [k for k in last if k not in FINAL_KEYS_SKIPPED and isinstance(last[k], (int, float))]
        out["header"] = [
            "logged value",
            f"first (step {first.get('step', '?')})",
            f"final (step {last.get('step', '?')})",
        ]
        out["rows"] = [[k, _fmt(first.get(k)), _fmt(last[k])] for k in keys]
    elif meta.get("final"):
        out["header"], out["rows"] = ["final value", ""], [[k, _fmt(v)] for k, v in meta["final"].items()]
    return out


def _license(base_id: str | None, base: str | None) -> str | None:
    if base_id in KNOWN_LICENSES:
        return KNOWN_LICENSES[base_id]
    readme = Path(base).expanduser() / "README.md" if base else None
    if readme is not None and readme.is_file() and readme.read_text().startswith("---"):
        try:
            front = yaml.safe_load(readme.read_text().split("---")[1]) or {}
        except yaml.YAMLError:
            return None
        return front.get("license") if isinstance(front, dict) else None
    return None


def model_card(run_dir: str | os.PathLike, repo_id: str | None = None, include_data: bool = False) -> str:
    """The README.md of the Hub repo, rendered from `resources/model_card.md.j2` with the run's own records only (no
    number is computed here).

    `repo_id` fills the loading snippets (default `USER/NAME`); `include_data` says whether the per-sample logs are
    uploaded beside it. The same run gives the same card.
    """
    import jinja2

    run = check_run(run_dir)
    repo_id = repo_id or "USER/NAME"
    meta, config = _read_json(run / RUN_FILE), _config(run)
    recipe, base = meta.get("recipe", "unknown"), meta.get("base_model")
    adapter = (run / "adapter_config.json").is_file()
    base_id = base_model_id(run)
    front: dict[str, Any] = {}
    if base_id:
        front["base_model"] = base_id
    front["library_name"] = "peft" if adapter else "transformers"
    if lic := _license(base_id, base):
        front["license"] = lic
    front["pipeline_tag"] = "text-generation"
    front["tags"] = ["unlearning", "peft", recipe, "lora"] if adapter else ["unlearning", recipe]
    base_text = f"[`{base_id}`](https://huggingface.co/{base_id})" if base_id else f"`{base}` (a local model)"
    if base_id and base != base_id:
        base_text += f" (recorded as `{base}`)"
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters["capitalize_first"] = lambda text: text[:1].upper() + text[1:]
    template = env.from_string(resources.files("unlearn.resources").joinpath(CARD_TEMPLATE).read_text())
    text = template.render(
        front_matter=yaml.safe_dump(front, sort_keys=False).strip(),
        name=repo_id.split("/")[-1],
        what="a LoRA adapter" if adapter else "a fully fine-tuned model",
        base_text=base_text,
        recipe=recipe,
        paper=_paper_link(meta.get("paper", "")),
        hyperparameters=_hyperparameters(config, recipe),
        data_rows=_data_rows(meta),
        include_data=include_data,
        evaluations=_evaluations(run),
        attacks=_attacks(run),
        certificate=_certificate(run),
        training=_training(run, meta),
        adapter=adapter,
        base_id=base_id,
        base=base,
        repo_id=repo_id,
        versions=[[k, v] for k, v in (meta.get("versions") or {}).items()],
    )
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


# ---- upload and download ------------------------------------------------------------------------------------------


def _hub_error(e: Exception, repo_id: str, secrets: list[str]) -> UnlearnError:
    """An error that names the problem and the fix, with no token in it."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    status = e.response.status_code if isinstance(e, HfHubHTTPError) and e.response is not None else None
    if status == 401:
        msg = (
            f"The Hub refused the credentials for `{repo_id}` (401 Unauthorized). Log in with `hf auth login`, or "
            "set HF_TOKEN (or pass `--token-env VAR`) to a token with write access "
            "(https://huggingface.co/settings/tokens)."
        )
    elif status == 403:
        msg = (
            f"The token may not write to `{repo_id}` (403 Forbidden). Use a token with write access to the "
            f"`{repo_id.split('/')[0]}` namespace, or push to a namespace you own."
        )
    elif isinstance(e, RepositoryNotFoundError) or status == 404:
        msg = f"Repository `{repo_id}` was not found and could not be created (404). Check `--repo-id` and the token."
    elif status is not None:
        server = getattr(e, "server_message", None) or ""
        msg = f"The Hub answered {status} while pushing to `{repo_id}`. {server}".strip()
    else:
        msg = (
            f"Pushing to `{repo_id}` failed ({type(e).__name__}: {e}). If the Hub could not be reached, check the "
            "network, and HF_ENDPOINT if you set one."
        )
    for s in secrets:
        msg = msg.replace(s, "***")
    return UnlearnError(msg)


def push_to_hub(
    run_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    include_data: bool = False,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload the finished run in `run_dir` to the Hub model repo `repo_id` (created if needed); returns its URL.

    `token` defaults to `hf auth login`'s or HF_TOKEN; it is sent to the Hub and nowhere else (never printed or
    logged). `endpoint` points at another Hub (default: HF_ENDPOINT, else huggingface.co).
    """
    import huggingface_hub
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    if not HUB_ID.match(repo_id):
        raise UnlearnError(f"`repo_id` must look like USER/NAME (letters, digits, `-`, `_`, `.`); got {repo_id!r}.")
    files = files_to_upload(run_dir, include_data)
    files[CARD_FILE] = model_card(run_dir, repo_id, include_data).encode()
    if offline() or huggingface_hub.constants.is_offline_mode():
        raise UnlearnError(
            "HF_HUB_OFFLINE is set, so nothing can be uploaded. Unset it (`unset HF_HUB_OFFLINE`, and "
            "TRANSFORMERS_OFFLINE if set) in the shell that runs the push."
        )
    resolved = token or huggingface_hub.get_token()
    if not resolved:
        raise UnlearnError(
            "No Hugging Face token found. Log in with `hf auth login`, set HF_TOKEN, or pass "
            "`--token-env VAR` naming a variable that holds a token with write access."
        )
    api = HfApi(endpoint=endpoint, token=resolved)
    recipe = (_read_json(Path(run_dir) / RUN_FILE) or {}).get("recipe", "unlearn")
    ops: list = [
        CommitOperationAdd(path_in_repo=p, path_or_fileobj=src if isinstance(src, bytes) else str(src))
        for p, src in sorted(files.items())
    ]
    logger.info("Pushing %d files to %s: %s", len(ops), repo_id, ", ".join(sorted(files)))
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        if not include_data:  # a push without data also removes the logs an earlier `include_data` push left there
            stale = [f for f in api.list_repo_files(repo_id) if Path(f).name in DATA_FILES and f not in files]
            ops += [CommitOperationDelete(path_in_repo=f) for f in stale]
        api.create_commit(repo_id, ops, commit_message=commit_message or f"Upload unlearn run ({recipe})")
    except Exception as e:  # HfHubHTTPError, and transport errors (refused connection, timeout, TLS)
        raise _hub_error(e, repo_id, [resolved]) from None
    return str(url)


def download_adapter(repo_id: str) -> Path | None:
    """The local snapshot of Hub repo `repo_id` if it holds an adapter (`adapter_config.json`), else None.

    With HF_HUB_OFFLINE set, only the local cache is looked at.
    """
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    cached_only = offline()
    try:
        hf_hub_download(repo_id, "adapter_config.json", local_files_only=cached_only)
    except (EntryNotFoundError, HfHubHTTPError):  # not an adapter repo, not cached, or not reachable
        return None
    return Path(snapshot_download(repo_id, local_files_only=cached_only))
