"""Bad input: each gets a clear error naming the problem and the fix, before any training starts."""

from __future__ import annotations

import json

import pytest
import torch

import unlearn
from unlearn import NonFiniteLossError, UnlearnError
from unlearn.loading import load_model_and_tokenizer
from unlearn.recipes import load_config
from unlearn.recipes.ga import GATrainer


def test_empty_forget_set(tiny):
    model, tok = tiny
    with pytest.raises(UnlearnError, match="forget set is empty"):
        unlearn.forget(model, tok, [], recipe="ga")


def test_missing_columns_lists_what_was_found(tiny):
    model, tok = tiny
    with pytest.raises(UnlearnError, match=r"columns \['prompt', 'response'\].*question_key"):
        unlearn.forget(model, tok, [{"prompt": "a", "response": "b"}], recipe="ga")


def test_configurable_column_names(tiny):
    model, tok = tiny
    rows = [{"prompt": "Who is X?", "response": "X is a writer."}] * 4
    unlearn.forget(
        model, tok, rows, recipe="ga", question_key="prompt", answer_key="response", max_steps=1, disable_tqdm=True
    )


def test_retain_required_but_absent(tiny, tofu_rows):
    model, tok = tiny
    with pytest.raises(UnlearnError, match="uses a retain set.*retain_weight: 0"):
        unlearn.forget(model, tok, tofu_rows["forget"], recipe="npo")


def test_tokenizer_without_pad_token_borrows_eos(tiny, tofu_rows):
    model, tok = tiny
    tok.pad_token = None
    unlearn.forget(model, tok, tofu_rows["forget"], recipe="ga", max_steps=1, disable_tqdm=True)
    assert tok.pad_token == tok.eos_token


def test_tokenizer_without_pad_or_eos_explains(tiny, tofu_rows):
    model, tok = tiny
    tok.pad_token = None
    tok.eos_token = None
    with pytest.raises(UnlearnError, match="neither a pad token nor an EOS.*add_special_tokens"):
        unlearn.forget(model, tok, tofu_rows["forget"], recipe="ga")


def test_unknown_recipe_suggests(tiny, tofu_rows):
    model, tok = tiny
    with pytest.raises(UnlearnError, match="Unknown recipe 'nop'. Did you mean 'npo'.*Available: ga, graddiff"):
        unlearn.forget(model, tok, tofu_rows["forget"], recipe="nop")


def test_unknown_config_key_suggests(tmp_path, tiny, tofu_rows):
    model, tok = tiny
    with pytest.raises(UnlearnError, match="'learning_rat'. Did you mean 'learning_rate'"):
        unlearn.forget(model, tok, tofu_rows["forget"], recipe="ga", learning_rat=1e-4)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("recipe: npo\nbeat: 0.2\n")
    with pytest.raises(UnlearnError, match="'beat'. Did you mean 'beta'"):
        load_config(cfg)


def test_recipe_specific_key_rejected_elsewhere(tiny, tofu_rows):
    model, tok = tiny
    with pytest.raises(UnlearnError, match="Unknown config key for recipe `ga`: 'beta'"):
        unlearn.forget(model, tok, tofu_rows["forget"], recipe="ga", beta=0.1)


def test_output_dir_with_another_run(tiny_model_dir, tofu_rows, tmp_path):
    out = tmp_path / "run"

    def go(**kw):
        model, tok = load_model_and_tokenizer(str(tiny_model_dir))
        return unlearn.forget(
            model, tok, tofu_rows["forget"], recipe="ga", output_dir=out, max_steps=1, disable_tqdm=True, **kw
        )

    go()
    first = json.loads((out / "run.json").read_text())["finished"]
    with pytest.raises(UnlearnError, match="holds a completed unlearn run. Pass `overwrite=true`"):
        go()
    with pytest.raises(UnlearnError, match="already complete; nothing to resume"):
        go(resume=True)
    go(overwrite=True)
    assert (out / "run.json").is_file() and json.loads((out / "run.json").read_text())["finished"] >= first


def test_output_dir_with_foreign_files_is_never_overwritten(tiny, tofu_rows, tmp_path):
    model, tok = tiny
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    for kw in ({}, {"overwrite": True}):
        with pytest.raises(UnlearnError, match=r"files not written by unlearn \(thesis.tex\)"):
            unlearn.forget(model, tok, tofu_rows["forget"], recipe="ga", output_dir=out, **kw)
    assert (out / "thesis.tex").read_text() == "years of work"


def test_model_path_that_does_not_exist():
    with pytest.raises(UnlearnError, match="Model path `./no/such/model` does not exist"):
        load_model_and_tokenizer("./no/such/model")


def test_hub_id_offline_fails_from_the_cache_only(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnlearnError, match="local Hugging Face cache"):
        load_model_and_tokenizer("nobody-here/not-a-model")


def test_missing_data_file(tiny):
    model, tok = tiny
    with pytest.raises(UnlearnError, match="`data/forget.jsonl` does not exist"):
        unlearn.forget(model, tok, "data/forget.jsonl", recipe="ga")


def test_nan_loss_stops_and_keeps_the_last_good_adapter(tiny, tofu_rows, tmp_path, monkeypatch):
    model, tok = tiny
    original = GATrainer.forget_loss

    def poisoned(self, logps, n_tokens, index):
        loss = original(self, logps, n_tokens, index)
        return loss * float("nan") if self.state.global_step == 2 else loss

    monkeypatch.setattr(GATrainer, "forget_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="step 3") as err:
        unlearn.forget(
            model, tok, tofu_rows["forget"], recipe="ga", output_dir=out, learning_rate=1e-3, disable_tqdm=True
        )
    saved = out / "last-good-step-2"
    assert err.value.saved_to == str(saved) and (saved / "adapter_model.safetensors").is_file()
    assert not (out / "run.json").exists(), "a failed run must not look complete"
    from safetensors.torch import load_file

    for name, value in load_file(saved / "adapter_model.safetensors").items():
        assert torch.isfinite(value).all(), name


def test_bad_choices_are_named():
    from unlearn.recipes import recipe_config

    with pytest.raises(UnlearnError, match="`adapter` must be one of lora, none; got 'qlora'"):
        recipe_config({"recipe": "ga", "adapter": "qlora"})
    with pytest.raises(UnlearnError, match="`graddiff` needs a retain term"):
        recipe_config({"recipe": "graddiff", "retain_weight": 0})


def test_missing_extra_names_the_install_line():
    from unlearn.errors import require

    with pytest.raises(ImportError, match=r"pip install 'unlearn-toolkit\[sae\]'"):
        require("sae_lens_is_not_installed_here", "sae")


def test_sae_recipe_without_sae_lens_names_the_extra(tiny, tofu_rows, tmp_path, monkeypatch):
    import sys

    from unlearn.recipes import recipe_config

    monkeypatch.setitem(sys.modules, "sae_lens", None)  # as if the extra were not installed
    model, tok = tiny
    args = recipe_config({"recipe": "sae", "sae_path": str(tmp_path), "output_dir": str(tmp_path / "run")})
    with pytest.raises(ImportError, match=r"pip install 'unlearn-toolkit\[sae\]'"):
        unlearn.get_recipe("sae")(
            model=model, args=args, forget=tofu_rows["forget"], retain=tofu_rows["retain"], processing_class=tok
        )
