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
        "compare_cifar10_lt_if100_full.yaml",
        "compare_cifar10_lt_if100_quick.yaml",
        "compare_cifar10_lt_if100_quick_experts.yaml",
    ]
    assert len(PUBLISHED_FILES) == 2


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
