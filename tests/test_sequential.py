"""Sequential forgetting: later requests do not undo earlier ones, and utility holds."""

from __future__ import annotations

import copy

import pytest
from conftest import answer_nll
from peft import PeftModel

import unlearn


@pytest.mark.parametrize("merge", [True, False])
def test_two_requests_one_after_another(tiny, tofu_rows, tmp_path, merge):
    model, tok = tiny
    first, second = tofu_rows["forget"][:4], tofu_rows["forget"][4:]
    base = [answer_nll(model, tok, first), answer_nll(model, tok, second)]
    final, history = unlearn.sequential_forget(
        copy.deepcopy(model),
        tok,
        [first, second],
        tofu_rows["retain"],
        recipe="graddiff",
        merge=merge,
        output_dir=tmp_path,
        learning_rate=5e-3,
        num_train_epochs=10,
        per_device_train_batch_size=2,
        disable_tqdm=True,
    )
    assert [h["request"] for h in history] == [0, 1] and len(history[1]["forget_nll"]) == 2
    assert history[0]["forget_nll"][0] > base[0] + 0.75
    # after the second request both requests are still forgotten, and retain holds
    assert history[1]["forget_nll"][0] > base[0] + 0.75 and history[1]["forget_nll"][1] > base[1] + 0.75
    assert history[1]["retain_nll"] < 0.5
    assert isinstance(final, PeftModel) is not merge
    assert (tmp_path / "request-0" / "run.json").is_file() and (tmp_path / "request-1" / "run.json").is_file()
