"""The command line end to end on a small real subset of CIFAR-10-LT."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tailfuse.cli import main

from .conftest import tiny_overrides


def test_train_eval_summary_and_bench_through_the_cli(cifar10_jpeg_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "cifar10_lt_quick",
                *tiny_overrides(cifar10_jpeg_root, epochs=2),
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert "test top-1" in capsys.readouterr().out
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "results.json",
        "report.md",
        "per_class_accuracy.png",
        "data_summary.json",
    ):
        assert (run / name).is_file(), name
    results = json.loads((run / "results.json").read_text())

    assert (
        main(["eval", str(run / "checkpoints" / "last.pt"), "--out", str(tmp_path / "eval")]) == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert abs(printed["top1"] - results["test"]["top1"]) < 1e-9
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["selection"]["epoch"] == 2

    assert main(["data", "summary", "cifar10_lt_quick", f"data.root={cifar10_jpeg_root}"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] == 12406 and summary["class_counts"][-1] == 50
    assert summary["subset_checksum"] == "f5a6ab138b23b845"

    bench_args = [*tiny_overrides(cifar10_jpeg_root), "train.batch_size=16"]
    assert main(["bench", "cifar10_lt_quick", *bench_args, "--steps", "2", "--rounds", "1"]) == 0
    assert "ratio model-only / end-to-end" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("module", "options"), [("torch", []), ("pydantic", []), ("yaml", []), ("torch", ["--nproc=2"])]
)
def test_a_missing_required_dependency_is_one_line(module, options, tmp_path):
    """An install without its dependencies (pip --no-deps) names the module, no traceback."""
    script = (
        "import sys\n"
        f"sys.modules[{module!r}] = None  # `import {module}` now fails as if not installed\n"
        "from tailfuse.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "train", "cifar10_lt_quick", *options]
        + ["--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {module} is not installed in this Python ({sys.executable}); install "
        "tailfuse with its dependencies (in a checkout: python -m pip install -e .)"
    ]
    assert not (tmp_path / "x").exists()


def test_python_dash_m_tailfuse_is_the_tailfuse_command(tmp_path):
    """``python -m tailfuse`` works where the ``tailfuse`` script is not on PATH: same program
    name, same exit codes."""
    import tailfuse

    result = subprocess.run(
        [sys.executable, "-m", "tailfuse", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == f"tailfuse {tailfuse.__version__}"
    result = subprocess.run(
        [sys.executable, "-m", "tailfuse", "trian", "cifar10_lt_quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: argument COMMAND: invalid choice: 'trian'")
    assert "(did you mean 'train'?)" in result.stderr and "`tailfuse --help`" in result.stderr


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tailfuse.cli",
            "train",
            "cifar10_lt_quick",
            "data.imbalance_factr=3",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid recipe cifar10_lt_quick: data.imbalance_factr: unknown key "
        "(did you mean 'imbalance_factor'?)"
    ]
    result = subprocess.run(
        [sys.executable, "-m", "tailfuse.cli", "eval", str(tmp_path / "missing.pt")],
        capture_output=True,
        text=True,
    )
    assert (
        result.returncode == 2
        and "does not exist" in result.stderr
        and "Traceback" not in result.stderr
    )


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["trian", "cifar10_lt_quick", "--out", "x"],
            "error: argument COMMAND: invalid choice: 'trian' (choose from 'train', 'eval', "
            "'data', 'bench', 'sweep', 'compare', 'glt-bench', 'glt-table', 'init', 'predict', "
            "'export', 'config', 'recipes', 'plot') (did you mean 'train'?) "
            "(see `tailfuse --help`)",
        ),
        (
            ["export", "run", "--format", "onxx"],
            "error: argument --format: invalid choice: 'onxx' (choose from 'onnx', "
            "'torchscript') (did you mean 'onnx'?) (see `tailfuse export --help`)",
        ),
        (
            ["bench", "cifar10_lt_quick", "--rounds", "0"],
            "error: argument --rounds: must be at least 1, not 0 (see `tailfuse bench --help`)",
        ),
        (
            ["compare", "CE=cifar10_lt_quick_ce", "--jobs", "two", "--out", "x"],
            "error: argument --jobs: 'two' is not an integer (see `tailfuse compare --help`)",
        ),
        (
            ["train", "cifar10_lt_quick", "--out", "x", "--nproc", "0"],
            "error: argument --nproc: must be at least 1, not 0 (see `tailfuse train --help`)",
        ),
        (
            ["compare", "CE=cifar10_lt_quick_ce", "--seeds", "-1", "--out", "x"],
            "error: argument --seeds: must be at least 0, not -1 (see `tailfuse compare --help`)",
        ),
    ],
)
def test_a_bad_command_line_is_one_error_line_with_a_suggestion(arguments, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [expected] and captured.out == ""


def test_a_closed_stdout_ends_the_command_quietly():
    """``tailfuse recipes | head``: once the reader has gone, no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes: every write fails
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tailfuse.cli", "recipes"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141  # 128 + SIGPIPE, as for a writer the signal ended


def test_sweep_through_the_cli_shares_one_stage1_run(cifar10_jpeg_root, tmp_path, capsys):
    from .engine.test_stages import stage2_overrides

    out = tmp_path / "sweep"
    arguments = [
        "sweep",
        "cifar10_lt_quick_dr_h2t",
        *stage2_overrides(cifar10_jpeg_root),
        "--param",
        "method.h2t.ratio",
    ]
    arguments += ["--values", "0", "0.25", "--seeds", "0", "1", "--out", str(out)]
    assert main(arguments) == 0
    assert "| method.h2t.ratio | runs |" in capsys.readouterr().out
    table = (out / "sweep.md").read_text()
    assert "| 0 | 2 |" in table and "| 0.25 | 2 |" in table
    assert (out / "sweep.png").stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "method.h2t.ratio=0",
        "method.h2t.ratio=0.25",
        "stage1",
    ]
    runs = json.loads((out / "sweep.json").read_text())["runs"]
    assert [(run["value"], run["seed"]) for run in runs] == [
        ("0", 0),
        ("0", 1),
        ("0.25", 0),
        ("0.25", 1),
    ]
    # re-running a finished sweep reuses every run
    stamp = (out / "method.h2t.ratio=0" / "seed0" / "results.json").stat().st_mtime_ns
    assert main(arguments) == 0
    assert (out / "method.h2t.ratio=0" / "seed0" / "results.json").stat().st_mtime_ns == stamp
