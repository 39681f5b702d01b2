"""Training methods. Importing this package registers every method and its options."""

# ruff: noqa: F401 - importing the method modules (multi-expert ones too) registers the methods
from tailfuse.methods import bbn, cmo, decoupled, erm, ffn, gcl, ifl, reslt, ride, tade
from tailfuse.methods.base import METHODS, Batch, Method, StepContext, build_method, register_method

__all__ = ["METHODS", "Batch", "Method", "StepContext", "build_method", "register_method"]
