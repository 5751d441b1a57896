"""The run directory of `unlearn forget` and the files that mark its state, checked before anything is loaded.

- `unlearn_config.yaml` is written first and marks the directory as an unlearn run;
- checkpoints (`checkpoint-N/`) let `resume: true` continue; a checkpoint counts only once its `trainer_state.json`
  (written last by the Trainer) parses;
- the final adapter is saved to a staging folder and moved in with `adapter_config.json` last (`LOADED_LAST`), so
  plain `peft` never sees a half-written adapter; `run.json` is written last, atomically, and marks the run complete.

`write_atomic` is the one way this package writes a file that a reader may look at while it is being written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from .errors import UnlearnError

logger = logging.getLogger(__name__)

CONFIG_FILE = "unlearn_config.yaml"
RUN_FILE = "run.json"
LOG_FILE = "train_log.jsonl"
LOADED_LAST = ("adapter_config.json", "config.json", "delta_config.json")  # what loaders look for: moved in last
# `unlearn forget target=...` writes the sets it built into TARGET_DIR (marked by REQUEST_FILE) before training:
# the directory still counts as fresh, and `overwrite` keeps them.
TARGET_DIR = "target"
REQUEST_FILE = "request.json"
CERTIFICATE_FILE = "certificate.json"  # a run `unlearn sweep` certified: its risk certificate (sweeping.py)
# Config fields that say how to run, not what to train: they may differ between a run and its resumption.
RUN_CONTROL_FIELDS = {"resume", "overwrite", "output_dir", "logging_dir", "disable_tqdm"}


def default_output_dir(recipe: str) -> Path:
    """Where a run goes when the config names no `output_dir`."""
    return Path("runs") / recipe


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename: a reader sees the old
    file or the new one, never a part; an interrupted write leaves at most the hidden `.NAME.tmp`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)


def jsonl(rows) -> str:
    """`rows` as JSON Lines: one JSON object per line."""
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_jsonl(path: str | os.PathLike, rows) -> None:
    """`rows` written to `path` as JSON Lines, atomically (`write_atomic`)."""
    write_atomic(path, jsonl(rows))


def last_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint whose `trainer_state.json` (the Trainer writes it last) is complete."""
    ckpts = sorted(
        out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1
    )
    for ckpt in reversed(ckpts):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
            return ckpt
        except (OSError, ValueError):
            logger.warning("Skipping incomplete checkpoint %s.", ckpt)
    return None


def _comparable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in yaml.safe_load(yaml.safe_dump(values)).items() if k not in RUN_CONTROL_FIELDS}


def clear_for_overwrite(out: Path) -> None:
    """Remove an earlier run from `out`, all but the target sets a target run reviewed (`TARGET_DIR`)."""
    import shutil

    if not (out / TARGET_DIR / REQUEST_FILE).is_file():
        shutil.rmtree(out)
        return
    for p in out.iterdir():
        if p.name != TARGET_DIR:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def check_output_dir(config: Any) -> Path | None:
    """Read-only checks of an `UnlearnConfig`'s `output_dir`; returns the checkpoint to resume from, if any. (This
    module imports no config: `unlearn.precheck` uses it before the training stack is imported.)"""
    out = Path(config.output_dir)
    if not check_output_state(out, config.resume, config.overwrite):
        return None
    saved = _comparable(yaml.safe_load((out / CONFIG_FILE).read_text()) or {})
    now = _comparable(config.to_yaml_dict())
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if changed:
        diffs = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:8])
        raise UnlearnError(f"Cannot resume `{out}` with a different config ({diffs}). Resume with the same settings.")
    return last_checkpoint(out)


def check_output_state(out: Path, resume: bool, overwrite: bool) -> bool:
    """The checks of `output_dir` that need only the flags (`unlearn.precheck` runs them before anything is
    imported); True when it holds an unfinished run that `resume` continues."""
    if out.exists() and not out.is_dir():
        raise UnlearnError(f"`output_dir` `{out}` is a file, not a directory.")
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if (out / TARGET_DIR / REQUEST_FILE).is_file():
        entries.remove(TARGET_DIR)
    if not entries:
        if resume:
            raise UnlearnError(f"`resume` was set but `{out}` holds no run to resume. Drop `resume` to start one.")
        return False
    if CONFIG_FILE not in entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise UnlearnError(
            f"`output_dir` `{out}` is not empty and holds files not written by unlearn ({shown}). Choose a new or "
            "empty directory; `overwrite` only replaces an earlier unlearn run, never other files."
        )
    complete = RUN_FILE in entries
    if overwrite:
        return False
    if not resume:
        state = "a completed" if complete else "an unfinished"
        hint = "`overwrite=true` to replace it" + ("" if complete else ", `resume=true` to continue it")
        raise UnlearnError(
            f"`output_dir` `{out}` holds {state} unlearn run. Pass {hint}, or choose another output_dir."
        )
    if complete:
        raise UnlearnError(
            f"The run in `{out}` is already complete; nothing to resume. Pass `overwrite=true` to redo it."
        )
    return True
