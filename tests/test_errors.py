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


# ---- answered before the training stack is imported (`unlearn.precheck`) -------------------------------------------

FAST_CHECK = """
import contextlib, io, json, sys
from unlearn.cli import main

out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    out.append([rc, err.getvalue()])
print(json.dumps({"results": out, "imported": sorted(m for m in ("torch", "transformers", "datasets") if m in sys.modules)}))
"""


def test_cli_answers_bad_config_and_data_before_importing_the_training_stack(tiny_model_dir, data_files, tmp_path):
    """Each bad input of a new user gets its clear error, and none of them waited for torch, transformers or the
    model to load (measured on the development machine: 32-49 s before these checks moved ahead of the imports)."""
    import subprocess
    import sys

    from test_cli import ENV, write_config

    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"question": "Q1", "answer": "A1"}\n{"question": "Q2", "answer": }\n')
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text('{"question": "Q1", "answer": "A1"}\n{"question": "Q2"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    done = tmp_path / "done"
    done.mkdir()
    (done / "unlearn_config.yaml").write_text("recipe: graddiff\n")
    (done / "run.json").write_text("{}")
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, data_files, tmp_path / "run")
    cases = {
        f"forget={bad_line}": f"`{bad_line}` line 2 is not valid JSON",
        "learning_rate=-1e-4": "`learning_rate` must be > 0",
        "max_steps=0": "0 would train nothing",
        "lora_layers=3-1": "`lora_layers: 3-1` runs backwards",
        "lerning_rate=1": "Did you mean 'learning_rate'",
        f"forget={tmp_path / 'missing.jsonl'}": "missing.jsonl` does not exist",
        f"forget={empty}": "forget set is empty",
        f"forget={no_answer}": "line 2 has no `answer`",
        "model_name_or_path=": "No model given",
        "retain=": "Recipe `graddiff` uses a retain set",
        f"output_dir={done}": "holds a completed unlearn run",
        "recipe=nop": "Did you mean 'npo'",
    }
    argv = [["forget", str(cfg), override] for override in cases]
    proc = subprocess.run(
        [sys.executable, "-c", FAST_CHECK, json.dumps(argv)], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    for (override, expected), (rc, stderr) in zip(cases.items(), report["results"], strict=True):
        assert rc == 2 and expected in stderr and "Traceback" not in stderr, (override, stderr)
    assert report["imported"] == [], "a check waited for the training stack"


def test_settings_out_of_range_are_refused_in_the_config():
    from unlearn.recipes import recipe_config

    for key, value, expected in [
        ("learning_rate", -1e-4, "`learning_rate` must be > 0"),
        ("learning_rate", "1e-4x", "`learning_rate` must be a number"),
        ("max_steps", 0, "-1 \\(the default\\) to train `num_train_epochs`"),
        ("per_device_train_batch_size", 0, "whole number >= 1"),
        ("lora_r", 0, "LoRA rank"),
        ("lora_layers", "50", "`lora_layers` must be a list of layer indices"),
        ("lora_layers", [1.5], "`lora_layers` must be a list of layer indices"),
        ("lora_layers", "3-1", "runs backwards; write the lower layer first \\(1-3\\)"),
        ("lora_layers", "0%", "a share above 0% and at most 100%"),
    ]:
        with pytest.raises(UnlearnError, match=expected):
            recipe_config({"recipe": "ga", key: value, "output_dir": "x"})
    assert recipe_config({"recipe": "ga", "max_steps": -1, "output_dir": "x"}).max_steps == -1


def test_malformed_jsonl_names_the_file_and_line(tiny, tmp_path):
    model, tok = tiny
    path = tmp_path / "forget.jsonl"
    path.write_text('{"question": "Q", "answer": "A"}\n\n{"question": "Q", "answer": "A",}\n')
    with pytest.raises(UnlearnError, match=r"forget.jsonl` line 3 is not valid JSON \(.* column 33\)"):
        unlearn.forget(model, tok, str(path), recipe="ga")
    path.write_text('["not", "an", "object"]\n')
    with pytest.raises(UnlearnError, match="line 1 holds a JSON list, not an object"):
        unlearn.forget(model, tok, str(path), recipe="ga")


def test_max_length_beyond_the_model_positions_is_named(tiny, tofu_rows, tiny_model_dir, caplog):
    """512 positions in the tiny model: the warning names the limit, from the model (Python) and from its
    config.json (the command line's check, before the model loads)."""
    from unlearn.precheck import model_position_limit

    model, tok = tiny
    assert model_position_limit(str(tiny_model_dir)) == model.config.max_position_embeddings == 512
    with caplog.at_level("WARNING"):
        unlearn.forget(model, tok, tofu_rows["forget"], recipe="ga", max_length=100_000, max_steps=1, disable_tqdm=True)
    assert "only 512 positions" in caplog.text and "`max_length` <= 512" in caplog.text
