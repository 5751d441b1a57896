"""`projection: gu`: the forget update is orthogonal to the recent retain gradients, and unlearning still works."""

from __future__ import annotations

import pytest
import torch
from conftest import answer_nll

import unlearn
from unlearn import UnlearnError
from unlearn.projection import project_out
from unlearn.recipes import recipe_config


def test_projection_removes_exactly_the_span():
    torch.manual_seed(0)
    history = [torch.randn(50) for _ in range(3)]
    g = torch.randn(50)
    p = project_out(g, history)
    for h in history:
        assert torch.dot(p, h).abs() < 1e-4
    # what is left is the part of g orthogonal to the span: projecting again changes nothing
    torch.testing.assert_close(project_out(p, history), p, atol=1e-5, rtol=0)
    torch.testing.assert_close(project_out(g, []), g)


def test_gu_step_is_orthogonal_to_the_retain_gradient(tiny, tofu_rows, tmp_path):
    model, tok = tiny
    before = answer_nll(model, tok, tofu_rows["forget"])
    args = recipe_config(
        {
            "recipe": "graddiff",
            "projection": "gu",
            "output_dir": str(tmp_path),
            "learning_rate": 3e-3,
            "save_strategy": "no",
            "disable_tqdm": True,
        }
    )
    trainer = unlearn.get_recipe("graddiff")(
        model=model, args=args, forget=tofu_rows["forget"], retain=tofu_rows["retain"], processing_class=tok
    )
    trainer.train()
    last = trainer.gradient_plugin.last
    cos = torch.dot(last["projected"], last["retain_grad"]) / (last["projected"].norm() * last["retain_grad"].norm())
    assert cos.abs() < 1e-4, cos
    removed = [row["gu_removed"] for row in trainer.state.log_history if "gu_removed" in row]
    assert removed and all(0.0 < r < 1.0 for r in removed)
    assert answer_nll(trainer.model, tok, tofu_rows["forget"]) > before + 0.75


def test_gu_needs_a_retain_term():
    with pytest.raises(UnlearnError, match="`projection: gu` projects against retain gradients"):
        recipe_config({"recipe": "ga", "projection": "gu"})
