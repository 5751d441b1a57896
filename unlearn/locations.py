"""Where a model or a data set is: a Hub repo id or a local path, and whether the Hub may be reached.

One answer each, used by model loading, data loading and the Hub upload alike.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")  # USER/NAME
_HUB_NAME = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")  # NAME or USER/NAME


def offline() -> bool:
    """HF_HUB_OFFLINE is set: nothing is downloaded or uploaded; Hub ids resolve from the local cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def is_hub_id(name: str | os.PathLike, namespaced: bool = False) -> bool:
    """The one answer to "Hub id or local path?": `name` is shaped like a Hub repo id (`NAME` or `USER/NAME`; with
    `namespaced`, `USER/NAME` only) and is not an existing local path. `./x`, `/x`, `~/x` and `a/b/c` are paths."""
    name = str(name)
    shape = HUB_ID if namespaced else _HUB_NAME
    return bool(shape.match(name)) and not Path(name).expanduser().exists()
