"""Every command the README and docs/ show still parses and names recipes and keys that exist.

A renamed recipe, flag or config key would otherwise leave the documentation with commands that
fail at the first step. Each ``tailfuse ...`` line of an indented block is split as the shell
would, parsed by the CLI's own parser, and every recipe it names is loaded with the overrides it
passes (for ``compare``: every row and the earlier stages it trains, as ``--plan`` would). Nothing
trains and no data is read. Synopsis lines with placeholders (``[--resume | ...]``) are skipped.
``eval`` overrides apply to a run's saved config: they must load on the recipe its path names
(``RECIPE`` or ``RECIPE-<hash>``, as compare names runs) or, where the path names none, on at
least one recipe.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tailfuse.cli import _parser
from tailfuse.config import load_recipe
from tailfuse.engine.compare import parse_row, plan_runs, read_rows
from tailfuse.eval.compare_report import read_published

REPOSITORY = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    "README.md",
    *sorted(str(path.relative_to(REPOSITORY)) for path in (REPOSITORY / "docs").glob("*.md")),
]
#: commands that take a recipe and ``key=value`` overrides of it
RECIPE_COMMANDS = {"train", "bench", "sweep", "glt-bench", "config", "data"}


def _code_lines(text: str) -> list[str]:
    """Shell lines of the indented code blocks, continuations (``\\``) joined, variables
    assigned on an earlier line (``C="..."``) substituted."""
    lines, pending, variables = [], "", {}
    for raw in text.splitlines():
        if not re.match(r"^ {4,}\S", raw) and not pending:
            continue
        line = raw.strip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        assignment = re.fullmatch(r"([A-Z_]+)=(\".*\"|\S+)", line)
        if assignment:
            variables[assignment.group(1)] = shlex.split(assignment.group(2))[0]
            continue
        for name, value in variables.items():
            line = line.replace(f"${name}", value)
        lines.append(line)
    return lines


def _commands(document: str) -> list[list[str]]:
    """The ``tailfuse`` command lines of one document, as argument lists (after ``tailfuse``)."""
    found = []
    for line in _code_lines((REPOSITORY / document).read_text(encoding="utf-8")):
        for part in line.split("&&"):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            if words[:1] == ["tailfuse"]:
                arguments = words[1:]
            elif words[:3] == ["python", "-m", "tailfuse"]:
                arguments = words[3:]
            else:
                continue
            if any(word.startswith("[") or "|" in word or word == "..." for word in arguments):
                continue  # a synopsis line with placeholders
            found.append(arguments)
    return found


COMMANDS = [(document, arguments) for document in DOCUMENTS for arguments in _commands(document)]


def test_the_documents_show_commands_of_every_kind():
    """The extraction finds the commands (a broken pattern would make every case vanish)."""
    shown = {arguments[0] for _, arguments in COMMANDS}
    assert {"train", "eval", "compare", "sweep", "bench", "glt-bench", "glt-table"} <= shown
    assert len(COMMANDS) >= 40


@pytest.mark.parametrize(
    ("document", "arguments"),
    COMMANDS,
    ids=[f"{document}:{' '.join(arguments)[:60]}" for document, arguments in COMMANDS],
)
def test_a_documented_command_parses_and_its_recipes_load(document, arguments, tmp_path):
    try:
        parsed = _parser().parse_args(arguments)
    except SystemExit as stop:
        pytest.fail(f"{document}: `tailfuse {shlex.join(arguments)}` does not parse ({stop})")
    overrides = list(getattr(parsed, "overrides", None) or [])
    if parsed.command == "compare":
        rows = [parse_row(text) for text in parsed.rows]
        if parsed.rows_file:
            rows += read_rows(REPOSITORY / parsed.rows_file)
        if parsed.published:
            assert read_published(REPOSITORY / parsed.published)
        runs, cells = plan_runs(rows, parsed.seeds, tmp_path, overrides)
        assert len(cells) == len(rows) * len(parsed.seeds) and runs
    elif parsed.command == "eval" and overrides:
        _assert_eval_overrides_load(document, parsed.checkpoint, overrides)
    elif parsed.command in RECIPE_COMMANDS and getattr(parsed, "recipe", None):
        config = load_recipe(parsed.recipe, overrides)
        if parsed.command == "sweep":
            for value in parsed.values:
                load_recipe(parsed.recipe, [*overrides, f"{parsed.param}={value}"])
        assert config.name


RECIPES = sorted(
    path.stem
    for path in (REPOSITORY / "src/tailfuse/recipes").glob("*.yaml")
    if not path.stem.startswith("_")
)


def _recipe_in_path(path: str) -> str | None:
    """The recipe a run's path names: a folder ``RECIPE`` or ``RECIPE-<12 hex>``."""
    for part in reversed(Path(path).parts):
        name = re.sub(r"-[0-9a-f]{12}$", "", part)
        if name in RECIPES:
            return name
    return None


def _assert_eval_overrides_load(document: str, checkpoint: str, overrides: list[str]) -> None:
    recipe = _recipe_in_path(checkpoint)
    errors = []
    for candidate in [recipe] if recipe else RECIPES:
        try:
            load_recipe(candidate, overrides)
            return
        except Exception as error:  # noqa: BLE001 - collected for the failure message
            errors.append(f"{candidate}: {error}")
    pytest.fail(f"{document}: eval overrides {overrides} load on no recipe ({errors[:3]})")


def test_eval_overrides_are_checked_against_the_recipe_the_run_path_names():
    assert _recipe_in_path("/work/runs/r11/runs/cifar10_lt_if100_ffn_kps_stage1-7aad3babc2d2") == (
        "cifar10_lt_if100_ffn_kps_stage1"
    )
    assert _recipe_in_path("runs/ffn/cifar10_lt_quick_ffn_kps/checkpoints/last.pt") == (
        "cifar10_lt_quick_ffn_kps"
    )
    assert _recipe_in_path("runs/tade") is None
    with pytest.raises(pytest.fail.Exception, match="load on no recipe"):
        _assert_eval_overrides_load("README.md", "runs/x", ["method.no_such_key=1"])
    with pytest.raises(pytest.fail.Exception, match="load on no recipe"):  # erm has no TTA
        _assert_eval_overrides_load(
            "README.md",
            "runs/cifar10_lt_quick_ffn_kps",
            ["method.test_time_aggregation.enabled=true"],
        )
