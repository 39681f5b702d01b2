"""Discovery and errors: --help/--version, recipes with descriptions, config show,
suggestions, strict JSON."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
import torch

from tailfuse.cli import main

from .conftest import REPOSITORY


def test_help_lists_every_command_without_importing_torch():
    code = (
        "import sys, contextlib, io\n"
        "from tailfuse.cli import main\n"
        "buffer = io.StringIO()\n"
        "with contextlib.redirect_stdout(buffer):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(buffer.getvalue()); print('torch loaded:', 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPOSITORY / "src")},
    )
    assert "torch loaded: False" in result.stdout
    for command in (
        "train",
        "eval",
        "predict",
        "export",
        "init",
        "config",
        "recipes",
        "plot",
        "data",
        "sweep",
        "bench",
        "glt-bench",
        "glt-table",
    ):
        assert re.search(rf"^    {command}\b", result.stdout, re.MULTILINE), command


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == "tailfuse 0.1.0"


def test_recipes_have_one_description_line_and_hide_private_bases(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert not any(name.startswith("_") for name in names)
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # every recipe has a description
    image_folder = next(line for line in lines if line.split()[0] == "image_folder")
    assert image_folder.split(None, 1)[1].startswith("Stage 1 on your own ImageFolder tree")


def test_config_show_prints_the_resolved_recipe(capsys):
    assert (
        main(
            ["config", "show", "cifar10_lt_quick_dr_h2t", "train.epochs=3", "method.h2t.ratio=0.5"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "  epochs: 3\n" in out and "    ratio: 0.5\n" in out
    assert (
        "  overrides:\n  - train.epochs=3\n" in out
    )  # the override reaches stage 1, method.* does not


@pytest.mark.parametrize(
    ("arguments", "suggestion"),
    [
        (
            ["config", "show", "cifar10_lt_quick", "train.epoch=3"],
            "train.epoch: unknown key (did you mean 'epochs'?)",
        ),
        (
            ["config", "show", "cifar10_lt_quick", "method.name=drr"],
            "unknown method 'drr' (did you mean 'dr'?)",
        ),
        (
            ["config", "show", "cifar10_lt_quick_dr", "method.h2t.ration=1"],
            "unknown key (did you mean 'ratio'?)",
        ),
        (["config", "show", "cifar10_lt_quik"], "did you mean 'cifar10_lt_quick'"),
        (
            ["config", "show", "cifar10_lt_quick", "model.backbone=resnet23"],
            "unknown model.backbone 'resnet23' (did you mean 'resnet32'",
        ),
    ],
)
def test_typos_get_one_error_line_with_a_suggestion(arguments, suggestion, capsys):
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert suggestion in error and error.count("\n") == 1 and error.startswith("error: ")
    assert "_cifar_lt_stage1" not in error  # private bases are never offered


def test_samplers_and_losses_suggest_close_names():
    from tailfuse.data.samplers import build_sampler
    from tailfuse.errors import ConfigError
    from tailfuse.losses import build_loss

    with pytest.raises(
        ConfigError, match=r"unknown sampler 'class_balance' \(did you mean 'class_balanced'"
    ):
        build_sampler("class_balance", torch.tensor([0, 1]), 2)
    with pytest.raises(
        ConfigError, match=r"unknown loss 'cross_entropie' \(did you mean 'cross_entropy'"
    ):
        build_loss("cross_entropie", [1, 1])


def test_json_files_are_strict():
    from tailfuse.eval.report import json_text

    assert (
        json_text({"loss": math.nan, "top1": [1.5, math.inf], "n": 2})
        == '{"loss": null, "top1": [1.5, null], "n": 2}'
    )


def test_tensorboard_record_is_the_metrics_line(tmp_path):
    pytest.importorskip("tensorboard")
    from tailfuse.engine.tensorboard import EpochLogger, record_scalars

    record = {
        "epoch": 3,
        "train_loss": 0.5,
        "lr": 0.1,
        "test_top1": 40.0,
        "test_group_accuracy": {"many": 60.0, "few": math.nan},
    }
    assert record_scalars(record) == {
        "train_loss": 0.5,
        "lr": 0.1,
        "test_top1": 40.0,
        "test_group_accuracy/many": 60.0,
    }
    logger = EpochLogger(tmp_path)
    logger.log(record)
    logger.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("test_group_accuracy/many")] == [(3, 60.0)]


def test_results_json_is_parsed_strictly_and_records_the_commit():
    from tailfuse.engine.provenance import git_commit, provenance

    record = provenance("cpu", "fp32")
    assert (
        record["tailfuse"] == "0.1.0"
        and record["device"] == "cpu"
        and record["precision"] == "fp32"
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True
    ).stdout.strip()
    if head:
        assert git_commit().split("+")[0] == head
    json.loads(json.dumps(record), parse_constant=lambda c: pytest.fail(c))
