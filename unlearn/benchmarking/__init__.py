"""The standard protocol in one call: target and retain models, each recipe x settings unlearned from the target,
evaluated against the retain model and attacked, and the results table (`unlearn benchmark PROTOCOL.yaml`)."""

from .protocol import Entry, Protocol, load_protocol
from .runner import benchmark

__all__ = ["Entry", "Protocol", "benchmark", "load_protocol"]
