"""The shipped recipes' names, papers and data needs, read from their source files without importing them.

`unlearn recipes` prints this: importing the recipes imports the training stack (torch, transformers, peft, trl),
which takes seconds; the facts it prints are literals in each recipe class (`_name`, `_paper`, `data_needs`).
`tests/test_recipes.py` checks that the catalogue says what the imported registry says.
"""

from __future__ import annotations

import ast
from importlib import resources
from typing import Any

FIELDS = ("_name", "_paper", "data_needs")


def paper_title(p: dict[str, str] | None) -> str:
    """`Title (arXiv:id)` of a recipe's `_paper`."""
    p = p or {}
    return f"{p.get('title', '')} (arXiv:{p['id']})" if p.get("id") else p.get("title", "")


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
            missing = [f for f in FIELDS if f not in values]
            if missing:
                raise ValueError(f"{path.name}: recipe class {node.name} does not set {missing} as literals.")
            out.append(
                {
                    "name": values["_name"],
                    "paper": paper_title(values["_paper"]),
                    "data_needs": values["data_needs"],
                    "module": f"unlearn.recipes.{path.name.removesuffix('.py')}",
                }
            )
    return sorted(out, key=lambda r: r["name"])
