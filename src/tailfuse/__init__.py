"""tailfuse: long-tailed visual recognition, reproducible from one recipe file."""

from tailfuse import methods  # noqa: F401  (registers the methods and their options)
from tailfuse.api import bench, compare, data_summary, evaluate, sweep, train
from tailfuse.config import RunConfig, load_recipe
from tailfuse.errors import TailfuseError

__version__ = "0.1.0"

__all__ = ["RunConfig", "TailfuseError", "bench", "compare", "data_summary", "evaluate", "load_recipe", "sweep", "train"]
