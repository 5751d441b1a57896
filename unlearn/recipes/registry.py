"""The recipe registry: name -> `UnlearnTrainer` subclass. Recipe modules register themselves with `@register`;
`unlearn.recipes` imports every shipped one, so the registry is full once that package is imported."""

from __future__ import annotations

from ..errors import UnlearnError, unknown_name
from ..trainer import UnlearnTrainer

RECIPES: dict[str, type[UnlearnTrainer]] = {}


def register(cls: type[UnlearnTrainer]) -> type[UnlearnTrainer]:
    """Class decorator: add a recipe under its `_name`; a name already taken is refused, not overwritten."""
    if cls._name in RECIPES and RECIPES[cls._name] is not cls:
        raise UnlearnError(
            f"A recipe named `{cls._name}` is already registered ({RECIPES[cls._name].__module__}."
            f"{RECIPES[cls._name].__qualname__}); give {cls.__qualname__} another `_name`, or "
            "`del RECIPES[name]` first to replace it on purpose."
        )
    RECIPES[cls._name] = cls
    return cls


def get_recipe(name: str) -> type[UnlearnTrainer]:
    if name not in RECIPES:
        raise UnlearnError(unknown_name("recipe", name, list(RECIPES)))
    return RECIPES[name]
