"""A sparse weight delta: a run that changes a few elements of the base's weights, stored as those elements.

Training-free recipes (`ssd`) change individual weights in place, which an adapter cannot express and a full copy
of the model stores at the cost of the whole model (540 MB for SmolLM2-135M in float32) to record a change to a
small fraction of its elements. The run directory holds instead

- `sparse_delta.safetensors`: for each changed parameter `name`, `name.index` (the flat positions, int64) and
  `name.value` (the new values there);
- `delta_config.json`: `base_model_name_or_path`, the recipe, and the count of elements changed.

`unlearn.loading.load_model_or_adapter` loads such a directory as the base with the delta applied, so `unlearn
eval`, the attacks and the benchmark read it like any other run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import UnlearnError
from .rundir import write_atomic

DELTA_FILE = "sparse_delta.safetensors"
DELTA_CONFIG = "delta_config.json"


def save_delta(out: str | Path, changes: dict[str, tuple[torch.Tensor, torch.Tensor]], meta: dict) -> None:
    """Write `changes` ({parameter name: (flat indices, new values)}) and `meta` into the directory `out`."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (index, value) in changes.items():
        tensors[f"{name}.index"] = index.to(torch.int64).contiguous().cpu()
        tensors[f"{name}.value"] = value.contiguous().cpu()
    tmp = out / (DELTA_FILE + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(out / DELTA_FILE)
    n = sum(len(i) for i, _ in changes.values())
    write_atomic(out / DELTA_CONFIG, json.dumps({**meta, "changed_elements": n}, indent=2))


def is_delta_dir(path: str | Path) -> bool:
    return (Path(path) / DELTA_CONFIG).is_file() and (Path(path) / DELTA_FILE).is_file()


def delta_base(path: str | Path) -> str:
    base = json.loads((Path(path) / DELTA_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise UnlearnError(f"`{Path(path) / DELTA_CONFIG}` does not name its base model (`base_model_name_or_path`).")
    return base


@torch.no_grad()
def apply_delta(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Write the delta stored in `path` into `model`'s weights (in place); returns `model`."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(path) / DELTA_FILE))
    params = dict(model.named_parameters())
    names = {k.rsplit(".", 1)[0] for k in tensors}
    missing = sorted(names - set(params))
    if missing:
        raise UnlearnError(
            f"The weight delta in `{path}` changes parameters the model does not have ({missing[:3]}...): it was "
            "made on another base model than the one it is being applied to."
        )
    for name in names:
        p = params[name]
        flat = p.data.view(-1)
        flat[tensors[f"{name}.index"].to(p.device)] = tensors[f"{name}.value"].to(p.device, p.dtype)
    return model
