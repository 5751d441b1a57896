"""Every recipe, through one shared tester (the peft `TEST_CASES` pattern): the model forgets, keeps the retain set,
leaves its base weights alone, and the saved adapter reloads with plain `peft` to the same logits."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import answer_nll
from peft import PeftModel
from transformers import AutoModelForCausalLM

import unlearn
from unlearn import UnlearnError

# Measured on the tiny target model (forget/retain NLL start near 0.01 nats/token): each setting moves the forget
# NLL by >= 1.0 with a retain NLL below 0.4, so these bounds leave a margin.
FORGET_RISE = 0.75  # nats/token the forget-set NLL must rise by
RETAIN_BOUND = 0.5  # nats/token the retain-set NLL may reach
TEST_CASES = [
    ("ga", {"learning_rate": 3e-3}),
    ("graddiff", {"learning_rate": 3e-3}),
    ("npo", {"learning_rate": 1e-2}),
    ("simnpo", {"learning_rate": 2e-2, "num_train_epochs": 10}),
    ("idk", {"learning_rate": 1e-2, "num_train_epochs": 10}),
    # RMU steers layer 0 of the 2-layer model (its last layer's output is normalized); c retuned to its activations.
    (
        "rmu",
        {"rmu_layer": 0, "steering_coef": 20.0, "retain_weight": 100.0, "learning_rate": 1e-2, "num_train_epochs": 8},
    ),
    ("gslora", {"group_by": "module", "group_lasso": 10.0, "learning_rate": 1e-2, "num_train_epochs": 10}),
    ("reglora", {"learning_rate": 3e-3}),
    ("undial", {"learning_rate": 1e-2, "num_train_epochs": 10}),
    ("idkdpo", {"learning_rate": 1e-2, "num_train_epochs": 10}),
    # KIF erases the signature at layer 0 of the 2-layer model (measured: forget 0.008 -> 0.885, retain -> 0.050).
    ("kif", {"kif_layer": 0, "learning_rate": 3e-2, "num_train_epochs": 10}),
]


# Recipes whose goal is not a higher forget NLL under the plain prompt, tested for their own property instead.
TESTED_ELSEWHERE = {
    "ickul": "tests/test_ickul.py",
    "grpo": "tests/test_grpo.py",
    "sae": "tests/test_sae.py",
    "ssd": "tests/test_ssd.py",  # training-free, no adapter: a sparse weight delta
}


def test_every_recipe_has_a_test_case():
    assert sorted(unlearn.RECIPES) == sorted([name for name, _ in TEST_CASES] + list(TESTED_ELSEWHERE))


@pytest.mark.parametrize(("recipe", "overrides"), TEST_CASES, ids=[name for name, _ in TEST_CASES])
def test_recipe_forgets_and_keeps(recipe, overrides, tiny, tiny_model_dir, tofu_rows, tmp_path):
    model, tokenizer = tiny
    base = {k: v.clone() for k, v in model.state_dict().items()}
    before_forget = answer_nll(model, tokenizer, tofu_rows["forget"])
    out = tmp_path / "run"
    peft_model = unlearn.forget(
        model,
        tokenizer,
        tofu_rows["forget"],
        tofu_rows["retain"],
        recipe=recipe,
        output_dir=out,
        disable_tqdm=True,
        **overrides,
    )
    after_forget = answer_nll(peft_model, tokenizer, tofu_rows["forget"])
    after_retain = answer_nll(peft_model, tokenizer, tofu_rows["retain"])
    assert after_forget - before_forget >= FORGET_RISE, (before_forget, after_forget)
    assert after_retain <= RETAIN_BOUND, after_retain

    # The base weights are untouched: all learning is in the adapter.
    trained_base = peft_model.get_base_model().state_dict()
    for name, value in base.items():
        key = (
            name.replace(".weight", ".base_layer.weight")
            if name.replace(".weight", ".base_layer.weight") in trained_base
            else name
        )
        torch.testing.assert_close(trained_base[key], value, rtol=0, atol=0)

    # The run directory is complete and the adapter round-trips through plain peft.
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete" and meta["recipe"] == recipe and meta["global_step"] > 0
    assert meta["data"]["forget"]["rows"] == len(tofu_rows["forget"])
    assert (out / "adapter_model.safetensors").is_file() and (out / "unlearn_config.yaml").is_file()
    assert not list(out.glob("checkpoint-*")), "checkpoints are removed once the run is complete"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("forget_loss" in row for row in log)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out).eval()
    ids = torch.tensor([tokenizer("Question: who?\nAnswer: The author")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, peft_model.eval()(ids).logits)


def test_registries_refuse_a_duplicate_name():
    from unlearn.evaluation.metrics import METRICS
    from unlearn.evaluation.metrics import register as register_metric
    from unlearn.recipes import RECIPES, register

    class Clash(RECIPES["npo"]):
        _name = "npo"

    with pytest.raises(UnlearnError, match="already registered"):
        register(Clash)
    assert RECIPES["npo"] is not Clash
    with pytest.raises(UnlearnError, match="lacks"):  # not a recipe: no config class, not a Trainer
        register(type("NotARecipe", (), {"_name": "not-a-recipe"}))
    assert "not-a-recipe" not in RECIPES
    with pytest.raises(UnlearnError, match="already registered"):
        register_metric("probability", True)(lambda ctx, spec: None)
    assert METRICS["probability"].fn.__name__ != "<lambda>"


def test_the_catalogue_says_what_the_registry_says():
    """`unlearn recipes` reads the recipe sources instead of importing them: it must list the same recipes."""
    from unlearn.recipe_catalogue import catalogue
    from unlearn.trainer import paper

    listed = {r["name"]: (r["paper"], r["data_needs"], r["module"]) for r in catalogue()}
    registered = {n: (paper(c), c.data_needs, c.__module__) for n, c in unlearn.RECIPES.items()}
    assert listed == registered


def test_config_fields_read_from_source_match_the_config_classes():
    """`unlearn forget` refuses an unknown key, and sees a recipe's retain default, from the config sources before
    the training stack is imported: the keys and literal defaults read there are those of the imported classes."""
    from unlearn.recipe_catalogue import NOT_LITERAL, config_fields

    for name, cls in unlearn.RECIPES.items():
        read = config_fields(name)
        if name == "grpo":  # its config derives from TRL's GRPOConfig, whose source is not read
            assert read is None
            continue
        real = {f.name: f.default for f in dataclasses.fields(cls.config_class) if f.init}
        assert read.keys() == real.keys(), name
        literal = {k: v for k, v in read.items() if v is not NOT_LITERAL}
        assert {"retain_weight", "retain_ratio", "learning_rate"} <= literal.keys(), name
        assert literal == {k: real[k] for k in literal}, name
