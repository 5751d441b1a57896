"""Where the time of `unlearn eval` goes: the TOFU suite's forget side (or any suite), profiled by stage.

    python benchmarks/eval_profile.py --model smollm2-135m --split forget01 [--all-metrics] [--json OUT]

Runs `unlearn.evaluate` once under cProfile and attributes its wall time to the stages the runner goes through:
likelihood scoring (`scoring.row_stats`: the answer, paraphrased and perturbed answers), greedy generation
(`scoring.greedy_answers`, of which `generate` itself), tokenization, and the metric functions (ROUGE, fluency,
truth ratio ...); the rest is data loading and bookkeeping. The forget side is the metrics on the forget set
(forget quality itself is skipped: it needs a reference model and costs nothing once the truth ratios exist).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = {  # stage -> (file suffix, function name) whose cumulative time it is; None: every public function of it
    "likelihood scoring (row_stats)": ("unlearn/scoring.py", "row_stats"),
    "greedy generation (greedy_answers)": ("unlearn/scoring.py", "greedy_answers"),
    "  of which model.generate": ("transformers/generation/utils.py", "generate"),
    "tokenization (tokenize)": ("unlearn/data.py", "tokenize"),
    "metric functions": ("unlearn/evaluation/metrics.py", None),
    "  of which ROUGE": ("unlearn/evaluation/metric_math.py", "rouge_l_recall"),
    "data loading (load_records)": ("unlearn/data.py", "load_records"),
}


def _counts(func: str, name: str | None) -> bool:
    return func == name if name is not None else not func.startswith("_") and func != "register"


def stage_times(stats: pstats.Stats) -> dict[str, float]:
    return {
        stage: sum(
            cum
            for (file, _, func), (_, _, _, cum, _) in stats.stats.items()
            if file.endswith(path) and _counts(func, name)
        )
        for stage, (path, name) in STAGES.items()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--split", default="forget01")
    p.add_argument("--suite", default="tofu")
    p.add_argument("--all-metrics", action="store_true", help="the whole suite, not only the forget side")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--limit", type=int, default=None, help="first N rows of every dataset")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    import unlearn
    from unlearn.evaluation import load_suite
    from unlearn.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(args.model)
    params = {"forget_split": args.split, "limit": args.limit}
    suite = load_suite(args.suite, **params)
    skip = [n for n in suite["metrics"] if n == "forget_quality" or n == "privleak"]
    if not args.all_metrics:
        skip += [n for n, s in suite["metrics"].items() if s.get("data") != "forget" and n not in skip]
    kept = [n for n in suite["metrics"] if n not in skip]
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    result = unlearn.evaluate(
        model,
        tok,
        suite=args.suite,
        skip=skip,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        **params,
    )
    profiler.disable()
    wall = time.perf_counter() - start
    times = stage_times(pstats.Stats(profiler))
    print(f"model {args.model}, suite {args.suite} ({args.split}), metrics: {', '.join(kept)}")
    print(f"batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, threads {torch.get_num_threads()}")
    print(f"\n| stage | seconds | share |\n|---|---|---|\n| whole evaluation | {wall:.1f} | 100% |")
    for stage, t in times.items():
        print(f"| {stage} | {t:.1f} | {100 * t / wall:.0f}% |")
    print("\n" + json.dumps(result.summary(), indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"wall_s": wall, "stages": times, "metrics": result.summary()}))
        pstats.Stats(profiler).dump_stats(str(Path(args.json).with_suffix(".prof")))


if __name__ == "__main__":
    main()
