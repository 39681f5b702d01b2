"""``tailfuse sweep``: one recipe over several values of one key, and several seeds.

Runs live in ``OUT/<key>=<value>/seed<k>``; a finished run (its ``results.json``) of
the same resolved recipe is reused (one of other overrides is refused) and an interrupted
one resumed, so a sweep can be re-run to complete it. A
stage-2 recipe whose stage-1 run is not named gets one shared stage-1 run in
``OUT/stage1`` (and ``OUT/stage1_<name>`` for each auxiliary model, as FFN's CE
backbone), trained once, then reused by every value and seed.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from tailfuse.config import RunConfig, check_path_name, config_to_dict, load_recipe
from tailfuse.engine.trainer import RESUMABLE_CHANGES, config_differences, train
from tailfuse.errors import ConfigError, TailfuseError
from tailfuse.eval.sweep_report import run_row, write_sweep_report
from tailfuse.files import read_json, read_yaml


def run_sweep(
    recipe: str,
    parameter: str,
    values: list[str],
    seeds: list[int],
    out_dir: str | Path,
    overrides: list[str] | None = None,
) -> list[dict]:
    """Train every (value, seed) pair and write the sweep table and plot; returns the summary."""
    out_dir = Path(out_dir)
    overrides = list(overrides or [])
    command = " ".join(
        [
            "tailfuse sweep",
            shlex.quote(recipe),
            *map(shlex.quote, overrides),
            "--param",
            parameter,
            "--values",
            *values,
            "--seeds",
            *map(str, seeds),
            "--out",
            str(out_dir),
        ]
    )
    base = load_recipe(recipe, overrides)
    if base.init is not None:
        if not base.init.checkpoint and not base.init.run_dir:
            overrides.append(f"init.run_dir={out_dir / 'stage1'}")
        for name, source in base.init.auxiliary.items():
            if not source.checkpoint and not source.run_dir:
                overrides.append(f"init.auxiliary.{name}.run_dir={out_dir / f'stage1_{name}'}")
    for value in values:  # validate every value before the first run starts
        try:
            check_path_name(f"{parameter}={value}", "sweep value")
        except ValueError as error:
            raise ConfigError(str(error)) from None
        load_recipe(recipe, [*overrides, f"{parameter}={value}"])
    rows = []
    for value in values:
        for seed in seeds:
            run_dir = out_dir / f"{parameter}={value}" / f"seed{seed}"
            config = load_recipe(recipe, [*overrides, f"{parameter}={value}", f"train.seed={seed}"])
            if (run_dir / "results.json").exists():
                results = _finished_results(run_dir, config)
            else:
                resume = (run_dir / "checkpoints" / "last.pt").exists()
                results = train(config, run_dir, resume=resume)
            rows.append(run_row(value, seed, results))
            print(f"{parameter}={value} seed {seed}: top-1 {rows[-1]['all']:.2f}")
    return write_sweep_report(out_dir, recipe, parameter, rows, command)


def _finished_results(run_dir: Path, config: RunConfig) -> dict:
    """A finished run's results, only when it ran exactly this command's recipe.

    A sweep re-run with other overrides would otherwise label old numbers with the new
    command (issue 10 item 4).
    """
    try:
        saved = read_yaml(run_dir / "config.yaml", "the run configuration")
        results = read_json(run_dir / "results.json", "the run's results")
    except TailfuseError as error:
        raise TailfuseError(f"cannot reuse the finished run in {run_dir}: {error}") from None
    if not isinstance(saved, dict):
        raise TailfuseError(
            f"cannot reuse the finished run in {run_dir}: its config.yaml is not a recipe"
        )
    differences = [
        key
        for key in config_differences(saved, config_to_dict(config))
        if key not in RESUMABLE_CHANGES
    ]
    if differences:
        raise TailfuseError(
            f"{run_dir} holds a finished run of another recipe (differs in "
            f"{', '.join(differences[:5])}); use another sweep --out for other "
            "overrides, or remove that run"
        )
    return results
