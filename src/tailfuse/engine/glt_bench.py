"""``tailfuse glt-bench``: one recipe on Train-GLT and Train-CBL over seeds,
as the three GLT protocols.

A Train-GLT run gives CLT (Test-CBL) and GLT (Test-GBL); a Train-CBL run gives ALT
(Test-GBL) (spec glt_ifl §1.2). Each training set is a sweep over seeds in ``OUT/<glt|cbl>``
(runs in ``OUT/glt/data.glt.train_set=glt/seed<k>``; a stage-2 recipe gets its own stage-1
run per training set, ``OUT/glt/stage1``), so an interrupted benchmark resumes; the
protocol table, mean ± std over seeds, is written to ``OUT/glt_table.{md,json}``.
"""

from __future__ import annotations

from pathlib import Path

from tailfuse.engine.sweep import run_sweep
from tailfuse.eval.glt_table import bench_summary, write_glt_table
from tailfuse.eval.report import json_text
from tailfuse.files import read_json, write_text_atomically

TRAIN_SET_KEY = "data.glt.train_set"


def run_glt_benchmark(
    recipe: str,
    seeds: list[int],
    out_dir: str | Path,
    overrides: list[str] | None = None,
    label: str | None = None,
) -> dict:
    """Train ``recipe`` on both training sets for each seed; returns the protocol summary."""
    out_dir = Path(out_dir)
    runs = {}
    for train_set in ("glt", "cbl"):
        run_sweep(recipe, TRAIN_SET_KEY, [train_set], seeds, out_dir / train_set, overrides)
        sweep_dir = out_dir / train_set / f"{TRAIN_SET_KEY}={train_set}"
        runs[train_set] = [
            read_json(sweep_dir / f"seed{seed}" / "results.json", "the run's results")
            for seed in seeds
        ]
    summary = bench_summary(label or recipe, runs)
    write_text_atomically(out_dir / "glt_summary.json", json_text(summary, indent=2))
    write_glt_table([summary], out_dir / "glt_table.md")
    return summary
