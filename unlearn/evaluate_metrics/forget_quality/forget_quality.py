"""TOFU's forget quality as a Hugging Face `evaluate` metric, for arrays computed anywhere:

    import evaluate, unlearn
    fq = evaluate.load(unlearn.evaluate_module("forget_quality"))   # offline: the module ships in the package
    fq.compute(predictions=model_truth_ratios, references=retain_model_truth_ratios)

The math is `unlearn.evaluation.metric_math.forget_quality`, the function `unlearn eval` reports with.
"""

import datasets
import evaluate

from unlearn.evaluation.metric_math import forget_quality
from unlearn.tofu import CITATION

_DESCRIPTION = (
    "Forget quality (TOFU, arXiv:2401.06121): the p-value of the two-sample Kolmogorov-Smirnov test between the "
    "unlearned model's per-question truth ratios on the forget set and those of a model never trained on it (the "
    "retain model). High (e.g. >= 0.05): indistinguishable from never having learned the forget set."
)
_INPUTS = """
Args:
    predictions (list of float): the unlearned model's truth ratio per forget question.
    references (list of float): the retain (reference) model's truth ratio per forget question.
Returns:
    forget_quality (float): the KS-test p-value, in [0, 1].
"""


class ForgetQuality(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        return {"forget_quality": forget_quality(predictions, references)}
