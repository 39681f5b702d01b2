"""Training methods. Importing this package registers every method and its options."""

from tailfuse.methods import bbn, cmo, decoupled, erm, ffn, gcl, ifl, reslt, ride, tade  # noqa: F401  (registers the methods)  # noqa: F401  (multi-expert methods)
from tailfuse.methods.base import METHODS, Batch, Method, StepContext, build_method, register_method

__all__ = ["METHODS", "Batch", "Method", "StepContext", "build_method", "register_method"]
