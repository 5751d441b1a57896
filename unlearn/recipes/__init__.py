"""The recipes: every shipped one imported (each registers itself in `registry.RECIPES`), and a recipe's config
from flat values (`recipe_config`) or from a recipe file (`load_config`).

Adding a recipe: DEVELOPERS.md, "Adding a recipe" (a config dataclass with the paper's defaults and a trainer that
supplies `forget_loss` and, where it has them, `extra_losses`; `@register`; import it below).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import UnlearnConfig, build_config
from ..precheck import read_recipe_values
from .registry import RECIPES, get_recipe, register  # noqa: F401  (the registry's public names live here too)


def recipe_config(values: dict[str, Any]) -> UnlearnConfig:
    """The config of recipe `values["recipe"]` (default `ga`) from flat `values`, unknown keys refused."""
    return build_config(values, get_recipe(values.get("recipe", "ga")).config_class)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> UnlearnConfig:
    """Read a recipe YAML file (a path, or a shipped file by name), apply overrides, return the recipe's config."""
    return recipe_config(read_recipe_values(path, overrides))


from . import ga, graddiff, grpo, gslora, ickul, idk, idkdpo, kif, npo, reglora, rmu, sae, simnpo, ssd, undial  # noqa: E402,F401  (each registers itself)
