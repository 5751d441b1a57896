"""Throughput of the evaluation package against the bare model, on the same tokens, in the same run.

    python benchmarks/eval_throughput.py --model smollm2-135m --rows 16

Likelihood: `scoring.row_stats` (every statistic the likelihood metrics use) over TOFU forget rows with their
paraphrased and perturbed answers, vs a bare forward pass over the same length-sorted padded batches.
Generation: `scoring.greedy_answers` vs a plain batched `model.generate` on the same left-padded prompts.
Targets (issue 8): likelihood >= 0.7x, generation >= 0.8x.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from unlearn.data import format_qa, load_records, pad_rows, tokenize
from unlearn.loading import ensure_pad_token, load_model_and_tokenizer
from unlearn.scoring import greedy_answers, row_stats
from unlearn.tofu import load_tofu


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tofu", default=os.environ.get("UNLEARN_TOFU_DIR", "../shared/data/tofu"))
    p.add_argument("--rows", type=int, default=16, help="forget questions (each with 1 + 1 + 5 scored answers)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(args.model)
    ensure_pad_token(tok)
    model.eval()
    ds = load_tofu("forget10_perturbed", args.tofu).select(range(args.rows))
    flat = [
        {"question": r["question"], "answer": a}
        for r in ds
        for a in [r["answer"], r["paraphrased_answer"], *r["perturbed_answer"]]
    ]
    examples = tokenize(load_records(flat), tok, "qa", 512, "question", "answer", "text")
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    batches = [
        pad_rows([examples[i] for i in order[s : s + args.batch_size]], tok.pad_token_id)
        for s in range(0, len(order), args.batch_size)
    ]
    n_tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    @torch.no_grad()
    def bare():
        for b in batches:
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])

    t_bare = best_of(bare, args.repeats)
    t_ours = best_of(lambda: row_stats(model, examples, tok.pad_token_id, args.batch_size), args.repeats)
    print(
        f"model {args.model}, {len(examples)} rows, {n_tokens} tokens, batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"likelihood  bare forward {n_tokens / t_bare:9.0f} tok/s | row_stats {n_tokens / t_ours:9.0f} tok/s | ratio {t_bare / t_ours:.2f} (target >= 0.70)"
    )

    questions = list(ds["question"])
    tok.padding_side = "left"
    templated = bool(getattr(tok, "chat_template", None))
    prompts = [format_qa(tok, q, "")[0] for q in questions]

    @torch.no_grad()
    def plain_generate():
        for s in range(0, len(prompts), args.batch_size):
            enc = tok(
                prompts[s : s + args.batch_size], return_tensors="pt", padding=True, add_special_tokens=not templated
            )
            model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)

    t_plain = best_of(plain_generate, args.repeats)
    t_gen = best_of(lambda: greedy_answers(model, tok, questions, args.max_new_tokens, args.batch_size), args.repeats)
    print(
        f"generation  plain generate {t_plain:6.2f} s | greedy_answers {t_gen:6.2f} s | ratio {t_plain / t_gen:.2f} (target >= 0.80)"
    )


if __name__ == "__main__":
    main()
