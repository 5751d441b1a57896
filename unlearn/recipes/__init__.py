"""The recipe registry: name -> `UnlearnTrainer` subclass.

Adding a recipe: write `unlearn/recipes/<name>.py` with a config dataclass (literature defaults) and a trainer
subclass that sets `_name`, `_paper`, `config_class` and overrides `forget_loss`; decorate it with `@register`;
import it below; add `recipes/<name>.yaml`; add it to `TEST_CASES` in `tests/test_recipes.py`.
"""

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


from . import ga, graddiff, grpo, gslora, ickul, idk, npo, reglora, rmu, sae, simnpo  # noqa: E402,F401  (each registers itself)
