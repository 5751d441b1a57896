"""TOFU's forget-side evaluation, ours against open-unlearning's own code, on one model in one run (issue 20).

    pip install omegaconf                      # open-unlearning's metric code imports it (and scipy)
    git clone https://github.com/locuslab/open-unlearning /path/to/open-unlearning
    python benchmarks/vs_open_unlearning.py --open-unlearning /path/to/open-unlearning --model smollm2-135m \\
        --split forget01 --repeats 2 --json runs/bench/vs_open_unlearning.json

What is timed, on both sides: the answer probability, ROUGE-L recall of the greedy answer and the truth ratio
(paraphrased answer against the perturbed ones) of every row of TOFU's `{split}_perturbed`, from the same model
object, the same JSONL rows (`$UNLEARN_TOFU_DIR`, `../shared/data/tofu` by default) and the same greedy decoding
length. open-unlearning runs as its `configs/eval/tofu_metrics/forget_Q_A_Prob`, `forget_Q_A_ROUGE` and
`forget_Truth_Ratio` do (its `QADataset` over the local JSONL, `DataCollatorForSupervisedDatasetwithIndex`, batch
32, `model.generate` with `do_sample: False`, ROUGE on left-padded prompts), its metric functions called directly
instead of through Hydra; ours is `unlearn.evaluate` on the `tofu` suite with every other metric skipped, at its
default batch sizes. The two alternate, `--repeats` times each, so that machine drift hits both alike.

The one patch open-unlearning needs on transformers 5: `apply_chat_template(tokenize=True)` returns a
`BatchEncoding` there, where its `preprocess_chat_instance` expects a list of ids; its tokenizer (a separate
instance) gets a wrapper that returns the ids.

Per-row values are compared where the definitions match. They differ in one place: open-unlearning appends an
extra EOS to every scored answer (SmolLM2's chat template ends a turn with `<|im_end|>\\n`, which is not the EOS
id, so `preprocess_chat_instance` adds `<|im_end|>` once more), so its answer NLLs average over one token more;
and its collator builds the attention mask as `input_ids != pad_token_id`, which, where the pad token is also the
end-of-turn token (SmolLM2: `<|im_end|>` is both), masks out every end of turn inside the sequence (system, user
and answer), for scoring and for generation alike (its issue #128). The timed run uses its code as it is; `--same-inputs` drops
the extra EOS (a wrapper around its `preprocess_chat_instance`) and masks only the padding (a wrapper around its
collator), so that both sides see the same inputs and the values can be checked to 1e-4.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEPT = ("forget_probability", "forget_rouge", "forget_truth_ratio")


def _plain(value):
    """numpy scalars (open-unlearning's per-row values and indices) as the Python numbers JSON writes."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def theirs_tokenizer(model_dir: str):
    """A tokenizer of its own for open-unlearning, whose `apply_chat_template(tokenize=True)` returns ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    original = tok.apply_chat_template

    def apply_chat_template(*args, **kwargs):
        out = original(*args, **kwargs)
        if kwargs.get("tokenize") and not isinstance(out, list):
            out = out["input_ids"]
        return out

    tok.apply_chat_template = apply_chat_template
    return tok


def same_inputs() -> None:
    """open-unlearning's `preprocess_chat_instance` without the EOS it appends after a chat template whose turn
    ends in another token, and its collator's attention mask over every real token (not `!= pad_token_id`): the
    inputs `unlearn` scores."""
    import data.qa
    import torch
    from data.collators import DataCollatorForSupervisedDataset

    collate = DataCollatorForSupervisedDataset.__call__

    def call(self, instances):
        out = collate(self, instances)
        if "input_ids" in instances[0]:
            mask, width = torch.zeros_like(out["attention_mask"]), out["input_ids"].shape[1]
            for i, x in enumerate(instances):
                n = len(x["input_ids"])
                if self.padding_side == "right":
                    mask[i, :n] = 1
                else:
                    mask[i, width - n :] = 1
            out["attention_mask"] = mask
        return out

    DataCollatorForSupervisedDataset.__call__ = call

    original = data.qa.preprocess_chat_instance

    def preprocess_chat_instance(tokenizer, template_config, prompt_msgs, response_msgs, max_length, generate=False):
        item = original(tokenizer, template_config, prompt_msgs, response_msgs, max_length, generate)
        chat = [{"role": "user", "content": prompt_msgs[-1]}, {"role": "assistant", "content": response_msgs[-1]}]
        if not generate and tokenizer.apply_chat_template(chat, tokenize=True)[-1] != tokenizer.eos_token_id:
            item = {k: v[:-1] for k, v in item.items()}
        return item

    data.qa.preprocess_chat_instance = preprocess_chat_instance


def run_theirs(model, tok, data_file: Path, max_new_tokens: int, batch_size: int) -> tuple[float, dict]:
    from data.collators import DataCollatorForSupervisedDataset
    from data.qa import QADataset
    from evals.metrics.memorization import probability, rouge, truth_ratio
    from omegaconf import OmegaConf

    def dataset(answer_key: str, generate: bool = False):
        hf_args = {"path": "json", "data_files": str(data_file), "split": "train"}
        return QADataset(
            hf_args,
            {"apply_chat_template": True},
            tok,
            question_key="question",
            answer_key=answer_key,
            max_length=512,
            predict_with_generate=generate,
        )

    right = DataCollatorForSupervisedDataset(tok, index="index")
    left = DataCollatorForSupervisedDataset(tok, padding_side="left", index="index")
    generation = OmegaConf.create({"do_sample": False, "max_new_tokens": max_new_tokens, "use_cache": True})
    start = time.perf_counter()
    prob = probability._metric_fn(model, data=dataset("answer"), collators=right, batch_size=batch_size)
    rg = rouge._metric_fn(
        model,
        tokenizer=tok,
        data=dataset("answer", generate=True),
        collators=left,
        batch_size=batch_size,
        generation_args=generation,
        rouge_type="rougeL_recall",
    )
    para = probability._metric_fn(model, data=dataset("paraphrased_answer"), collators=right, batch_size=batch_size)
    pert = probability._metric_fn(model, data=dataset("perturbed_answer"), collators=right, batch_size=batch_size)
    tr = truth_ratio._metric_fn(model, pre_compute={"correct": para, "wrong": pert}, aggregator="closer_to_1_better")
    seconds = time.perf_counter() - start
    order = sorted(prob["value_by_index"])
    values = {
        "forget_probability": [prob["value_by_index"][i]["prob"] for i in order],
        "forget_rouge": [rg["value_by_index"][i]["rougeL_recall"] for i in order],
        "forget_truth_ratio": [tr["value_by_index"][i]["score"] for i in order],
    }
    aggregates = {"forget_probability": prob["agg_value"], "forget_rouge": rg["agg_value"]}
    aggregates["forget_truth_ratio"] = tr["agg_value"]
    return seconds, {"values": values, "aggregates": {k: float(v) for k, v in aggregates.items()}}


def run_ours(model, tok, split: str, max_new_tokens: int, limit: int | None) -> tuple[float, dict]:
    import unlearn
    from unlearn.evaluation import load_suite

    suite = load_suite("tofu", forget_split=split, limit=limit)
    skip = [n for n in suite["metrics"] if n not in KEPT]
    start = time.perf_counter()
    result = unlearn.evaluate(
        model, tok, suite="tofu", skip=skip, max_new_tokens=max_new_tokens, forget_split=split, limit=limit
    )
    seconds = time.perf_counter() - start
    values = {n: list(result.metrics[n].values) for n in KEPT}
    return seconds, {"values": values, "aggregates": {n: float(result.metrics[n].agg_value) for n in KEPT}}


def compare(ours: dict, theirs: dict) -> dict:
    out = {}
    for name in KEPT:
        a, b = ours["values"][name], theirs["values"][name]
        diffs = [abs(x - y) for x, y in zip(a, b, strict=True)]
        out[name] = {
            "ours": ours["aggregates"][name],
            "theirs": theirs["aggregates"][name],
            "max_row_diff": max(diffs),
            "median_row_diff": statistics.median(diffs),
            "rows_within_1e-4": sum(d <= 1e-4 for d in diffs),
            "rows": len(diffs),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--open-unlearning", required=True, help="a checkout of locuslab/open-unlearning")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--split", default="forget01")
    p.add_argument("--tofu", default=os.environ.get("UNLEARN_TOFU_DIR", str(ROOT.parent / "shared" / "data" / "tofu")))
    p.add_argument("--max-new-tokens", type=int, default=200, help="greedy decoding length, both sides (theirs: 200)")
    p.add_argument("--batch-size", type=int, default=32, help="open-unlearning's batch (its tofu.yaml: 32)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="first N rows only (a smoke run)")
    p.add_argument("--same-inputs", action="store_true", help="open-unlearning on our inputs (the value check)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    src = Path(args.open_unlearning) / "src"
    if not (src / "evals" / "metrics" / "memorization.py").is_file():
        sys.exit(f"--open-unlearning {args.open_unlearning}: no src/evals/metrics/memorization.py there.")
    data_file = Path(args.tofu) / f"{args.split}_perturbed.jsonl"
    if not data_file.is_file():
        sys.exit(f"{data_file} not found: give the TOFU directory with --tofu or $UNLEARN_TOFU_DIR.")
    os.environ["UNLEARN_TOFU_DIR"] = args.tofu
    if args.limit is not None:  # both sides read the same first rows
        import tempfile

        rows = data_file.read_text().splitlines()[: args.limit]
        data_file = Path(tempfile.mkdtemp()) / data_file.name
        data_file.write_text("\n".join(rows) + "\n")
    sys.path.insert(0, str(src))
    if args.same_inputs:
        same_inputs()

    import torch

    from unlearn.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(args.model)
    model.eval()
    their_tok = theirs_tokenizer(model.config._name_or_path)
    times = {"ours": [], "theirs": []}
    results = {}
    for _ in range(args.repeats):
        for side in ("ours", "theirs"):
            with torch.no_grad():
                if side == "ours":
                    seconds, results[side] = run_ours(model, tok, args.split, args.max_new_tokens, args.limit)
                else:
                    seconds, results[side] = run_theirs(
                        model, their_tok, data_file, args.max_new_tokens, args.batch_size
                    )
            times[side].append(seconds)
            print(f"{side}: {seconds:.1f} s", flush=True)
    same = compare(results["ours"], results["theirs"])
    ratio = statistics.median(times["theirs"]) / statistics.median(times["ours"])
    print(f"\nmodel {args.model}, TOFU {args.split}_perturbed, max_new_tokens {args.max_new_tokens}, threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    print("\n| | open-unlearning | unlearn | ratio |\n|---|---|---|---|")
    print(
        f"| forget-side evaluation (median of {args.repeats}) | {statistics.median(times['theirs']):.1f} s | "
        f"{statistics.median(times['ours']):.1f} s | {ratio:.2f}x |"
    )
    print("\n| metric | open-unlearning | unlearn | max row diff | median row diff | rows within 1e-4 |")
    print("|---|---|---|---|---|---|")
    for name, c in same.items():
        print(
            f"| {name} | {c['theirs']:.6f} | {c['ours']:.6f} | {c['max_row_diff']:.2e} | "
            f"{c['median_row_diff']:.2e} | {c['rows_within_1e-4']} / {c['rows']} |"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"seconds": times, "ratio": ratio, "metrics": same}, indent=1, default=_plain)
        )


if __name__ == "__main__":
    main()
