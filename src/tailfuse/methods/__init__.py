"""Training methods. Importing this package registers every method and its options."""

from tailfuse.methods import erm  # noqa: F401  (registers "erm")
from tailfuse.methods.base import METHODS, Batch, Method, StepContext, build_method, register_method

__all__ = ["METHODS", "Batch", "Method", "StepContext", "build_method", "register_method"]
