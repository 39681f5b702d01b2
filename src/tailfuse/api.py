"""The Python API: everything the CLI does, callable from a script or notebook."""

from __future__ import annotations

from pathlib import Path

from tailfuse.config import RunConfig, load_recipe
from tailfuse.data.prepare import plan_subset


def _config(
    recipe: str | Path | RunConfig, overrides: list[str] | None, reach_earlier_stages: bool = False
) -> RunConfig:
    if isinstance(recipe, RunConfig):
        if overrides:
            from tailfuse.config import (
                apply_overrides,
                build_config,
                config_to_dict,
                pass_overrides_to_earlier_stages,
            )

            resolved = apply_overrides(config_to_dict(recipe), overrides)
            if reach_earlier_stages:
                resolved = pass_overrides_to_earlier_stages(resolved, overrides)
            return build_config(resolved)
        return recipe
    return load_recipe(recipe, overrides, reach_earlier_stages)


def train(
    recipe: str | Path | RunConfig,
    out: str | Path,
    overrides: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict:
    """Train a recipe (name, path or :class:`RunConfig`) into the run directory
    ``out``; returns results.

    ``out`` holding an earlier run is refused unless ``resume`` (continue it) or
    ``overwrite`` (delete its files first). The overrides also reach the stage-1 run a stage-2
    recipe trains (all but ``method.*``, ``init.*``, ``name``:
    :func:`tailfuse.config.pass_overrides_to_earlier_stages`).
    """
    from tailfuse.engine.trainer import train as run_training

    return run_training(
        _config(recipe, overrides, reach_earlier_stages=True),
        out,
        resume=resume,
        overwrite=overwrite,
    )


def evaluate(
    checkpoint: str | Path,
    out: str | Path | None = None,
    overrides: list[str] | None = None,
    overwrite: bool = False,
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


def bench(
    recipe: str | Path | RunConfig,
    overrides: list[str] | None = None,
    steps: int | None = None,
    rounds: int = 3,
) -> dict:
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
    """Run ``recipe`` for each value of the dotted key ``parameter`` and each seed;
    table + plot in ``out``."""
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
    """Run each row (``RECIPE`` or ``LABEL=RECIPE[:overrides]``) for each seed;
    one table + plot in ``out``."""
    from tailfuse.engine.compare import parse_row, run_compare

    command = "tailfuse compare " + " ".join(repr(row) for row in rows)
    return run_compare(
        [parse_row(row) for row in rows], seeds, out, overrides, published, jobs, threads, command
    )


def predict(
    checkpoint: str | Path,
    paths: list[str],
    top_k: int = 5,
    batch_size: int = 64,
    device: str = "auto",
) -> list[dict]:
    """Top-k class names and probabilities for image files, folders or globs,
    by the method's own prediction."""
    from tailfuse.engine.predict import Predictor, expand_image_paths

    predictor = Predictor.from_checkpoint(checkpoint, device)
    return predictor.predict_files(expand_image_paths(paths), top_k=top_k, batch_size=batch_size)


def export(
    checkpoint: str | Path,
    out: str | Path,
    format: str = "onnx",
    check_images: list[str] | None = None,
) -> dict:
    """Export the method's prediction path (ONNX or TorchScript) with its preprocessing
    metadata, parity-checked."""
    from tailfuse.engine.export import export_checkpoint

    return export_checkpoint(checkpoint, out, format, check_images)
