"""Reports are replaced whole or not at all: a write that fails half-way (a full disk) leaves the
earlier report.md, results.json and sweep tables as they were, and no temporary file behind."""

from __future__ import annotations

import contextlib
import resource
import signal

import pytest

from tailfuse.errors import TailfuseError
from tailfuse.eval.report import write_report
from tailfuse.eval.sweep_report import write_sweep_report

from .test_sweep_report import row


@contextlib.contextmanager
def disk_full_past(size: int):
    """Writes past ``size`` bytes of any file fail with EFBIG, as on a full disk (RLIMIT_FSIZE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def files(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def results(top1: float) -> dict:
    """A two-class results.json (the keys report.md shows)."""
    return {
        "name": "tiny",
        "epochs": 2,
        "selection": {"rule": "final", "epoch": 2},
        "data": {
            "total": 30,
            "class_counts": [20, 10],
            "class_names": ["cat", "dog"],
            "imbalance_ratio": 2.0,
            "subset_checksum": "0123456789abcdef",
            "groups": {"many": [0], "few": [1]},
        },
        "test": {
            "num_samples": 20,
            "top1": top1,
            "top5": 100.0,
            "group_accuracy": {"many": top1, "few": 50.0},
            "macro_precision": 60.0,
            "ece": 5.0,
            "nll": 0.5,
            "per_class_accuracy": [top1, 50.0],
            "per_class_precision": [70.0, 50.0],
        },
    }


def test_a_failed_report_write_keeps_the_earlier_report(tmp_path):
    write_report(tmp_path, results(60.0))
    before = files(tmp_path)
    assert "| top-1 | 60.00 |" in before["report.md"].decode()
    with disk_full_past(300), pytest.raises(TailfuseError, match="cannot write .*: File too large"):
        write_report(tmp_path, results(80.0))
    assert files(tmp_path) == before


def test_a_failed_sweep_write_keeps_the_earlier_tables(tmp_path):
    write_sweep_report(
        tmp_path, "r", "p", [row("0", 0, 40, 80, 30, 10), row("1", 0, 44, 82, 34, 14)], "cmd"
    )
    before = files(tmp_path)
    assert "| 1 | 1 | 44.00 ± 0.00 |" in before["sweep.md"].decode()
    with disk_full_past(300), pytest.raises(TailfuseError, match="cannot write .*: File too large"):
        write_sweep_report(
            tmp_path, "r", "p", [row("0", 0, 50, 80, 30, 10), row("1", 0, 54, 82, 34, 14)], "cmd"
        )
    assert files(tmp_path) == before


def test_results_json_comes_last_so_a_folder_with_it_holds_the_whole_report(tmp_path, monkeypatch):
    """results.json marks a run as finished (resume, compare): when the plot fails, it is not
    written, and the run is not taken for finished with its report half there."""
    import tailfuse.eval.report as report

    def failing_plot(*arguments, **keywords):
        raise TailfuseError("cannot write per_class_accuracy.png: No space left on device")

    monkeypatch.setattr(report, "plot_per_class_accuracy", failing_plot)
    with pytest.raises(TailfuseError, match="No space left"):
        write_report(tmp_path, results(60.0))
    assert not (tmp_path / "results.json").exists()
    monkeypatch.undo()
    write_report(tmp_path, results(60.0))
    assert {"report.md", "per_class_accuracy.png", "results.json"} <= set(files(tmp_path))
