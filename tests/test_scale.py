"""Scale: the shipped accelerate configs and QLoRA.

DDP runs here as two gloo processes on the CPU. accelerate (1.16) turns FSDP and DeepSpeed on only for GPU-like
process groups, and on CPU processes would silently train plain DDP instead, which `UnlearnConfig` refuses (tested
below); the shipped files are checked to parse as accelerate configs of the right kind. FSDP2 itself runs on CPU
processes: `tests/fsdp_drive.py` drives it as the Trainer would, and its adapter is checked against one process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_cli import ENV, unlearn_cli, write_config

from unlearn.loading import load_model_and_tokenizer
from unlearn.run import forget

ACCELERATE_CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "accelerate"


@pytest.mark.parametrize(
    "name, kind",
    [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero2", "DEEPSPEED"), ("deepspeed_zero3", "DEEPSPEED")],
)
def test_shipped_accelerate_configs_parse(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE_CONFIGS / f"{name}.yaml"))
    assert config.distributed_type.value == kind
    assert config.num_processes >= 2


def one_process_run_and_two_process_config(model_dir, data_files, tmp_path) -> Path:
    """NPO at global batch 4: run in one process (x 4) into `one/`; the config for two processes (x 2) into `two/`,
    with the suite evaluated in the run."""
    common = {"recipe": "npo", "retain_weight": 1.0}
    one = write_config(
        tmp_path / "one.yaml", model_dir, data_files, tmp_path / "one", per_device_train_batch_size=4, **common
    )
    unlearn_cli("forget", one)
    return write_config(
        tmp_path / "two.yaml",
        model_dir,
        data_files,
        tmp_path / "two",
        per_device_train_batch_size=2,
        eval_suite="qa",
        eval_params=json.dumps({"path": str(data_files["forget"]), "limit": 4}),
        **common,
    )


def assert_two_processes_match_one(tmp_path) -> None:
    """Every adapter tensor within 1e-3 relative (Frobenius) error, and the two-process run's evaluation written."""
    a = load_file(tmp_path / "one" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert ((a[name] - b[name]).norm() / a[name].norm()).item() < 1e-3, name
    summary = json.loads((tmp_path / "two" / "eval" / "SUMMARY.json").read_text())
    assert 0 < summary["metrics"]["probability"] < 1


@pytest.mark.slow
def test_two_processes_match_one(tiny_model_dir, data_files, tmp_path):
    """Global batch 4: one process x 4 vs two gloo processes x 2 (the shipped ddp.yaml) give the same adapter.

    NPO, so that the reference log-probs are computed through the DDP-wrapped model, and the two-process run
    evaluates its result (`eval_suite`) as part of the run.
    Tolerance: every adapter tensor within 1e-3 relative (Frobenius) error; measured 1e-4 at most, the float32
    noise of a different all-reduce summation order, amplified by Adam on the near-zero first steps.
    On a machine without GPUs, `accelerate launch --cpu` runs a single process (accelerate 1.x hands multi-CPU
    runs to mpirun only); the ddp.yaml config (`MULTI_GPU`) starts the processes with torchrun and `UnlearnConfig`
    switches them to `use_cpu`, i.e. DDP over gloo.
    """
    two = one_process_run_and_two_process_config(tiny_model_dir, data_files, tmp_path)
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE_CONFIGS / "ddp.yaml"),
        "-m",
        "unlearn",
        "forget",
        str(two),
    ]
    proc = subprocess.run(launch, env=ENV, capture_output=True, text=True, timeout=600)
    errors = [line for line in proc.stderr.splitlines() if "Error" in line and "Traceback" not in line]
    assert proc.returncode == 0, "\n".join(errors[:10]) + "\n" + proc.stderr[-2000:]
    assert proc.stdout.count("Unlearned adapter written") == 1, "only the main process reports (it really ran DDP)"
    assert_two_processes_match_one(tmp_path)


@pytest.mark.slow
def test_fsdp_config_on_cpu_processes_is_refused_not_run_as_ddp(tiny_model_dir, data_files, tmp_path):
    """accelerate launches the FSDP config's two processes on the CPU as DDP (`MULTI_CPU` is not among the types it
    turns FSDP on for): the run would claim sharding it does not do. It stops before loading anything, saying so."""
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, data_files, tmp_path / "run", per_device_train_batch_size=2)
    launch = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / "fsdp.yaml")),
        *("--mixed_precision", "no", "-m", "unlearn", "forget", str(cfg)),
    ]
    proc = subprocess.run(launch, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert proc.stderr.count("asks for FSDP") == 2 and "recipes/accelerate/ddp.yaml" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_fsdp2_on_two_cpu_processes_matches_one(tiny_model_dir, data_files, tmp_path):
    """FSDP2 (`fully_shard`, gloo), driven as the Trainer drives it with accelerate's FSDP2 plugin
    (`tests/fsdp_drive.py`, since accelerate does not enable FSDP on CPU processes), trains the same adapter as one
    process: global batch 4 (one process x 4 vs two x 2), NPO so that the reference log-probs run through the
    sharded model, every trainable tensor sharded over the two processes, and the run's `eval_suite` evaluated on
    the gathered adapter. Tolerance as for DDP (1e-3 relative per tensor)."""
    two = one_process_run_and_two_process_config(tiny_model_dir, data_files, tmp_path)
    drive = Path(__file__).with_name("fsdp_drive.py")
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(drive), str(two)]
    proc = subprocess.run(launch, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = json.loads((tmp_path / "two" / "fsdp.json").read_text())
    assert [r["rank"] for r in reports] == [0, 1] and all(r["units"] == 2 for r in reports)  # 2 decoder layers
    assert sum(r["local_trainable"] for r in reports) == reports[0]["trainable"]  # sharded, not replicated
    assert all(r["local_trainable"] < r["trainable"] for r in reports)
    assert_two_processes_match_one(tmp_path)


def test_qlora_trains_an_adapter_on_a_4bit_base(tiny_model_dir, tofu_rows, tmp_path):
    """QLoRA: the base loaded in NF4 with bitsandbytes (on the CPU, as far as bitsandbytes allows there), a float
    LoRA adapter trained on top; the quantized base weights do not change and the forget NLL rises."""
    pytest.importorskip("bitsandbytes")
    from conftest import answer_nll

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir), quantization="4bit")
    assert model.is_loaded_in_4bit
    assert any(p.dtype == torch.uint8 for p in model.parameters()), "linear layers are stored as packed 4-bit"
    probe = tokenizer(tofu_rows["forget"][0]["question"], return_tensors="pt")
    with torch.no_grad():
        base_logits = model(**probe).logits
    before = answer_nll(model, tokenizer, tofu_rows["forget"])
    unlearned = forget(
        model,
        tokenizer,
        tofu_rows["forget"],
        tofu_rows["retain"],
        recipe="graddiff",
        output_dir=tmp_path / "run",
        learning_rate=1e-2,
        num_train_epochs=3,
        disable_tqdm=True,
    )
    after = answer_nll(unlearned, tokenizer, tofu_rows["forget"])
    assert after > before + 0.5, (before, after)
    with unlearned.disable_adapter(), torch.no_grad():  # the quantized base itself is untouched
        torch.testing.assert_close(unlearned(**probe).logits, base_logits)
    saved = load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert saved and all(t.dtype == torch.float32 for t in saved.values())


def test_quantization_needs_an_adapter():
    from unlearn.errors import UnlearnError
    from unlearn.recipes import recipe_config

    with pytest.raises(UnlearnError, match="adapter: lora"):
        recipe_config({"recipe": "ga", "adapter": "none", "quantization": "4bit", "output_dir": "x"})
    with pytest.raises(UnlearnError, match="quantization"):
        recipe_config({"recipe": "ga", "quantization": "3bit", "output_dir": "x"})
