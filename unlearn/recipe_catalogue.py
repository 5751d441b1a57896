"""The shipped recipes' names, papers and data needs, read from their source files without importing them.

`unlearn recipes` prints this: importing the recipes imports the training stack (torch, transformers, peft, trl),
which takes seconds; the facts it prints are literals in each recipe class (`_name`, `_paper`, `data_needs`).
`config_fields` reads the same way the keys each recipe's config accepts and their literal defaults, from the config
classes' sources and the installed transformers' `TrainingArguments`, so that `unlearn.precheck` refuses an
unknown key before the training stack is imported. `tests/test_recipes.py` checks both against the imported classes.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from importlib import resources
from pathlib import Path
from typing import Any

FIELDS = ("_name", "_paper", "data_needs")
NOT_LITERAL = object()  # a field whose default is computed (a call, a name): known to exist, its value not read here


def paper_title(p: dict[str, str] | None) -> str:
    """`Title (arXiv:id)` of a recipe's `_paper`."""
    p = p or {}
    return f"{p.get('title', '')} (arXiv:{p['id']})" if p.get("id") else p.get("title", "")


@functools.cache
def catalogue() -> list[dict[str, Any]]:
    """One entry per `@register`-decorated class of `unlearn/recipes/*.py`: name, paper, data_needs, module."""
    out = []
    for path in sorted(resources.files("unlearn").joinpath("recipes").iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".py") or path.name.startswith("_") or path.name == "registry.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ClassDef):
                continue
            if not any(isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list):
                continue
            values = {
                a.targets[0].id: ast.literal_eval(a.value)
                for a in node.body
                if isinstance(a, ast.Assign) and isinstance(a.targets[0], ast.Name) and a.targets[0].id in FIELDS
            }
            config = [a.value.id for a in node.body if _assigns(a, "config_class") and isinstance(a.value, ast.Name)]
            missing = [f for f in FIELDS if f not in values]
            if missing:
                raise ValueError(f"{path.name}: recipe class {node.name} does not set {missing} as literals.")
            out.append(
                {
                    "name": values["_name"],
                    "paper": paper_title(values["_paper"]),
                    "data_needs": values["data_needs"],
                    "module": f"unlearn.recipes.{path.name.removesuffix('.py')}",
                    "config_class": config[0] if config else None,
                }
            )
    return sorted(out, key=lambda r: r["name"])


def _assigns(node: ast.stmt, name: str) -> bool:
    return isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name


def config_fields(recipe: str) -> dict[str, Any] | None:
    """The keys recipe `recipe`'s config accepts, each with its default where that is a literal (else
    `NOT_LITERAL`); None when its config class derives from a class these sources do not hold (GRPO's, from TRL),
    or a source cannot be read: callers then leave the check to the imported config."""
    entry = next((r for r in catalogue() if r["name"] == recipe), None)
    classes = _config_classes()
    if entry is None or entry["config_class"] not in classes:
        return None
    try:
        return _fields_of(entry["config_class"], classes)
    except KeyError:  # a base class outside the parsed sources
        return None


def _fields_of(name: str, classes: dict[str, tuple[list[str], dict[str, Any]]]) -> dict[str, Any]:
    bases, own = classes[name]
    out: dict[str, Any] = {}
    for base in reversed(bases):  # the first base wins, as in a dataclass's field order
        out.update(_fields_of(base, classes))
    out.update(own)
    return out


@functools.cache
def _config_classes() -> dict[str, tuple[list[str], dict[str, Any]]]:
    """Dataclass name -> (base names, {field: literal default}) from unlearn/config.py, the recipe modules and the
    installed transformers' training_args.py (read as text: nothing is imported)."""
    package = resources.files("unlearn")
    sources = [package.joinpath("config.py"), *package.joinpath("recipes").iterdir()]
    spec = importlib.util.find_spec("transformers")  # locates the package without importing it
    if spec and spec.submodule_search_locations:
        sources.append(Path(next(iter(spec.submodule_search_locations)), "training_args.py"))
    out = {}
    for path in sources:
        if not path.name.endswith(".py"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and (node.name.endswith("Config") or node.name == "TrainingArguments"):
                bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
                out[node.name] = (bases, dict(_dataclass_fields(node)))
    return out


def _dataclass_fields(node: ast.ClassDef):
    for item in node.body:
        if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
            continue
        if "ClassVar" in ast.unparse(item.annotation):
            continue
        value = item.value
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "field":
            keywords = {k.arg: k.value for k in value.keywords}
            if isinstance(keywords.get("init"), ast.Constant) and keywords["init"].value is False:
                continue
            value = keywords.get("default")
        try:
            yield item.target.id, ast.literal_eval(value) if value is not None else NOT_LITERAL
        except ValueError:
            yield item.target.id, NOT_LITERAL
