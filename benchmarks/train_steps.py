"""Cost of an unlearning step against a plain fine-tuning step: same model, LoRA adapter, batch and sequence
length, measured in the same run.

    python benchmarks/train_steps.py --model smollm2-135m
    python benchmarks/train_steps.py --model tiny --quick --json steps.json

For every recipe of the registry that trains with the forget/retain step of `UnlearnTrainer`: seconds per optimizer
step (median of the timed steps, warm-up excluded), tokens/s, the ratio to a supervised fine-tuning step
(`unlearn.finetuning.FinetuneTrainer` with the same LoRA adapter) and to a bare PyTorch loop, achieved FLOP/s against
the matmul peak measured in the same run, and peak memory. Recipes with a retain term run at `retain_ratio` 1 (one
retain row per forget row, what the targets assume) and 2 (the library default: three rows per forget row, run as
passes of `batch` rows each under `split_passes`). Then: NPO with reference log-probs cached before training (the
library's way) against computing them every step; time per epoch against the forget-set size (with a linear fit);
time per step against the sequence length.

Each configuration runs in a fresh process forked from a server that imported the libraries once, so peak RSS is
that configuration's own (`--no-isolate`: all in this process, peaks then accumulate). Every row is exactly
`--seq-len` tokens. Targets (issue 8), printed PASS/MISS, never asserted: ga and npo (cached reference, no retain)
<= 1.10x SFT; graddiff and simnpo at retain_ratio 1 <= 2.2x SFT; SmolLM2-135M LoRA unlearning peak RSS <= 4 GB
at batch 4 x 256 tokens; time per epoch linear in the forget-set size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

GB = 1e9
STEP_TARGET, RETAIN_STEP_TARGET, RSS_TARGET = 1.10, 2.2, 4 * GB
LINEAR_R2, LINEAR_PER_ROW_GROWTH = 0.95, 1.25


# ---- running a measurement in its own process -------------------------------------------------------------------


def _child(conn, spec: dict) -> None:
    if not os.environ.get("BENCH_DEBUG"):  # the Trainer's log lines and library warnings: not ours to print
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    try:
        import step_worker

        conn.send({"ok": step_worker.run(spec)})
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which goes on with the other configurations
        conn.send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
    finally:
        conn.close()


class Runner:
    """Runs `step_worker.run(spec)` in a fresh process per call (forked from a server that preloaded the worker and
    its libraries: no import cost per configuration, no allocator state shared between them), or in-process."""

    def __init__(self, isolate: bool):
        self.ctx = None
        if isolate:
            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            self.ctx = mp.get_context(method)
            if method == "forkserver":
                # The server starts with `python -c` (and Python < 3.12 drops the parent's sys.path): it finds
                # `step_worker` through PYTHONPATH, or would silently skip the preload.
                here = str(Path(__file__).resolve().parent)
                os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
                self.ctx.set_forkserver_preload(["step_worker"])

    def __call__(self, spec: dict) -> dict:
        if self.ctx is None:
            import step_worker

            return step_worker.run(spec)
        receive, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_child, args=(send, spec))
        proc.start()
        send.close()
        try:
            msg = receive.recv()
        except EOFError:
            msg = {"error": "the worker process died", "traceback": ""}
        proc.join()
        if "error" in msg:
            raise RuntimeError(f"{msg['error']}\n{msg['traceback']}" if os.environ.get("BENCH_DEBUG") else msg["error"])
        return msg["ok"]


# The CPU allocators that PyTorch's own CPU launcher (`python -m torch.backends.xeon.run_cpu`) preloads: the name the
# dynamic linker knows each by, and its Debian/Ubuntu package. glibc's malloc keeps freed activation memory in its
# heap (see BENCHMARKS.md, "Memory").
ALLOCATORS = {"tcmalloc": ("tcmalloc_minimal", "libtcmalloc-minimal4"), "jemalloc": ("jemalloc", "libjemalloc2")}


def preload_allocator(name: str) -> None:
    """Put `name`'s shared library in LD_PRELOAD, which the worker processes (started after this) inherit."""
    import ctypes.util

    lib, package = ALLOCATORS[name]
    soname = ctypes.util.find_library(lib)  # e.g. libtcmalloc_minimal.so.4, which LD_PRELOAD resolves as ld.so does
    if not soname:
        sys.exit(
            f"--allocator {name}: lib{lib} not found. Install it (Debian/Ubuntu: apt-get install {package}) or "
            "use --allocator system."
        )
    os.environ["LD_PRELOAD"] = os.pathsep.join(filter(None, [soname, os.environ.get("LD_PRELOAD")]))


# ---- configurations ---------------------------------------------------------------------------------------------


def step_specs(args, registry: dict, base: dict) -> list[dict]:
    """The per-step table: the bare loop and SFT first (the baselines), every recipe with a step, SFT again."""
    n_forget = args.batch_size * (args.warmup + args.steps)  # one epoch: no epoch boundary among the timed steps
    base = {**base, "n_forget": n_forget}
    specs = [
        {**base, "label": "bare torch loop", "recipe": "bare"},
        {**base, "label": "sft", "recipe": "sft"},
    ]
    for name, info in registry.items():
        if not info["step"] or (args.only and name not in args.only):
            continue
        if name == "npo":  # plain NPO (Eq. 3, no retain term): the target's case, with both reference modes
            specs.append({**base, "label": "npo no-retain", "recipe": "npo", "overrides": {"retain_weight": 0.0}})
            specs.append(
                {
                    **base,
                    "label": "npo no-retain ref/step",
                    "recipe": "npo-per-step",
                    "overrides": {"retain_weight": 0.0},
                }
            )
        if info["uses_retain"]:
            for ratio in (1, 2):
                specs.append(
                    {**base, "label": f"{name} r={ratio}", "recipe": name, "overrides": {"retain_ratio": ratio}}
                )
        else:
            specs.append({**base, "label": name, "recipe": name})
    # The baseline again at the end: how far the machine itself drifted while the table was measured.
    specs.append({**base, "label": "sft again", "recipe": "sft"})
    return specs


def sweep_specs(args, registry: dict, base: dict) -> tuple[list[dict], list[dict]]:
    recipe = args.sweep_recipe
    overrides = {"retain_ratio": 1} if registry[recipe]["uses_retain"] else {}
    sizes = [
        {
            **base,
            "label": f"{recipe} forget={n}",
            "recipe": recipe,
            "n_forget": n,
            "epochs": args.epochs,
            "overrides": overrides,
        }
        for n in args.sizes
    ]
    lengths = [
        {
            **base,
            "label": f"{recipe} T={t}",
            "recipe": recipe,
            "seq_len": t,
            "overrides": overrides,
            "n_forget": args.batch_size * (args.warmup + args.steps),
        }
        for t in args.seq_lens
    ]
    return sizes, lengths


# ---- analysis ---------------------------------------------------------------------------------------------------


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least squares y = a + b x, with R^2."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return {"intercept_s": a, "s_per_row": b, "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def target(name: str, value: float | None, limit: float, unit: str = "x", note: str = "") -> dict:
    if value is None:
        return {"target": name, "status": "n/a", "value": None, "limit": limit, "note": note or "not measured"}
    return {
        "target": name,
        "status": "PASS" if value <= limit else "MISS",
        "value": value,
        "limit": limit,
        "unit": unit,
        "note": note,
    }


def check_targets(args, by_label: dict, sizes: dict | None) -> list[dict]:
    sft = (by_label.get("sft") or {}).get("s_per_step")

    def ratio(label: str) -> float | None:
        s = (by_label.get(label) or {}).get("s_per_step")
        return s / sft if s and sft else None

    out = [
        target("ga step <= 1.10x SFT", ratio("ga"), STEP_TARGET),
        target("npo (cached reference, no retain) step <= 1.10x SFT", ratio("npo no-retain"), STEP_TARGET),
        target("graddiff (retain_ratio 1) step <= 2.2x SFT", ratio("graddiff r=1"), RETAIN_STEP_TARGET),
        target("simnpo (retain_ratio 1) step <= 2.2x SFT", ratio("simnpo r=1"), RETAIN_STEP_TARGET),
    ]
    rss_name = "SmolLM2-135M LoRA unlearning peak RSS <= 4 GB at batch 4 x 256"
    if args.model != "smollm2-135m" or args.batch_size != 4 or args.seq_len != 256:
        out.append(
            target(rss_name, None, RSS_TARGET, note="run with --model smollm2-135m --batch-size 4 --seq-len 256")
        )
    else:
        peaks = [r["peak_rss"] for r in by_label.values() if r["recipe"] not in ("bare", "sft", "npo-per-step")]
        note = "largest over the recipes above" if peaks else "no recipe measured"
        out.append(
            target(
                rss_name,
                max(peaks) / GB if peaks else None,
                RSS_TARGET / GB,
                " GB",
                note=note + ("" if args.isolate else "; not isolated: peaks accumulate"),
            )
        )
    if sizes:
        fit = sizes["fit"]
        growth = sizes["per_row_growth"]
        ok = fit["r2"] >= LINEAR_R2 and growth <= LINEAR_PER_ROW_GROWTH
        out.append(
            {
                "target": f"cost linear in forget size (R^2 >= {LINEAR_R2}, time/row at the largest size <= "
                f"{LINEAR_PER_ROW_GROWTH}x the smallest)",
                "status": "PASS" if ok else "MISS",
                "value": {"r2": fit["r2"], "per_row_growth": growth},
            }
        )
    return out


# ---- printing ---------------------------------------------------------------------------------------------------


def fmt_bytes(n: int | None) -> str:
    return f"{n / GB:6.2f} GB" if n else "      - "


def print_machine(m: dict, args) -> None:
    load = f", load average {m['load_average']:.1f} at start" if m.get("load_average") is not None else ""
    print(f"machine   {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['platform']}{load}")
    device = m["gpu"] or m["device"]
    print(
        f"software  python {m['python']}, torch {m['torch']}, transformers {m['transformers']}; "
        f"{m['threads']} intra-op / {m['interop_threads']} inter-op threads; device {device}; "
        f"malloc {m['allocator']}"
    )
    for p in m["matmul_peak"]:
        print(f"peak      {p['dtype']} matmul {p['n']}^3: {p['flops'] / 1e9:,.1f} GFLOP/s (median of {p['repeats']})")
    if m["device"] == "cpu" and (m.get("load_average") or 0) > 0.75 * m["usable_cores"]:
        print(
            f"WARNING   other processes are using the CPU (load {m['load_average']:.1f}, {m['usable_cores']} cores): "
            "timings are noisy, and threads that wait for a busy core slow every op down; --threads 1 is "
            "steadier, a quiet machine is best"
        )
    iso = "each configuration in a fresh process" if args.isolate else "all configurations in one process"
    print(
        f"settings  batch {args.batch_size} forget rows x {args.seq_len} tokens, {args.warmup} warm-up + "
        f"{args.steps} timed steps (median), dtype {args.dtype}, library defaults otherwise (LoRA, a log line "
        f"every step){'; ' + ' '.join(args.set) if args.set else ''}; {iso}"
    )


def print_steps(rows: list[dict], peak: float, sft: float | None, bare: float | None) -> None:
    print(
        "\nper optimizer step (x SFT, x bare: step time ratios; rows: rows with gradients in the step, in passes "
        "of --batch-size rows under split_passes; once: trainer construction, setup and reference pass, paid once "
        "per run)"
    )
    print(
        f"{'configuration':24} {'rows':>4} {'s/step':>8} {'tok/s':>8} {'x SFT':>6} {'x bare':>6} {'GFLOP/s':>8} "
        f"{'of peak':>7} {'once s':>7} {'peak RSS':>9} {'GPU max':>9}"
    )
    for r in rows:
        s, flops = r["s_per_step"], r["achieved_flops"]
        shown = f"{flops / 1e9:8.2f} {flops / peak:7.1%}" if flops else f"{'-':>8} {'-':>7}"
        print(
            f"{r['label']:24} {r['rows_per_step']:4d} {s:8.4f} {r['tokens_per_s']:8.0f} "
            f"{s / sft if sft else float('nan'):6.2f} {s / bare if bare else float('nan'):6.2f} {shown} "
            f"{r['once_s']:7.2f} {fmt_bytes(r['peak_rss']):>9} {fmt_bytes(r['cuda_max_allocated']):>9}"
        )


def print_flops_note(r: dict) -> None:
    m = r["model"]
    formula = "4N + 6N_lora + 12LdT" if r["adapter"] == "lora" else "6N + 12LdT"
    print(
        f"\nFLOPs per token of a training step: {formula} = {r['flops_per_token'] / 1e6:,.1f} MFLOP at "
        f"T={r['seq_len']} (N = {m['n_matmul'] / 1e6:,.2f} M matmul weights, lm_head included; "
        f"N_lora = {r['trainable_params'] / 1e6:,.3f} M; L = {m['layers']}; d = {m['d_attn']}). LoRA: forward 2N, "
        "activation gradients 2N, no gradients for the frozen weights; attention without causal discount. Only the "
        "pass with gradients counts, not the no-grad reference passes (KL retain, RMU's frozen pass, NPO ref/step); "
        "RMU's loss reads a middle layer, its backward stops there, and no count is given for it."
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", default="smollm2-135m", help="`tiny` (2-layer Llama, built here), a built-in name or a model dir"
    )
    p.add_argument(
        "--tofu",
        default=os.environ.get("UNLEARN_TOFU_DIR", "../shared/data/tofu"),
        help="TOFU directory (forget10/retain90 rows); the built-in demo rows without it",
    )
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    p.add_argument("--batch-size", type=int, default=4, help="forget rows per step")
    p.add_argument("--seq-len", type=int, default=256, help="tokens in every row")
    p.add_argument("--steps", type=int, help="timed steps per configuration (default 10, --quick 3)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 2, --quick 1)")
    p.add_argument("--retain-rows", type=int, default=64, help="size of the retain set")
    p.add_argument("--sweep-recipe", default="graddiff", help="recipe of the forget-size and sequence-length sweeps")
    p.add_argument("--sizes", help="forget-set sizes (default 8,16,32; --quick 4,8,16)")
    p.add_argument("--epochs", type=int, help="epochs per size, the first one untimed (default 3, --quick 2)")
    p.add_argument("--seq-lens", help="sequence lengths of the sweep (default 64,128,256)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every configuration, e.g. --set gradient_checkpointing=true",
    )
    p.add_argument("--only", help="comma-separated recipes for the step table (default: all)")
    p.add_argument("--no-sweeps", action="store_true", help="only the step table and the NPO reference comparison")
    p.add_argument("--quick", action="store_true", help="a short version: fewer steps, epochs and sizes")
    p.add_argument("--no-isolate", dest="isolate", action="store_false", help="run every configuration in this process")
    p.add_argument(
        "--allocator",
        choices=["system", *ALLOCATORS],
        default="system",
        help="malloc of the worker processes: tcmalloc or jemalloc through LD_PRELOAD (Linux; Debian "
        "packages libtcmalloc-minimal4, libjemalloc2), or the system's (glibc)",
    )
    p.add_argument("--json", help="write every figure (raw step times included) to this file")
    args = p.parse_args()
    args.steps = args.steps or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.sizes = [int(x) for x in (args.sizes or ("4,8,16" if args.quick else "8,16,32")).split(",")]
    args.seq_lens = [int(x) for x in (args.seq_lens or "64,128,256").split(",")]
    args.only = set(args.only.split(",")) if args.only else None
    if args.warmup < 1 or args.steps < 1 or args.epochs < 2 or len(args.sizes) < 2:
        p.error("need --warmup >= 1, --steps >= 1, --epochs >= 2 (the first is warm-up) and two --sizes or more")

    if args.allocator != "system":
        if not args.isolate:
            p.error("--allocator needs worker processes (it is preloaded when they start): drop --no-isolate")
        preload_allocator(args.allocator)
    run = Runner(args.isolate)
    machine = run({"kind": "machine", "dtype": args.dtype, "threads": args.threads, "repeats": 3 if args.quick else 7})
    print_machine(machine, args)
    peak = next((q for q in machine["matmul_peak"] if q["dtype"] == args.dtype), machine["matmul_peak"][0])["flops"]
    with tempfile.TemporaryDirectory(prefix="unlearn-bench-tiny-") as tmp:
        model_path = args.model
        if args.model == "tiny":
            model_path = run({"kind": "tiny", "out": tmp, "tofu_dir": args.tofu})["model_path"]
        base = {
            "kind": "train",
            "model_path": model_path,
            "dtype": args.dtype,
            "tofu_dir": args.tofu,
            "seq_len": args.seq_len,
            "batch_size": args.batch_size,
            "n_retain": args.retain_rows,
            "warmup": args.warmup,
            "steps": args.steps,
            "threads": args.threads,
            "set": args.set,
        }
        report = measure(run, args, machine, base, peak)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"\nwrote {args.json}")
    return 1 if report["errors"] else 0


def attempt(run, spec: dict, errors: list[dict]) -> dict | None:
    start = time.perf_counter()
    try:
        result = run(spec)
    except Exception as e:  # noqa: BLE001 - one failed configuration must not hide the others
        errors.append({"label": spec["label"], "error": str(e)})
        print(f"  FAILED {spec['label']}: {str(e).splitlines()[0]}", flush=True)
        return None
    print(
        f"  done   {spec['label']:26} {result['s_per_step']:8.4f} s/step ({time.perf_counter() - start:.1f} s)",
        file=sys.stderr,
        flush=True,
    )
    return result


def measure(run, args, machine: dict, base: dict, peak: float) -> dict:
    registry, errors = machine["recipes"], []
    skipped = {n: i["skip_reason"] for n, i in registry.items() if not i["step"]}
    results = [r for spec in step_specs(args, registry, base) if (r := attempt(run, spec, errors))]
    by_label = {r["label"]: r for r in results}
    sft = (by_label.get("sft") or {}).get("s_per_step")
    bare = (by_label.get("bare torch loop") or {}).get("s_per_step")
    m = results[0]["model"] if results else None
    if m:
        print(
            f"\nmodel     {args.model}: {m['n_params'] / 1e6:,.1f} M parameters, {m['layers']} layers, d_model "
            f"{m['hidden']}, vocab {m['vocab']}; LoRA {results[0]['lora_target_modules']} r=8: "
            f"{results[0]['trainable_params'] / 1e6:,.3f} M trainable"
        )
    print_steps(results, peak, sft, bare)
    drift = None
    if sft and (again := (by_label.get("sft again") or {}).get("s_per_step")):
        drift = again / sft
        print(
            f"  baseline drift: sft at the end of the table / at its start = {drift:.3f}"
            + (
                "  (more than 5%: the machine's speed changed during the run; ratios are uncertain by as much)"
                if abs(drift - 1) > 0.05
                else ""
            )
        )
    for name, why in skipped.items():
        print(f"  skipped {name}: {why}")
    if results:
        print_flops_note(by_label.get("sft", results[0]))

    npo = {}
    cached, per_step = by_label.get("npo no-retain"), by_label.get("npo no-retain ref/step")
    if cached and per_step:
        npo = {
            "cached_s_per_step": cached["s_per_step"],
            "reference_pass_s": cached["reference_s"],
            "reference_rows": cached["n_forget"],
            "per_step_s_per_step": per_step["s_per_step"],
            "per_step_over_cached": per_step["s_per_step"] / cached["s_per_step"],
        }
        print(
            f"\nNPO reference log-probs (no retain term): cached once before training "
            f"{cached['s_per_step']:.4f} s/step + {cached['reference_s']:.3f} s for the {cached['n_forget']} forget "
            f"rows (= {cached['reference_s'] / cached['s_per_step']:.1f} steps, once); every step "
            f"{per_step['s_per_step']:.4f} s/step: {npo['per_step_over_cached']:.2f}x the cached step"
        )

    sizes_out, lengths_out = None, None
    if not args.no_sweeps and args.sweep_recipe in registry:
        size_specs, length_specs = sweep_specs(args, registry, base)
        sizes = [r for spec in size_specs if (r := attempt(run, spec, errors))]
        if len(sizes) >= 2:
            ns = [r["n_forget"] for r in sizes]
            epoch = [statistics.median(r["epoch_s"][1:]) for r in sizes]
            fit = linear_fit(ns, epoch)
            growth = (epoch[-1] / ns[-1]) / (epoch[0] / ns[0])
            sizes_out = {
                "recipe": args.sweep_recipe,
                "rows": ns,
                "epoch_s": epoch,
                "s_per_row": [e / n for e, n in zip(epoch, ns, strict=True)],
                "fit": fit,
                "per_row_growth": growth,
                "runs": sizes,
            }
            print(
                f"\nforget-set size ({args.sweep_recipe}, retain_ratio {sizes[0]['retain_ratio']}, batch "
                f"{args.batch_size} x {args.seq_len}; median of epochs 2..{args.epochs})"
            )
            print(f"{'rows':>6} {'s/epoch':>9} {'s/row':>9}")
            for n, e in zip(ns, epoch, strict=True):
                print(f"{n:6d} {e:9.3f} {e / n:9.4f}")
            print(
                f"fit: s/epoch = {fit['intercept_s']:.3f} + {fit['s_per_row']:.4f} * rows, R^2 = {fit['r2']:.4f}; "
                f"time/row at {ns[-1]} rows = {growth:.2f}x at {ns[0]}"
            )
        # The step table's `<recipe> r=1` row is the sweep's point at --seq-len: measured once.
        same = by_label.get(f"{args.sweep_recipe} r=1") or by_label.get(args.sweep_recipe)
        lengths = [
            same if same and spec["seq_len"] == args.seq_len else attempt(run, spec, errors) for spec in length_specs
        ]
        lengths = [r for r in lengths if r]
        if lengths:
            lengths_out = {"recipe": args.sweep_recipe, "runs": lengths}
            print(
                f"\nsequence length ({args.sweep_recipe}, retain_ratio {lengths[0]['retain_ratio']}, batch "
                f"{args.batch_size})"
            )
            print(f"{'T':>6} {'s/step':>9} {'tok/s':>9} {'x prev':>7} {'peak RSS':>9}")
            prev = None
            for r in lengths:
                growth = f"{r['s_per_step'] / prev:7.2f}" if prev else "      -"
                rss = fmt_bytes(r["peak_rss"])
                print(f"{r['seq_len']:6d} {r['s_per_step']:9.4f} {r['tokens_per_s']:9.0f} {growth} {rss:>9}")
                prev = r["s_per_step"]

    targets = check_targets(args, by_label, sizes_out)
    print("\ntargets (issue 8; measured, not asserted)")
    for t in targets:
        v = t["value"]
        shown = (
            ""
            if v is None
            else (
                f"{v:.2f}{t.get('unit', '')}"
                if isinstance(v, float)
                else f"R^2 {v['r2']:.3f}, per-row growth {v['per_row_growth']:.2f}x"
            )
        )
        detail = " ".join(x for x in (shown, f"({t['note']})" if t.get("note") else "") if x)
        print(f"  {t['status']:4}  {t['target']}: {detail}")
    for e in errors:
        print(f"  ERROR {e['label']}: {e['error'].splitlines()[0]}")
    return {
        "machine": machine,
        "settings": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()},
        "steps": results,
        "baseline_drift": drift,
        "npo_reference": npo,
        "forget_size": sizes_out,
        "seq_len": lengths_out,
        "targets": targets,
        "skipped": skipped,
        "errors": errors,
    }


if __name__ == "__main__":
    sys.exit(main())
