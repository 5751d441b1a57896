"""unlearn: make a Hugging Face causal LM forget, with a PEFT adapter, and measure that it did."""
# ruff: noqa: E402  (a logging level is set before the imports that trigger the message)

import logging

# bitsandbytes (imported by peft) warns at import, on CPUs with AVX512-BF16, that an optional kernel package from
# the Hub is missing; the kernel only serves the CPU weight repacking that `run._keep_cpu_4bit_layout` turns off.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from .attacks import attack
from .benchmarking import benchmark
from .config import UnlearnConfig, load_config
from .errors import NonFiniteLossError, UnlearnError
from .evaluation import EvalResult, compare, evaluate
from .finetune import finetune
from .hub import push_to_hub
from .icul import InContextUnlearner, icul
from .recipes import RECIPES, get_recipe
from .run import forget, load_model_and_tokenizer
from .sequential import sequential_forget
from .tofu import load_tofu
from .trainer import UnlearnTrainer

__version__ = "0.1.0"

__all__ = [
    "InContextUnlearner",
    "icul",
    "attack",
    "benchmark",
    "EvalResult",
    "compare",
    "evaluate",
    "finetune",
    "RECIPES",
    "NonFiniteLossError",
    "UnlearnConfig",
    "UnlearnError",
    "UnlearnTrainer",
    "forget",
    "get_recipe",
    "load_config",
    "load_model_and_tokenizer",
    "load_tofu",
    "push_to_hub",
    "sequential_forget",
]
