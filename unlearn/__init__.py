"""unlearn: make a Hugging Face causal LM forget, with a PEFT adapter, and measure that it did."""

import logging

# bitsandbytes (imported by peft) warns at import, on CPUs with AVX512-BF16, that an optional kernel package from
# the Hub is missing; the kernel only serves the CPU weight repacking that `run._keep_cpu_4bit_layout` turns off.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

# The public names, imported on first use (PEP 562): `import unlearn` and the command line's `--help`/`--version`
# load no training stack (torch, transformers, peft, trl); `from unlearn import forget` loads what `forget` needs.
_EXPORTS = {
    "attack": ".attacks",
    "benchmark": ".benchmarking",
    "sweep": ".sweeping",
    "UnlearnConfig": ".config",
    "load_config": ".recipes",
    "NonFiniteLossError": ".errors",
    "UnlearnError": ".errors",
    "EvalResult": ".evaluation",
    "compare": ".evaluation",
    "evaluate": ".evaluation",
    "evaluate_module": ".resources",
    "finetune": ".finetuning",
    "push_to_hub": ".hub",
    "InContextUnlearner": ".incontext",
    "icul": ".incontext",
    "RECIPES": ".recipes",
    "get_recipe": ".recipes",
    "forget": ".forgetting",
    "load_model_and_tokenizer": ".loading",
    "sequential_forget": ".sequential",
    "load_tofu": ".data",
    "UnlearnTrainer": ".trainer",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'unlearn' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__version__ = "0.1.0"

__all__ = [
    "InContextUnlearner",
    "icul",
    "attack",
    "benchmark",
    "EvalResult",
    "compare",
    "evaluate",
    "evaluate_module",
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
    "sweep",
]
