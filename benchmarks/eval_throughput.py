"""Throughput of the evaluation package against the bare model, on the same tokens, in the same run.

    python benchmarks/eval_throughput.py --model smollm2-135m --rows 16

Likelihood: `scoring.row_stats` (every statistic the likelihood metrics use) over TOFU forget rows with their
paraphrased and perturbed answers, vs a bare forward pass over the same length-sorted padded batches.
Generation: `scoring.greedy_answers` vs a plain batched `model.generate` on the same left-padded prompts in input
order, at the likelihood batch (`--batch-size`, as an evaluation loop would do it the obvious way): ours at the same
batch (sorting by prompt length, ended rows dropped) and at its own generation batch (`--generation-batch-size`,
default `scoring.GENERATION_BATCH_SIZE`), with the fraction of answers identical to `generate`'s.
Targets (issue 20): likelihood >= 0.85x the bare forward, generation >= 1.5x the plain `generate`.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from unlearn.data import format_qa, load_records, load_tofu, pad_rows, tokenize
from unlearn.loading import ensure_pad_token, load_model_and_tokenizer
from unlearn.scoring import GENERATION_BATCH_SIZE, greedy_answers, row_stats


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
    p.add_argument("--generation-batch-size", type=int, default=GENERATION_BATCH_SIZE)
    p.add_argument("--generation-rows", type=int, default=None, help="questions to generate for (default: --rows)")
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
        f"likelihood  bare forward {n_tokens / t_bare:9.0f} tok/s | row_stats {n_tokens / t_ours:9.0f} tok/s | ratio {t_bare / t_ours:.2f} (target >= 0.85)"
    )

    n_gen = args.generation_rows or args.rows
    questions = list(load_tofu("forget10_perturbed", args.tofu).select(range(n_gen))["question"])
    tok.padding_side = "left"
    templated = bool(getattr(tok, "chat_template", None))
    prompts = [format_qa(tok, q, "")[0] for q in questions]
    plain_answers: list[str] = []

    @torch.no_grad()
    def plain_generate():
        plain_answers.clear()
        for s in range(0, len(prompts), args.batch_size):
            enc = tok(
                prompts[s : s + args.batch_size], return_tensors="pt", padding=True, add_special_tokens=not templated
            )
            ids = model.generate(
                **enc, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
            )
            new = tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            plain_answers.extend(a.strip() for a in new)

    ours: dict[int, list[str]] = {}

    def generate_with(batch_size: int):
        ours[batch_size] = greedy_answers(model, tok, questions, args.max_new_tokens, batch_size)

    t_plain = best_of(plain_generate, args.repeats)
    print(f"generation  {len(questions)} questions, {args.max_new_tokens} new tokens at most")
    for batch_size in dict.fromkeys([args.batch_size, args.generation_batch_size]):
        t_gen = best_of(lambda b=batch_size: generate_with(b), args.repeats)
        same = sum(a == b for a, b in zip(plain_answers, ours[batch_size], strict=True)) / len(questions)
        print(
            f"generation  plain generate (batch {args.batch_size}) {t_plain:6.2f} s | greedy_answers (batch "
            f"{batch_size}) {t_gen:6.2f} s | ratio {t_plain / t_gen:.2f} (target >= 1.5) | identical answers {same:.2f}"
        )


if __name__ == "__main__":
    main()
