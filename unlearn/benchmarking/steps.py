"""Cached, resumable benchmark steps.

A step is a directory. `KEY` (written when the step starts) holds the digest of everything the step depends on;
`STEP.json` (written last, atomically) holds the same key with the step's result, its wall time and peak memory.
Running a step whose `STEP.json` carries the current key returns the stored result without doing anything; a
step whose key changed (a setting it depends on changed) is cleared and redone; a step that was interrupted
(`KEY` without `STEP.json`) is handed back to its function, which continues from what is there (training
checkpoints, evaluation scores under `.partial/`).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..rundir import write_atomic

logger = logging.getLogger(__name__)

KEY_FILE = "KEY"
STEP_FILE = "STEP.json"


def digest(inputs: Any) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


class PeakMemory:
    """Peak memory of the process during a block: CUDA's max allocated on a GPU, else the resident set's high-water
    mark (Linux `VmHWM`, reset at the start through `/proc/self/clear_refs`; elsewhere the process's lifetime peak
    from `getrusage`, which never goes down)."""

    def __enter__(self) -> PeakMemory:
        self.gb: float | None = None
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc) -> None:
        self.gb = round(self.read(), 3)

    @staticmethod
    def read() -> float:
        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**30
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Steps:
    """The steps of one benchmark run directory; `records` collects every step's record, cached or new."""

    def __init__(self, root: Path):
        self.root = root
        self.records: dict[str, dict[str, Any]] = {}
        self.ran: list[str] = []  # the steps actually executed by this call (not loaded from cache)

    def run(self, name: str, inputs: dict[str, Any], fn: Callable[[Path], dict[str, Any]], phase: str) -> dict:
        """The record of step `name` (`{key, result, minutes, peak_gb, ...}`), running `fn(directory)` if needed."""
        d = self.root / name
        key = digest(inputs)
        done = _read_json(d / STEP_FILE)
        if done is not None and done.get("key") == key:
            self.records[name] = done
            return done
        started_key = (d / KEY_FILE).read_text().strip() if (d / KEY_FILE).is_file() else None
        if d.exists() and started_key != key:
            if started_key is not None or done is not None:
                logger.warning("Benchmark step `%s`: its settings changed; redoing it.", name)
            shutil.rmtree(d)
        elif d.exists():
            logger.warning("Benchmark step `%s` was interrupted; continuing it.", name)
        d.mkdir(parents=True, exist_ok=True)
        write_atomic(d / KEY_FILE, key)
        print(f"[benchmark] {name} ...", flush=True)
        started = time.time()
        with PeakMemory() as peak:
            result = fn(d)
        gc.collect()
        record = {
            "key": key,
            "phase": phase,
            "result": result,
            "minutes": round((time.time() - started) / 60, 2),
            "peak_gb": peak.gb,
            "inputs": inputs,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_atomic(d / STEP_FILE, json.dumps(record, indent=2, default=str))
        print(f"[benchmark] {name} done in {record['minutes']:.1f} min (peak {peak.gb:.2f} GB)", flush=True)
        self.records[name] = record
        self.ran.append(name)
        return record


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
