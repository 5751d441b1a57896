"""The recipe registry: name -> recipe class. Recipe modules register themselves with `@register`; `unlearn.recipes`
imports every shipped one, so the registry is full once that package is imported.

A recipe is a `transformers.Trainer` that satisfies `Recipe`: most are `UnlearnTrainer` subclasses, and GRPO is
TRL's `GRPOTrainer` composed with our data handling; `unlearn.run` builds and runs either the same way.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from ..config import UnlearnConfig
from ..errors import UnlearnError, unknown_name


@runtime_checkable
class Recipe(Protocol):
    """What `unlearn.run` needs of a recipe class: its name, paper, config class and data (`load_data`: the records,
    checked, without a model), and a Trainer built from (model, args, forget, retain, processing_class) whose
    `train()` trains the adapter and `save_model()` saves it."""

    _name: ClassVar[str]
    _paper: ClassVar[dict[str, str]]
    config_class: ClassVar[type[UnlearnConfig]]
    data_needs: ClassVar[str]

    def __init__(
        self, model: Any, args: Any, forget: Any, retain: Any = None, processing_class: Any = None, **kwargs: Any
    ) -> None: ...

    @classmethod
    def load_data(cls, args: Any, forget: Any, retain: Any = None) -> tuple[Any, Any]: ...

    def train(self, *args: Any, **kwargs: Any) -> Any: ...

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None: ...


RECIPES: dict[str, type[Recipe]] = {}
_REQUIRED = ("_name", "_paper", "config_class", "data_needs", "load_data", "train", "save_model")


def register(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: add a recipe under its `_name`; a name already taken is refused, not overwritten."""
    missing = [a for a in _REQUIRED if not hasattr(cls, a)]
    if missing:
        raise UnlearnError(
            f"Recipe class {cls.__qualname__} lacks {missing}: a recipe sets `_name`, `_paper`, "
            "`config_class` and `data_needs`, has `load_data`, and is a Trainer (see `unlearn.recipes.registry.Recipe`)."
        )
    if cls._name in RECIPES and RECIPES[cls._name] is not cls:
        raise UnlearnError(
            f"A recipe named `{cls._name}` is already registered ({RECIPES[cls._name].__module__}."
            f"{RECIPES[cls._name].__qualname__}); give {cls.__qualname__} another `_name`, or "
            "`del RECIPES[name]` first to replace it on purpose."
        )
    RECIPES[cls._name] = cls
    return cls


def get_recipe(name: str) -> type[Recipe]:
    if name not in RECIPES:
        raise UnlearnError(unknown_name("recipe", name, list(RECIPES)))
    return RECIPES[name]
