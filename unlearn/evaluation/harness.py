"""Standard benchmarks (MMLU, WMDP, ...) through lm-evaluation-harness, on a model already in memory.

Optional: `pip install 'unlearn-toolkit[lm-eval]'`. Tasks come from the harness registry (which downloads their
data from the Hub) or from a local folder of task YAML files (`include_path`), which works offline.
"""

from __future__ import annotations

import os

from ..errors import UnlearnError, require


def run_lm_eval(
    model,
    tokenizer,
    tasks: list[str],
    include_path: str | os.PathLike | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
) -> dict[str, dict[str, float]]:
    """Task -> {metric: value} from `lm_eval.simple_evaluate` on `model` (a transformers or PEFT model)."""
    lm_eval = require("lm_eval", "lm-eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path)) if include_path else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UnlearnError(
            f"lm-eval does not know task(s) {unknown}; check the names or `include_path` ({include_path or 'none'})."
        )
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, num_fewshot=num_fewshot)
    return {
        task: {k: float(v) for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for task, res in out["results"].items()
    }
