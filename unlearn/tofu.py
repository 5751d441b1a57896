"""TOFU, "A Task of Fictitious Unlearning for LLMs" (Maini et al., 2024, arXiv:2401.06121): its splits, which
retain set pairs with which forget set, and where a split is read from (`locate`: a local directory of JSON Lines
files `<split>.jsonl`, or the Hub id `locuslab/TOFU`, where each split is a dataset config). `data.load_tofu`
loads one.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UnlearnError, unknown_name

HUB_ID = "locuslab/TOFU"
CITATION = """@article{maini2024tofu, title={TOFU: A Task of Fictitious Unlearning for LLMs},
author={Maini, Pratyush and Feng, Zhili and Schwarzschild, Avi and Lipton, Zachary C. and Kolter, J. Zico},
journal={arXiv preprint arXiv:2401.06121}, year={2024}}"""
SPLITS = (
    "forget01",
    "forget05",
    "forget10",
    "retain90",
    "retain95",
    "retain99",
    "forget01_perturbed",
    "forget05_perturbed",
    "forget10_perturbed",
    "retain_perturbed",
    "real_authors_perturbed",
    "world_facts_perturbed",
    "full",
    "real_authors",
    "world_facts",
    "holdout01",
    "holdout05",
    "holdout10",
)
# The retain set that pairs with each forget set (they partition the 4,000 QA pairs).
RETAIN_FOR = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}


def locate(split: str, source: str | Path | None = None) -> Path | str:
    """Where TOFU split `split` is read from: the `<split>.jsonl` file of a local directory, or the Hub id.

    `source` is a local directory holding `<split>.jsonl` files, or the Hub id. By default the directory named by
    `$UNLEARN_TOFU_DIR` is used when set, and the Hub (`locuslab/TOFU`) otherwise. `data.load_tofu` loads it.
    """
    if split not in SPLITS:
        raise UnlearnError(unknown_name("TOFU split", split, SPLITS))
    source = source or os.environ.get("UNLEARN_TOFU_DIR") or HUB_ID
    local = Path(source).expanduser()
    if local.is_dir():
        path = local / f"{split}.jsonl"
        if not path.is_file():
            have = sorted(p.stem for p in local.glob("*.jsonl"))
            raise UnlearnError(f"TOFU split `{split}` is not in `{local}` (found: {', '.join(have) or 'nothing'}).")
        return path
    if str(source) != HUB_ID and ("/" not in str(source) or local.suffix):
        raise UnlearnError(f"TOFU directory `{source}` does not exist.")
    return str(source)
