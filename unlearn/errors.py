"""Errors the toolkit raises on purpose, and the helpers that phrase them.

Every message names the problem, shows the value received, and says the fix.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path


class UnlearnError(ValueError):
    """Bad input found before training starts: a config, data, model or output-directory problem."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the step that did it is never applied."""

    def __init__(self, step: int, saved_to: str | None = None):
        self.step = step
        self.saved_to = saved_to
        where = f" The last good adapter (before step {step}) is saved in `{saved_to}`." if saved_to else ""
        super().__init__(
            f"Non-finite loss or gradient at optimizer step {step}; training stopped before applying it.{where} "
            "Lower `learning_rate`, set `max_grad_norm` (e.g. 1.0), or, for gradient ascent, switch to a bounded "
            "recipe such as `npo` or `simnpo`."
        )


def unknown_name(kind: str, name: str, available: list[str] | tuple[str, ...]) -> str:
    """The lm-eval-harness phrasing: "Unknown recipe 'nop'. Did you mean 'npo'? Available: ..."."""
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown {kind} {name!r}.{hint} Available: {', '.join(sorted(available))}."


def reject_unknown(keys, allowed, kind: str, where: str) -> None:
    """An error for the first of `keys` not in `allowed`, with suggestions ("In `f.yaml`: Unknown sweep key ...")."""
    for key in keys:
        if key not in allowed:
            raise UnlearnError(f"In {where}: " + unknown_name(kind, key, allowed))


def as_mapping(value, key: str, where: str) -> dict:
    """A config section as a dict: {} when left out, an error naming the key when it is not a mapping."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnlearnError(f"In {where}, `{key}` must be a mapping, got {type(value).__name__}: {value!r}.")
    return dict(value)


def read_mapping_file(path, what: str) -> dict:
    """A YAML file that must hold a mapping of key: value (`what` names it in the errors: "Sweep file")."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise UnlearnError(f"{what} `{path}` is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise UnlearnError(f"{what} `{path}` must hold a mapping of key: value, got {type(raw).__name__}.")
    return raw


def require(module: str, extra: str):
    """Import an optional dependency, or fail with the `pip install` line that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"This feature needs `{module}`, which is not installed. Install it with: "
            f"pip install 'unlearn-toolkit[{extra}]'"
        ) from e
