"""TOFU's truth ratio as a Hugging Face `evaluate` metric, from per-token NLLs computed anywhere:

    import evaluate, unlearn
    tr = evaluate.load(unlearn.evaluate_module("truth_ratio"))   # offline: the module ships in the package
    tr.compute(paraphrased_nll=[...], perturbed_nll=[[...], ...])

The math is `unlearn.evaluation.metric_math` (`truth_ratio`, `truth_ratio_forget`, `truth_ratio_utility`), the
functions `unlearn eval` reports with.
"""

import datasets
import evaluate

from unlearn.evaluation.metric_math import truth_ratio, truth_ratio_forget, truth_ratio_utility
from unlearn.tofu import CITATION

_DESCRIPTION = (
    "Truth ratio (TOFU, arXiv:2401.06121): per question, R = exp(nll_paraphrased - mean_j nll_perturbed_j) from "
    "length-normalized NLLs (the geometric mean of TOFU's released code). R < 1: the model prefers the true answer."
)
_INPUTS = """
Args:
    paraphrased_nll (list of float): per-token NLL of the paraphrased true answer, per question.
    perturbed_nll (list of list of float): per-token NLLs of the perturbed (false) answers, per question.
Returns:
    truth_ratio (list of float): R per question.
    forget (float): mean of min(R, 1/R), the forget-set aggregate (1: true and false are indistinguishable).
    utility (float): mean of max(0, 1 - R), the retain-set aggregate of TOFU's model utility.
"""


class TruthRatio(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "paraphrased_nll": datasets.Value("float64"),
                    "perturbed_nll": datasets.Sequence(datasets.Value("float64")),
                }
            ),
        )

    def _compute(self, paraphrased_nll, perturbed_nll):
        ratios = truth_ratio(paraphrased_nll, perturbed_nll)
        return {
            "truth_ratio": ratios.tolist(),
            "forget": truth_ratio_forget(ratios),
            "utility": truth_ratio_utility(ratios),
        }
