"""The Python API: everything the CLI does, callable from a script or notebook."""

from __future__ import annotations

from pathlib import Path

from tailfuse.config import RunConfig, load_recipe
from tailfuse.data.prepare import plan_subset


def _config(recipe: str | Path | RunConfig, overrides: list[str] | None) -> RunConfig:
    if isinstance(recipe, RunConfig):
        if overrides:
            from tailfuse.config import apply_overrides, build_config, config_to_dict

            return build_config(apply_overrides(config_to_dict(recipe), overrides))
        return recipe
    return load_recipe(recipe, overrides)


def train(
    recipe: str | Path | RunConfig,
    out: str | Path,
    overrides: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict:
    """Train a recipe (name, path or :class:`RunConfig`) into the run directory ``out``; returns results.

    ``out`` holding an earlier run is refused unless ``resume`` (continue it) or
    ``overwrite`` (delete its files first).
    """
    from tailfuse.engine.trainer import train as run_training

    return run_training(_config(recipe, overrides), out, resume=resume, overwrite=overwrite)


def evaluate(
    checkpoint: str | Path, out: str | Path | None = None, overrides: list[str] | None = None, overwrite: bool = False
) -> dict:
    """Evaluate a checkpoint (or a run directory's selected one) on its recipe's test set.

    Writes results.json, report.md and the plot to ``out``; a training run's directory or
    another checkpoint's report there is refused unless ``overwrite``.
    """
    from tailfuse.engine.trainer import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, out, overrides, overwrite=overwrite)


def data_summary(recipe: str | Path | RunConfig, overrides: list[str] | None = None) -> dict:
    """Per-class counts, total, groups and subset checksum of a recipe's training data."""
    return plan_subset(_config(recipe, overrides).data).summary()


def bench(recipe: str | Path | RunConfig, overrides: list[str] | None = None, steps: int | None = None, rounds: int = 3) -> dict:
    """End-to-end training throughput against the model-only loop, measured side by side."""
    from tailfuse.engine.benchmark import run_benchmark

    return run_benchmark(_config(recipe, overrides), steps=steps, rounds=rounds)


def sweep(
    recipe: str,
    parameter: str,
    values: list[str],
    seeds: list[int],
    out: str | Path,
    overrides: list[str] | None = None,
) -> list[dict]:
    """Run ``recipe`` for each value of the dotted key ``parameter`` and each seed; table + plot in ``out``."""
    from tailfuse.engine.sweep import run_sweep

    return run_sweep(recipe, parameter, [str(v) for v in values], seeds, out, overrides)


def compare(
    rows: list[str],
    seeds: list[int],
    out: str | Path,
    overrides: list[str] | None = None,
    published: str | Path | None = None,
    jobs: int = 1,
    threads: int | None = None,
) -> list[dict]:
    """Run each row (``RECIPE`` or ``LABEL=RECIPE[:overrides]``) for each seed; one table + plot in ``out``."""
    from tailfuse.engine.compare import parse_row, run_compare

    command = "tailfuse compare " + " ".join(repr(row) for row in rows)
    return run_compare([parse_row(row) for row in rows], seeds, out, overrides, published, jobs, threads, command)
