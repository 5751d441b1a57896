"""SAE-latent redirection with a tiny SAE trained in the test (sae-lens, offline, seconds)."""

from __future__ import annotations

import statistics

import pytest
from conftest import answer_nll, read_jsonl

import unlearn
from unlearn import UnlearnError
from unlearn.recipes import recipe_config

pytest.importorskip("sae_lens", reason="optional extra: pip install 'unlearn-toolkit[sae]'")


@pytest.fixture(scope="module")
def sae_dir(tiny_model_dir, tmp_path_factory):
    from unlearn.recipes.sae import train_sae

    out = tmp_path_factory.mktemp("sae")
    texts = [r["question"] + " " + r["answer"] for r in read_jsonl("retain99", 200) + read_jsonl("forget01", 8)]
    train_sae(str(tiny_model_dir), texts * 3, layer=0, out=str(out), d_sae=256, training_tokens=40_000, context_size=64)
    return out


def test_sae_redirects_forget_entities_toward_the_unknown_profile(tiny, tofu_rows, sae_dir, tmp_path):
    model, tok = tiny
    retain_before = answer_nll(model, tok, tofu_rows["retain"])
    args = recipe_config(
        {
            "recipe": "sae",
            "sae_path": str(sae_dir),
            "sae_layer": 0,
            "output_dir": str(tmp_path),
            "save_strategy": "no",
            "learning_rate": 5e-3,
            "num_train_epochs": 10,
            "disable_tqdm": True,
        }
    )
    trainer = unlearn.get_recipe("sae")(
        model=model, args=args, forget=tofu_rows["forget"], retain=tofu_rows["retain"], processing_class=tok
    )
    assert trainer.forget_entities[0] == "Basil Mahfouz Al-Kuwaiti" and len(trainer.unknown_entities) == 16
    before = statistics.fmean(trainer.separation())
    trainer.train()
    after = statistics.fmean(trainer.separation())
    # The forget entity now reads closer to the unknown profile (measured -0.28 -> -0.11). On this 2-layer model
    # the answers themselves barely move (forget NLL flat): the redirection acts on the entity mention.
    assert after > before + 0.1, (before, after)
    assert answer_nll(trainer.model, tok, tofu_rows["retain"]) < retain_before + 0.5
    assert any("latent_redirect" in row for row in trainer.state.log_history)


def test_sae_needs_an_sae():
    with pytest.raises(UnlearnError, match="needs `sae_path`.*unlearn sae-train"):
        recipe_config({"recipe": "sae"})


@pytest.mark.slow
def test_cli_sae_train(tiny_model_dir, data_files, tmp_path):
    from test_cli import unlearn_cli

    unlearn_cli(
        "sae-train",
        "--model",
        tiny_model_dir,
        "--text",
        data_files["retain"],
        "--layer",
        "0",
        "--out",
        tmp_path / "sae",
        "--d-sae",
        "128",
        "--tokens",
        "2000",
    )
    assert (tmp_path / "sae" / "sae_weights.safetensors").is_file()
