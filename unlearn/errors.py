"""Errors the toolkit raises on purpose, and the helpers that phrase them.

Every message names the problem, shows the value received, and says the fix.
"""

from __future__ import annotations

import difflib
import importlib


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


def require(module: str, extra: str):
    """Import an optional dependency, or fail with the `pip install` line that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"This feature needs `{module}`, which is not installed. Install it with: "
            f"pip install 'unlearn-toolkit[{extra}]'"
        ) from e
