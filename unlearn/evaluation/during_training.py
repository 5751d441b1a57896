"""Evaluation during training: the run's `eval_suite` at every evaluation the Trainer schedules (`eval_strategy`,
`eval_steps`), so that the Trainer's own machinery keeps the best checkpoint (`metric_for_best_model`,
`load_best_model_at_end`) and training can stop once the forget target is met.

Each evaluation logs every suite metric as `eval_<name>`. With `eval_utility_floor` (a fraction of the model
utility before unlearning, measured once at the start and kept in `output_dir/eval_start.json` so that a resumed run
compares with the same figure) it also logs

    eval_utility_ratio            = model_utility / model_utility before unlearning
    eval_forget_quality_at_floor  = forget_quality where eval_utility_ratio >= eval_utility_floor, else 0

so that `metric_for_best_model: forget_quality_at_floor` keeps the best forgetting that kept its utility.
`stop_at_forget_quality` ends training at the first evaluation whose forget quality reaches it with the utility
above the floor.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..errors import UnlearnError

logger = logging.getLogger(__name__)

START_FILE = "eval_start.json"


class SuiteEvaluation(TrainerCallback):
    """Runs the suite for `UnlearnTrainer.evaluate`, records the utility baseline, and stops training early."""

    def __init__(self, args, tokenizer):
        from .metrics import METRICS
        from .suite import load_suite

        self.args, self.tokenizer = args, tokenizer
        self.params = dict(args.eval_params or {})
        suite = load_suite(args.eval_suite, **self.params)
        self.skip = (
            []
            if args.eval_reference
            else [n for n, s in suite["metrics"].items() if METRICS[s["metric"]].needs_reference]
        )
        kept = [n for n in suite["metrics"] if n not in self.skip]
        needed = ["model_utility"] if args.eval_utility_floor is not None else []
        needed += ["forget_quality"] if args.stop_at_forget_quality is not None else []
        for name in needed:
            if name not in kept:
                why = " (it needs `eval_reference`)" if name in self.skip else ""
                raise UnlearnError(
                    f"Evaluation during training reads `{name}`, which suite `{args.eval_suite}` does not compute{why}."
                )
        derived = ["utility_ratio", "forget_quality_at_floor"] if args.eval_utility_floor is not None else []
        best = args.metric_for_best_model
        if best is not None and best.removeprefix("eval_") not in kept + derived:
            raise UnlearnError(
                f"`metric_for_best_model` {best!r} is not a metric of suite `{args.eval_suite}`; "
                f"choose from {', '.join(kept + derived)}."
            )
        self.start_utility: float | None = None

    def _evaluate(self, model) -> dict[str, float]:
        from .runner import evaluate

        result = evaluate(
            model,
            self.tokenizer,
            suite=self.args.eval_suite,
            reference=self.args.eval_reference,
            skip=self.skip,
            **self.params,
        )
        return result.summary()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """The utility before unlearning: this model at step 0, or what a resumed run recorded at its start."""
        if args.eval_utility_floor is None or self.start_utility is not None:
            return
        path = Path(args.output_dir) / START_FILE
        if path.is_file():
            self.start_utility = json.loads(path.read_text())["model_utility"]
            return
        if state.global_step > 0:
            raise UnlearnError(
                f"Resuming at step {state.global_step} with `eval_utility_floor`, but `{path}` (the "
                "utility before unlearning, written at the start) is missing. Start the run again."
            )
        from ..adapter import reference_mode

        with reference_mode(model):  # step 0: the reference is the model as it was handed over
            self.start_utility = self._evaluate(model)["model_utility"]
        if args.process_index == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"model_utility": self.start_utility}))

    def metrics(self, model, prefix: str = "eval") -> dict[str, float]:
        values = self._evaluate(model)
        if self.args.eval_utility_floor is not None:
            ratio = values["model_utility"] / self.start_utility if self.start_utility else 0.0
            values["utility_ratio"] = ratio
            fq = values.get("forget_quality", 0.0)
            values["forget_quality_at_floor"] = fq if ratio >= self.args.eval_utility_floor else 0.0
        return {f"{prefix}_{k}": float(v) for k, v in values.items()}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        target = args.stop_at_forget_quality
        if target is None or not metrics or "eval_forget_quality" not in metrics:
            return
        floor_ok = args.eval_utility_floor is None or metrics["eval_utility_ratio"] >= args.eval_utility_floor
        if metrics["eval_forget_quality"] >= target and floor_ok:
            logger.info(
                "Step %d: forget quality %.3g >= %.3g with utility above its floor; stopping.",
                state.global_step,
                metrics["eval_forget_quality"],
                target,
            )
            control.should_training_stop = True

    @staticmethod
    def summary(state) -> dict[str, Any]:
        """What run.json records of the evaluations: the best metric and the step it came from."""
        evals = [row for row in state.log_history if any(k.startswith("eval_") for k in row)]
        return {"evaluations": len(evals), "best_metric": state.best_metric, "best_global_step": state.best_global_step}
