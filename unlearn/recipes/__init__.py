"""The recipes: every shipped one imported (each registers itself in `registry.RECIPES`), and a recipe's config
from flat values (`recipe_config`) or from a recipe file (`load_config`).

Adding a recipe: DEVELOPERS.md, "Adding a recipe" (a config dataclass with the paper's defaults and a trainer that
supplies `forget_loss` and, where it has them, `extra_losses`; `@register`; import it below).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..config import UnlearnConfig, build_config
from ..errors import UnlearnError
from .registry import RECIPES, get_recipe, register  # noqa: F401  (the registry's public names live here too)


def recipe_config(values: dict[str, Any]) -> UnlearnConfig:
    """The config of recipe `values["recipe"]` (default `ga`) from flat `values`, unknown keys refused."""
    return build_config(values, get_recipe(values.get("recipe", "ga")).config_class)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> UnlearnConfig:
    """Read a recipe YAML file (a path, or a shipped file by name), apply overrides, return the recipe's config."""
    from ..resources import available, find_shipped

    found = find_shipped("recipes", path)
    if found is None:
        raise UnlearnError(
            f"Config file `{path}` does not exist, and no shipped recipe file has that name. The "
            f"shipped ones (by name or as recipes/NAME.yaml): {', '.join(available('recipes'))}."
        )
    values = yaml.safe_load(found.read_text()) or {}
    if not isinstance(values, dict):
        raise UnlearnError(f"Config file `{found}` must hold a mapping of key: value, got {type(values).__name__}.")
    values.update(overrides or {})
    return recipe_config(values)


from . import ga, graddiff, grpo, gslora, ickul, idk, idkdpo, kif, npo, reglora, rmu, sae, simnpo, ssd, undial  # noqa: E402,F401  (each registers itself)
