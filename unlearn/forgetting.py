"""`unlearn.forget`: from a forget set (`unlearn.run.forget`) or from a target to probe the model for
(`unlearn.targets.forget_target`). The one entry point sits above both, so neither imports the other."""

from __future__ import annotations

import os
from typing import Any

from .errors import UnlearnError


def forget(
    model,
    tokenizer,
    forget: Any = None,
    retain: Any = None,
    recipe: str | None = None,
    output_dir: str | os.PathLike | None = None,
    target: str | None = None,
    request: str | None = None,
    **overrides: Any,
):
    """Unlearn `forget` from an already loaded model; returns the `PeftModel` (or the model, with `adapter="none"`).

    `overrides` are config keys of the recipe (`unlearn recipes` lists them; e.g. `learning_rate=1e-4`). With
    `output_dir`, the run directory is written as by the CLI; without it, nothing is saved. `recipe` defaults to
    `ga`. Instead of a forget set, a `target` ("Harry Potter") or a `request` ("forget everything about Harry
    Potter's friends"): the forget, neighbor and retain sets are built by probing the model (`unlearn.targets`,
    written to `output_dir/target/`), and the recipe defaults to the demo's.
    """
    if target is not None or request is not None:
        if forget is not None or retain is not None:
            raise UnlearnError(
                "Give either a forget set (`forget`, `retain`) or a `target`/`request` to build one from, not both."
            )
        from .targets import forget_target

        return forget_target(model, tokenizer, target, request, recipe=recipe, output_dir=output_dir, **overrides).model
    from .run import forget as forget_data

    return forget_data(model, tokenizer, forget, retain, recipe=recipe, output_dir=output_dir, **overrides)
