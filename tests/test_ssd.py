"""Selective Synaptic Dampening: the weights it dampens are those far more important to the forget set than to the
retain set, by the paper's factor; the model forgets; the run stores a sparse delta that loads like any run."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import answer_nll

import unlearn
from unlearn import UnlearnError
from unlearn.delta import DELTA_FILE
from unlearn.loading import load_model_or_adapter
from unlearn.recipes import recipe_config


def test_ssd_dampens_by_the_rule_forgets_and_reloads(tiny, tiny_model_dir, tofu_rows, tmp_path):
    model, tok = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    forget_before = answer_nll(model, tok, tofu_rows["forget"])
    retain_before = answer_nll(model, tok, tofu_rows["retain"])
    out = tmp_path / "run"
    settings = {"model_name_or_path": str(tiny_model_dir)}
    result = unlearn.forget(
        copy.deepcopy(model), tok, tofu_rows["forget"], tofu_rows["retain"], recipe="ssd", output_dir=out, **settings
    )

    # The rule, checked against importances recomputed here for one parameter.
    trainer = unlearn.get_recipe("ssd")(
        model=copy.deepcopy(model),
        args=recipe_config({"recipe": "ssd", "output_dir": str(tmp_path / "again"), **settings}),
        forget=tofu_rows["forget"],
        retain=tofu_rows["retain"],
        processing_class=tok,
    )
    name = "model.layers.0.mlp.down_proj.weight"
    params = {name: dict(trainer.model.named_parameters())[name]}
    i_f = trainer.importance(trainer.model, trainer.forget_examples, params)[name]
    i_r = trainer.importance(trainer.model, trainer.retain_examples, params)[name]
    selected = i_f > 10.0 * i_r
    after = dict(result.named_parameters())[name].detach()
    assert 0 < selected.sum() < selected.numel()
    torch.testing.assert_close(after[~selected], before[name][~selected], rtol=0, atol=0)
    factor = (i_r / i_f).clamp(max=1)[selected]
    torch.testing.assert_close(after[selected], before[name][selected] * factor, rtol=1e-5, atol=1e-7)
    # Selective: at the paper's alpha = 10 the forget NLL rises (measured 0.008 -> 2.5) and retain stays (-> 0.05).
    forget_after = answer_nll(result, tok, tofu_rows["forget"])
    retain_after = answer_nll(result, tok, tofu_rows["retain"])
    assert forget_after > forget_before + 1.0, (forget_before, forget_after)
    assert retain_after < retain_before + 0.2, (retain_before, retain_after)

    # Stored as a sparse delta, far smaller than the weights, that loads as the same model.
    assert (out / DELTA_FILE).is_file() and not (out / "model.safetensors").exists()
    meta = json.loads((out / "delta_config.json").read_text())
    n_params = sum(p.numel() for p in model.parameters())
    assert 0 < meta["changed_elements"] < n_params / 2
    assert json.loads((out / "run.json").read_text())["recipe"] == "ssd"
    from unlearn.hub import files_to_upload

    uploaded = files_to_upload(out)
    assert {DELTA_FILE, "delta_config.json", "run.json"} <= set(uploaded) and "model.safetensors" not in uploaded
    loaded, _ = load_model_or_adapter(str(out))
    ids = torch.tensor([tok("Question: who?\nAnswer: The author")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, result.eval()(ids).logits)


def test_ssd_refuses_an_adapter_and_a_missing_retain_set():
    with pytest.raises(UnlearnError, match="cannot express"):
        recipe_config({"recipe": "ssd", "adapter": "lora"})
    with pytest.raises(UnlearnError, match="needs a retain set"):
        recipe_config({"recipe": "ssd", "retain_weight": 0})
