"""Start-up time of the command line: how long `unlearn --version`, `--help` and `recipes` take, against a bare
`python -c pass` measured in the same run (the interpreter's own start-up, which no library change can remove).

    python benchmarks/startup.py [--repeat 5] [--json runs/bench/startup.json]

Each command runs `--repeat` times in a fresh process (the median is reported, the first run warms the file
cache and is dropped). Targets (issue 15, on the development machine): `--version` <= 1.0 s, `recipes` <= 2.0 s;
printed PASS/MISS, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "unlearn --version": [sys.executable, "-m", "unlearn", "--version"],
    "unlearn --help": [sys.executable, "-m", "unlearn", "--help"],
    "unlearn recipes": [sys.executable, "-m", "unlearn", "recipes"],
    "import unlearn": [sys.executable, "-c", "import unlearn"],
}
TARGETS = {"unlearn --version": 1.0, "unlearn recipes": 2.0}


def timed(cmd: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="Timed runs per command (after one warm-up run).")
    ap.add_argument("--json", type=Path, help="Also write the figures to this file.")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    rows = {}
    for name, cmd in COMMANDS.items():
        timed(cmd)  # warm-up: file cache, .pyc files
        runs = [timed(cmd) for _ in range(args.repeat)]
        rows[name] = {"median_s": statistics.median(runs), "min_s": min(runs), "max_s": max(runs)}
    bare = rows["python -c pass"]["median_s"]
    print(f"{'command':<20} {'median s':>9} {'min s':>7} {'max s':>7} {'x bare python':>14}  target")
    for name, r in rows.items():
        target = TARGETS.get(name)
        status = "" if target is None else f"<= {target:.1f} s {'PASS' if r['median_s'] <= target else 'MISS'}"
        r["x_bare"] = r["median_s"] / bare
        print(f"{name:<20} {r['median_s']:>9.3f} {r['min_s']:>7.3f} {r['max_s']:>7.3f} {r['x_bare']:>14.1f}  {status}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"repeat": args.repeat, "commands": rows, "targets_s": TARGETS}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
