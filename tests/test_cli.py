"""The command line and resuming an interrupted run (multi-process runs: tests/test_scale.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import unlearn
from unlearn.loading import load_model_and_tokenizer
from unlearn.recipes.graddiff import GradDiffTrainer

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def write_config(path, model_dir, data_files, out, **extra):
    lines = {
        "recipe": "graddiff",
        "model_name_or_path": str(model_dir),
        "forget": str(data_files["forget"]),
        "retain": str(data_files["retain"]),
        "output_dir": str(out),
        "learning_rate": 3e-3,
        "num_train_epochs": 2,
        "lora_dropout": 0.0,
        "disable_tqdm": True,
        **extra,
    }
    path.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return path


def unlearn_cli(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "unlearn", *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


@pytest.mark.slow
def test_cli_forget_and_errors(tiny_model_dir, data_files, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, data_files, tmp_path / "run")
    proc = unlearn_cli("forget", cfg, "learning_rate=4e-3")
    assert "Unlearned adapter written to" in proc.stdout
    assert (tmp_path / "run" / "run.json").is_file()
    assert "learning_rate: 0.004" in (tmp_path / "run" / "unlearn_config.yaml").read_text()

    again = unlearn_cli("forget", cfg, check=False)  # the directory now holds a run
    assert again.returncode == 2 and "overwrite=true" in again.stderr and "Traceback" not in again.stderr
    typo = unlearn_cli("forget", cfg, "lerning_rate=1", check=False)
    assert typo.returncode == 2 and "Did you mean 'learning_rate'" in typo.stderr
    listing = unlearn_cli("recipes")
    for name in unlearn.RECIPES:
        assert name in listing.stdout
    assert "arXiv:2404.05868" in listing.stdout


def test_shipped_recipes_load():
    from pathlib import Path

    from unlearn.recipes import load_config

    shipped = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert {p.stem for p in shipped} >= set(unlearn.RECIPES)
    for path in shipped:
        config = load_config(path)
        # each names what to forget: a forget set, or a target the sets are built from (recipes/target.yaml
        # takes it on the command line: `target="Harry Potter"`)
        assert config.recipe in unlearn.RECIPES and (config.forget or path.stem == "target"), path


def run_interrupted(monkeypatch, trainer_cls, go, out, step: int = 3) -> None:
    """`go(out)` with `trainer_cls.training_step` raising at `step`, as a run killed mid-training stops."""
    original = trainer_cls.training_step

    def crash(self, *a, **kw):
        if self.state.global_step == step:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, *a, **kw)

    monkeypatch.setattr(trainer_cls, "training_step", crash)
    with pytest.raises(KeyboardInterrupt):
        go(out)
    monkeypatch.setattr(trainer_cls, "training_step", original)


def test_interrupted_full_finetune_npo_resumes_with_the_original_reference(
    tiny_model_dir, data_files, tmp_path, monkeypatch
):
    """Full fine-tuning has no adapter to switch off: a resumed NPO run must take the reference log-probs from its
    checkpoint, not score the half-unlearned weights (which would make the log ratio 0 where it resumed)."""
    from unlearn.recipes.npo import NPOTrainer
    from unlearn.trainer import REFERENCE_FILE

    settings = dict(
        recipe="npo",
        adapter="none",
        learning_rate=1e-3,
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        retain_weight=0.0,
    )

    def go(out, **kw):
        model, tok = load_model_and_tokenizer(str(tiny_model_dir))
        unlearn.forget(model, tok, str(data_files["forget"]), None, output_dir=out, disable_tqdm=True, **settings, **kw)

    go(tmp_path / "straight")

    def interrupted(out):
        run_interrupted(monkeypatch, NPOTrainer, go, out)
        return out / "checkpoint-2" / REFERENCE_FILE

    saved = torch.load(interrupted(tmp_path / "broken"))
    assert set(saved) == {"reference_logps"} and saved["reference_logps"].shape == (8,)  # one per forget row
    go(tmp_path / "broken", resume=True)
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "broken" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    interrupted(tmp_path / "old").unlink()  # as a checkpoint written before references were saved
    with pytest.raises(unlearn.UnlearnError, match=f"no {REFERENCE_FILE}"):
        go(tmp_path / "old", resume=True)


def test_interrupted_run_resumes_to_the_same_adapter(tiny_model_dir, data_files, tmp_path, monkeypatch):
    settings = dict(
        recipe="graddiff",
        learning_rate=3e-3,
        num_train_epochs=3,
        save_strategy="steps",
        save_steps=2,
        lora_dropout=0.0,
        disable_tqdm=True,
    )

    def go(out, **kw):
        model, tok = load_model_and_tokenizer(str(tiny_model_dir))
        return unlearn.forget(
            model, tok, str(data_files["forget"]), str(data_files["retain"]), output_dir=out, **settings, **kw
        )

    go(tmp_path / "straight")

    run_interrupted(monkeypatch, GradDiffTrainer, go, tmp_path / "broken")
    broken = tmp_path / "broken"
    assert not (broken / "run.json").exists() and not (broken / "adapter_config.json").exists()
    assert (broken / "checkpoint-2").is_dir()
    with pytest.raises(unlearn.UnlearnError, match="unfinished unlearn run.*resume=true"):
        go(broken)
    with pytest.raises(unlearn.UnlearnError, match="different config.*learning_rate"):
        model, tok = load_model_and_tokenizer(str(tiny_model_dir))
        unlearn.forget(
            model,
            tok,
            str(data_files["forget"]),
            str(data_files["retain"]),
            output_dir=broken,
            resume=True,
            **{**settings, "learning_rate": 1e-3},
        )
    go(broken, resume=True)
    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(broken / "adapter_model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("recipe", sorted(unlearn.RECIPES))
def test_saved_config_reloads_to_the_same_config(recipe, tmp_path):
    """`unlearn_config.yaml` is the fully resolved config, and `unlearn forget` can run it again."""
    import yaml

    from unlearn.recipes import load_config, recipe_config

    required = {"sae": {"sae_path": str(tmp_path / "sae")}}.get(recipe, {})
    config = recipe_config({"recipe": recipe, "output_dir": str(tmp_path / "run"), **required})
    saved = tmp_path / "unlearn_config.yaml"
    saved.write_text(yaml.safe_dump(config.to_yaml_dict()))
    assert load_config(saved).to_yaml_dict() == config.to_yaml_dict()
