"""The rows and published-figure files under ``benchmarks/`` that the README's comparison
commands use: a typo there would surface only after hours of training, or never (a published
figure whose label matches no row is silently left out of the table)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tailfuse.config import load_recipe
from tailfuse.engine.compare import read_rows
from tailfuse.eval.compare_report import read_published

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ROWS_FILES = sorted(BENCHMARKS.glob("compare_*.yaml"))
PUBLISHED_FILES = sorted(BENCHMARKS.glob("published_*.yaml"))


def test_the_shipped_comparisons_are_found():
    assert [path.name for path in ROWS_FILES] == [
        "compare_cifar100_lt_if100_h2t.yaml",
        "compare_cifar10_lt_if100_full.yaml",
        "compare_cifar10_lt_if100_quick.yaml",
        "compare_cifar10_lt_if100_quick_experts.yaml",
    ]
    assert len(PUBLISHED_FILES) == 3


@pytest.mark.parametrize("rows_file", ROWS_FILES, ids=lambda path: path.stem)
def test_every_row_names_a_recipe_that_loads_with_its_overrides(rows_file):
    rows = read_rows(rows_file)
    labels = [row.label for row in rows]
    assert len(set(labels)) == len(labels) >= 6
    for row in rows:
        config = load_recipe(row.recipe, [*row.overrides, "train.seed=1"])
        assert config.name == row.recipe and config.train.seed == 1


@pytest.mark.parametrize("published_file", PUBLISHED_FILES, ids=lambda path: path.stem)
def test_every_published_figure_belongs_to_a_row_of_some_comparison(published_file):
    names = {
        name for path in ROWS_FILES for row in read_rows(path) for name in (row.label, row.recipe)
    }
    figures = read_published(published_file)
    assert figures and set(figures) <= names, sorted(set(figures) - names)
    assert all(0 < figure["paper"] < 100 and figure["source"] for figure in figures.values())


def test_the_h2t_cifar100_rows_carry_the_posters_if100_column():
    """Spec h2t §5.1, IF 100: each runnable row with its published figure, H2T beside its base."""
    rows = {
        row.label: row.recipe
        for row in read_rows(BENCHMARKS / "compare_cifar100_lt_if100_h2t.yaml")
    }
    figures = read_published(BENCHMARKS / "published_cifar100_lt_if100_h2t.yaml")
    assert set(figures) == set(rows) and all("_if100_" in recipe for recipe in rows.values())
    expected = {"DR + H2T": 47.73, "MiSLAS + H2T": 47.62, "GCL + H2T": 48.88}
    expected |= {"RIDE + H2T": 51.38, "ResLT + H2T": 49.60, "CE + CMO": 43.90}
    assert {label: figures[label]["paper"] for label in expected} == expected
    for base in ("DR (DR + MU)", "MiSLAS", "GCL", "RIDE", "ResLT"):
        name = base.split(" (")[0]
        assert load_recipe(rows[f"{name} + H2T"]).init.recipe in (
            rows[base],
            load_recipe(rows[base]).init.recipe if load_recipe(rows[base]).init else None,
        )


RAW_OUTPUTS = BENCHMARKS.parent / "docs" / "results" / "benchmarks" / "2026-12-03_avx2"


def test_the_readme_benchmark_figures_are_the_committed_raw_outputs():
    """Each figure the README quotes from a committed benchmark output is what it printed."""
    import re

    readme = " ".join((BENCHMARKS.parent / "README.md").read_text().split())
    jobs = (RAW_OUTPUTS / "parallel_jobs.txt").read_text()
    single = re.findall(r"one 2-thread run (\d+) images/s", jobs)
    together = re.findall(r"two 1-thread runs (\d+) images/s together", jobs)
    ratio = re.search(r"= (\d\.\d\d)$", jobs.strip()).group(1)
    assert len(single) == len(together) == 2
    row = (
        f"| AMD EPYC, AVX2 only (2026-12-03, seventeenth session) | {', '.join(single)} images/s "
        f"| {', '.join(together)} images/s | **{ratio}** |"
    )
    assert row in readme
    bench = (RAW_OUTPUTS / "bench_fp32.txt").read_text()
    model_only, end_to_end = re.findall(r": (\d+) images/s", bench)
    bench_ratio = re.search(r"end-to-end: (\d\.\d+)", bench).group(1)
    assert f"{model_only} images/s model-only, {end_to_end} end to end, ratio {bench_ratio}" in (
        readme
    )
    samplers = dict(
        re.findall(
            r"^\s+(\w+)\s+([\d.]+) ms per epoch",
            (RAW_OUTPUTS / "sampler_epoch_build.txt").read_text(),
            flags=re.MULTILINE,
        )
    )
    sides = (RAW_OUTPUTS / "bbn_beside_cb_ce.txt").read_text().split("\n\n")
    bbn, cb_ce = (re.search(r"end-to-end : (\d+) images/s", side).group(1) for side in sides)
    assert "cifar10_lt_if100_bbn" in sides[0] and "cifar10_lt_if100_cb_ce" in sides[1]
    assert f"{bbn} against {cb_ce} images/s end to end" in readme
    formats = (RAW_OUTPUTS / "memory_format.txt").read_text()
    last, plain, format_ratio = re.search(
        r"channels_last (\d+), contiguous (\d+) images/s; ratio channels_last / contiguous: "
        r"(\d\.\d+)",
        formats,
    ).groups()
    assert f"channels_last {last} against contiguous {plain} images/s end to end, ratio " in readme
    assert f"ratio {format_ratio} (`docs/results/benchmarks/2026-12-03_avx2/memory_format" in readme
    quoted = {"class_aware": 2, "class_balanced": 2, "instance": 3, "reverse": 2, "cben": 2}
    for name, digits in quoted.items():
        seconds = f"{float(samplers[name]) / 1000:.{digits}f}"
        assert re.search(rf"`?{name}`?[^,;]*? {seconds} s", readme), (name, seconds)
