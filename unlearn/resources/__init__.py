"""Files shipped with the package: the demo's facts, refusals, and (mapped from the top of the repository by
pyproject.toml) the evaluation suites, recipe files and benchmark protocols.

`shipped(kind)` is the folder of one kind inside the installed package (a checkout's own folder under an editable
install); `find_shipped(kind, name)` resolves what a user typed: an existing path as it is, else a shipped file by
name (`npo`, `npo.yaml`, or the repository path `recipes/npo.yaml`, so that the README's commands also work from a
wheel, outside the source tree).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGES = {"suites": "unlearn.suites", "recipes": "unlearn.recipe_files", "protocols": "unlearn.protocols"}
REPO_FOLDERS = {"suites": "eval", "recipes": "recipes", "protocols": "benchmarks/protocols"}


def shipped(kind: str) -> Path:
    """The folder of the shipped `kind` (suites, recipes, protocols): a real directory (the package is installed
    unzipped, as pip does)."""
    return Path(str(resources.files(PACKAGES[kind])))


def available(kind: str) -> list[str]:
    """Names of the shipped files of `kind`, without `.yaml`."""
    return sorted(p.stem for p in shipped(kind).glob("*.yaml"))


def find_shipped(kind: str, name: str | Path) -> Path | None:
    """`name` as a path if it exists, else the shipped file it names, else None."""
    path = Path(name)
    if path.is_file():
        return path
    folder = shipped(kind)
    parts = path.parts
    prefix = Path(REPO_FOLDERS[kind]).parts
    rel = Path(*parts[len(prefix) :]) if parts[: len(prefix)] == prefix and len(parts) > len(prefix) else path
    for candidate in (folder / rel, folder / f"{rel}.yaml"):
        if candidate.is_file() and candidate.name != "__init__.py":
            return candidate
    return None


def evaluate_module(name: str) -> str:
    """The directory of the shipped Hugging Face `evaluate` module `name` (`forget_quality`, `truth_ratio`), for
    `evaluate.load(...)`: read from the installed package, so it loads offline."""
    folder = Path(str(resources.files("unlearn"))) / "evaluate_metrics"
    names = sorted(p.name for p in folder.iterdir() if (p / f"{p.name}.py").is_file())
    if name not in names:
        from ..errors import UnlearnError, unknown_name

        raise UnlearnError(unknown_name("evaluate module", name, names))
    return str(folder / name)
