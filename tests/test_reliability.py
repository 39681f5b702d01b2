"""Issue 10: no silent wrong experiment, no lost run, no code run from data, one clear line.

Most runs here train on a tiny ImageFolder tree of real CIFAR-10 JPEGs (3 classes,
10/6/3 training images) so each takes about a second. Every user mistake is checked
through ``tailfuse.cli.main``: exit status 2, exactly one ``error:`` line on stderr, and
the files that were there before unchanged.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tailfuse
from tailfuse.cli import main
from tailfuse.config import config_to_dict, load_recipe
from tailfuse.engine.checkpoint import load_checkpoint
from tailfuse.errors import ConfigError, TailfuseError

REPOSITORY = Path(__file__).resolve().parents[1]
CLASSES = ("airplane", "automobile", "bird")
TRAIN_COUNTS = (10, 6, 3)
TEST_PER_CLASS = 4


def _copy_tree(
    source_root: Path, target: Path, offset: int, names: tuple[str, ...] = CLASSES
) -> Path:
    """A 3-class ImageFolder tree of real JPEGs; ``offset`` picks other
    images of the same classes."""
    for split, counts in (("train", TRAIN_COUNTS), ("test", (TEST_PER_CLASS,) * 3)):
        for source_class, name, count in zip(CLASSES, names, counts, strict=True):
            folder = target / split / name
            folder.mkdir(parents=True)
            files = sorted((source_root / split / source_class).iterdir())[offset : offset + count]
            for number, path in enumerate(files):
                shutil.copyfile(path, folder / f"{number:04d}.jpg")
    return target


@pytest.fixture(scope="module")
def trees(cifar10_jpeg_root, tmp_path_factory) -> dict[str, Path]:
    """``a``; ``b``: same layout and file names, other pixels; ``renamed``:
    ``a`` with airplane → plane."""
    base = tmp_path_factory.mktemp("trees")
    return {
        "a": _copy_tree(cifar10_jpeg_root, base / "a", 0),
        "b": _copy_tree(cifar10_jpeg_root, base / "b", 100),
        "renamed": _copy_tree(
            cifar10_jpeg_root, base / "renamed", 0, ("plane", "automobile", "bird")
        ),
    }


def tree_overrides(root: Path, epochs: int = 1, **extra: object) -> list[str]:
    """A seconds-long cifar10_lt_quick run on a tiny tree: every image, groups by
    count, fp32, 1 thread."""
    values = {
        "data.source": "image_folder",
        "data.root": str(root),
        "data.profile": "none",
        "data.groups.by": "count",
        "data.groups.many_above": 8,
        "data.groups.few_below": 4,
        "train.epochs": epochs,
        "train.batch_size": 4,
        "train.eval_batch_size": 16,
        "train.progress": "false",
        "train.eval_every": 1,
        "train.precision": "fp32",
        "train.threads": 1,
        "schedule.warmup_epochs": 0,
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


def one_error_line(capsys, arguments: list[str]) -> str:
    """Run the CLI; assert it exits 2 with exactly one ``error:`` line and
    no traceback; return it."""
    status = main(arguments)
    error_lines = [
        line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")
    ]
    assert status == 2, arguments
    assert len(error_lines) == 1 and error_lines[0].startswith("error: "), error_lines
    return error_lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# ----------------------------------------------------------------- silent wrong experiments


def test_a_name_override_keeps_every_other_setting():
    plain = config_to_dict(load_recipe("cifar10_lt_quick", ["data.root=/data/c10", "train.seed=7"]))
    named = config_to_dict(
        load_recipe("cifar10_lt_quick", ["data.root=/data/c10", "train.seed=7", "name=my_run"])
    )
    assert named["name"] == "my_run"
    # the shipped recipe's settings (precision auto, 40 epochs, mixup 1.0, index groups [3, 7])
    # and earlier overrides stay
    assert (
        named["train"]["precision"] == "auto"
        and named["train"]["epochs"] == 40
        and named["train"]["seed"] == 7
    )
    assert named["method"]["mixup_alpha"] == 1.0 and named["data"]["groups"]["boundaries"] == [3, 7]
    assert named["data"]["root"] == "/data/c10"
    assert {**named, "name": plain["name"]} == plain


def test_a_missing_recipe_path_is_an_error_not_the_shipped_recipe(tmp_path, capsys):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "cifar10_lt_quick.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe("/somewhere/cifar10_lt_quick.yaml")
    assert (
        load_recipe("cifar10_lt_quick").name == "cifar10_lt_quick"
    )  # a bare name still means the shipped one
    assert load_recipe("cifar10_lt_quick.yaml").name == "cifar10_lt_quick"
    line = one_error_line(capsys, ["data", "summary", str(tmp_path / "cifar10_lt_quick.yaml")])
    assert str(tmp_path / "cifar10_lt_quick.yaml") in line


def test_replaced_images_are_decoded_again_not_served_from_the_cache(trees, tmp_path):
    from tailfuse.data.sources import _image_folder_source

    folder = tmp_path / "train"
    shutil.copytree(trees["a"] / "train", folder)
    cache = tmp_path / "cache"
    first = _image_folder_source(folder, 32, cache).load(np.arange(3))
    assert len(list(cache.iterdir())) == 1
    # another image under the same name (the way `cp` or `mv` replaces a file)
    replacement = trees["b"] / "train" / "airplane" / "0000.jpg"
    shutil.copyfile(replacement, folder / "airplane" / "0001.jpg")
    second = _image_folder_source(folder, 32, cache).load(np.arange(3))
    assert np.array_equal(second[0], first[0]) and np.array_equal(second[2], first[2])
    expected = _image_folder_source(trees["b"] / "train", 32, tmp_path / "other-cache").load(
        np.arange(1)
    )[0]
    assert np.array_equal(second[1], expected) and not np.array_equal(second[1], first[1])


def test_another_dataset_of_the_same_layout_is_refused_on_resume_and_as_stage1(
    trees, tmp_path, capsys
):
    run = tmp_path / "run"
    tailfuse.train("cifar10_lt_quick", run, tree_overrides(trees["a"], epochs=1))
    before = snapshot(run)
    summary = json.loads((run / "data_summary.json").read_text())
    assert len(summary["content_checksum"]) == 16
    # same file names, counts and subset indices, other pixels
    line = one_error_line(
        capsys,
        ["train", "cifar10_lt_quick", *tree_overrides(trees["b"]), "--out", str(run), "--resume"],
    )
    assert "training images changed" in line
    assert snapshot(run) == before
    stage2 = tree_overrides(trees["b"], **{"init.checkpoint": run / "checkpoints" / "last.pt"})
    line = one_error_line(
        capsys, ["train", "cifar10_lt_quick_dr", *stage2, "--out", str(tmp_path / "dr")]
    )
    assert "training images" in line and "same layout but other pixels" in line


def test_sweep_does_not_reuse_results_of_other_overrides(trees, tmp_path, capsys):
    out = tmp_path / "sweep"
    arguments = [
        "sweep",
        "cifar10_lt_quick",
        *tree_overrides(trees["a"]),
        "--param",
        "optimizer.lr",
        "--values",
        "0.05",
    ]
    assert main([*arguments, "--out", str(out)]) == 0
    capsys.readouterr()
    results = out / "optimizer.lr=0.05" / "seed0" / "results.json"
    before = results.read_bytes()
    # the same sweep with another override: the finished run is not this command's
    changed = ["sweep", "cifar10_lt_quick", *tree_overrides(trees["a"]), "method.mixup_alpha=0"]
    line = one_error_line(
        capsys, [*changed, "--param", "optimizer.lr", "--values", "0.05", "--out", str(out)]
    )
    assert "method.mixup_alpha" in line and "another recipe" in line
    assert results.read_bytes() == before
    # the same command still reuses it
    assert main([*arguments, "--out", str(out)]) == 0
    assert results.read_bytes() == before
    # a damaged run configuration or results file is one line and nothing is rewritten
    config = results.parent / "config.yaml"
    good_config = config.read_bytes()
    damages = [
        ("config.yaml", "a: [1", "not valid YAML"),
        ("config.yaml", "- 1\n", "its config.yaml is not a recipe"),
        ("results.json", "{", "Expecting property name"),
    ]
    for name, damaged, reason in damages:
        target = results.parent / name
        kept = target.read_bytes()
        target.write_text(damaged)
        line = one_error_line(capsys, [*arguments, "--out", str(out)])
        assert line.startswith(f"error: cannot reuse the finished run in {results.parent}")
        assert reason in line
        assert target.read_text() == damaged
        target.write_bytes(kept)
    assert config.read_bytes() == good_config and results.read_bytes() == before


def test_a_stage2_method_without_init_is_refused(trees, tmp_path, capsys):
    line = one_error_line(
        capsys,
        [
            "train",
            "cifar10_lt_quick_dr",
            *tree_overrides(trees["a"]),
            "init=null",
            "--out",
            str(tmp_path / "dr"),
        ],
    )
    assert "method dr" in line and "init" in line
    assert not (tmp_path / "dr").exists()


def test_evaluating_on_class_folders_in_another_order_is_refused(trees, tmp_path, capsys):
    run = tmp_path / "run"
    tailfuse.train("cifar10_lt_quick", run, tree_overrides(trees["a"]))
    line = one_error_line(
        capsys,
        [
            "eval",
            str(run / "checkpoints" / "last.pt"),
            f"data.root={trees['renamed']}",
            "--out",
            str(tmp_path / "e"),
        ],
    )
    assert (
        "class folders differ" in line and "label 0 is 'automobile' here but was 'airplane'" in line
    )
    assert not (tmp_path / "e").exists()  # refused inputs leave no (empty) report folder


def test_eval_creates_its_report_folder_only_after_reading_the_data(trees, tmp_path, capsys):
    run = tmp_path / "run"
    tailfuse.train("cifar10_lt_quick", run, tree_overrides(trees["a"]))
    checkpoint = str(run / "checkpoints" / "last.pt")
    missing = tmp_path / "no-such-data"
    line = one_error_line(
        capsys,
        ["eval", checkpoint, f"data.root={missing}", "--out", str(tmp_path / "reports" / "e")],
    )
    assert str(missing) in line
    assert not (tmp_path / "reports").exists()
    # a folder that cannot be made is still refused before any data is read
    (tmp_path / "a-file").write_text("")
    line = one_error_line(
        capsys,
        ["eval", checkpoint, f"data.root={missing}", "--out", str(tmp_path / "a-file" / "e")],
    )
    assert line == (
        f"error: cannot create --out folder {tmp_path / 'a-file' / 'e'}: "
        f"{tmp_path / 'a-file'} is a file"
    )
    assert main(["eval", checkpoint, "--out", str(tmp_path / "reports" / "e")]) == 0
    assert (tmp_path / "reports" / "e" / "results.json").is_file()


# ----------------------------------------------------------------- lost or overwritten data


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(trees, tmp_path):
    from tailfuse.engine import session as session_module

    run = tmp_path / "run"
    overrides = tree_overrides(trees["a"], epochs=2)
    refusals = []
    original = session_module.TrainingSession.train_epoch

    def train_epoch(self, epoch, **kwargs):
        if epoch == 1:  # a second process starts on the same --out while this run is in epoch 2
            with pytest.raises(TailfuseError, match="in use by another tailfuse run") as refused:
                tailfuse.train("cifar10_lt_quick", run, overrides, resume=True)
            refusals.append(str(refused.value))
        return original(self, epoch, **kwargs)

    session_module.TrainingSession.train_epoch = train_epoch
    try:
        tailfuse.train("cifar10_lt_quick", run, overrides)
    finally:
        session_module.TrainingSession.train_epoch = original
    assert len(refusals) == 1
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert saved["epoch"] == 2
    assert [
        json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
    ] == [1, 2]
    assert (
        json.loads((run / "data_summary.json").read_text())["content_checksum"]
        == saved["data"]["content_checksum"]
    )
    # the lock is released when the run ends
    tailfuse.train("cifar10_lt_quick", run, overrides, resume=True)


def test_results_are_not_overwritten_unless_asked(trees, tmp_path, capsys):
    run = tmp_path / "run"
    tailfuse.train("cifar10_lt_quick", run, tree_overrides(trees["a"]))
    shutil.rmtree(run / "checkpoints")  # results, config and log of a finished run, no checkpoint
    before = snapshot(run)
    line = one_error_line(
        capsys, ["train", "cifar10_lt_quick", *tree_overrides(trees["b"]), "--out", str(run)]
    )
    assert "already holds a run" in line and "results.json" in line and "--overwrite" in line
    assert snapshot(run) == before

    other = tmp_path / "other"
    tailfuse.train("cifar10_lt_quick", other, tree_overrides(trees["a"]))
    line = one_error_line(
        capsys, ["eval", str(other / "checkpoints" / "last.pt"), "--out", str(run)]
    )
    assert "training run's directory" in line
    assert snapshot(run) == before
    other_before = snapshot(other)
    line = one_error_line(
        capsys, ["eval", str(other / "checkpoints" / "last.pt"), "--out", str(other)]
    )
    assert "training run's directory" in line
    assert snapshot(other) == other_before

    # asked: the old run's files are replaced, not mixed with the new ones
    assert (
        main(
            [
                "train",
                "cifar10_lt_quick",
                *tree_overrides(trees["b"]),
                "--out",
                str(run),
                "--overwrite",
            ]
        )
        == 0
    )
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["data"]["root"] == str(
        trees["b"]
    )
    assert [
        json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
    ] == [1]


@pytest.mark.parametrize("name", ["../escaped", "/tmp/absolute", "a/b", "..", "."])
def test_names_that_leave_the_output_folder_are_refused(name):
    with pytest.raises(ConfigError, match="folder name"):
        load_recipe("cifar10_lt_quick", [f"name={name}"])


def test_sweep_values_that_leave_the_output_folder_are_refused(trees, tmp_path, capsys):
    out = tmp_path / "sweep"
    line = one_error_line(
        capsys,
        [
            "sweep",
            "cifar10_lt_quick",
            *tree_overrides(trees["a"]),
            "--param",
            "name",
            "--values",
            "../../escaped",
            "--out",
            str(out),
        ],
    )
    assert "folder name" in line
    assert not (tmp_path / "escaped").exists() and not out.exists()
    stage2 = tree_overrides(
        trees["a"], **{"init.recipe": "cifar10_lt_quick", "init.overrides": '["name=../escaped"]'}
    )
    line = one_error_line(
        capsys, ["train", "cifar10_lt_quick_dr", *stage2, "--out", str(tmp_path / "dr")]
    )
    assert "folder name" in line and not (tmp_path / "escaped").exists()


def test_the_same_recipe_twice_writes_bit_identical_checkpoints(trees, tmp_path):
    overrides = tree_overrides(trees["a"], epochs=2)
    tailfuse.train("cifar10_lt_quick", tmp_path / "first", overrides)
    np.random.rand(5)  # a script or notebook drawing from the global generators between runs
    random.random()
    tailfuse.train("cifar10_lt_quick", tmp_path / "second", overrides)
    first = (tmp_path / "first" / "checkpoints" / "last.pt").read_bytes()
    assert first == (tmp_path / "second" / "checkpoints" / "last.pt").read_bytes()


# ------------------------------------------------------------------------- code run from data


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_a_crafted_cifar_pickle_runs_no_code(cifar10_jpeg_root, tmp_path, capsys):
    real = cifar10_jpeg_root.parent / "cifar10-lossless"
    if not (real / "cifar-10-batches-py").is_dir():
        pytest.skip("lossless CIFAR-10 pickles not found")
    root = tmp_path / "root" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    for path in (real / "cifar-10-batches-py").iterdir():
        (root / path.name).symlink_to(path)
    # the real pickles load through the restricted unpickler
    assert main(["data", "summary", "cifar10_lt_quick", f"data.root={root.parent}"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 12406

    marker = tmp_path / "marker.txt"
    (root / "data_batch_1").unlink()
    (root / "data_batch_1").write_bytes(pickle.dumps({"data": _RunsCode(marker), "labels": [0]}))
    line = one_error_line(
        capsys,
        ["data", "summary", "cifar10_lt_quick", f"data.root={root.parent}", "data.download=false"],
    )
    assert "data_batch_1" in line and "refused" in line
    assert not marker.exists()


# ------------------------------------------------------------------------ one clear line


def test_a_diverging_loss_names_epoch_and_step_and_keeps_the_last_checkpoint(
    trees, tmp_path, capsys, monkeypatch
):
    run = tmp_path / "run"
    line = one_error_line(
        capsys,
        [
            "train",
            "cifar10_lt_quick",
            *tree_overrides(trees["a"]),
            "optimizer.lr=1e6",
            "method.mixup_alpha=0",
            "--out",
            str(run),
        ],
    )
    assert "diverged" in line and "at epoch 1, step" in line and "no checkpoint was written" in line

    from tailfuse.methods.erm import EmpiricalRiskMinimization as ErmMethod

    original = ErmMethod.loss

    def loss(self, batches, context):  # the loss turns NaN in epoch 2
        value = original(self, batches, context)
        return value * float("nan") if context.epoch == 1 else value

    monkeypatch.setattr(ErmMethod, "loss", loss)
    run = tmp_path / "run2"
    line = one_error_line(
        capsys,
        ["train", "cifar10_lt_quick", *tree_overrides(trees["a"], epochs=2), "--out", str(run)],
    )
    assert (
        "the loss became nan at epoch 2, step 1" in line
        and "last good checkpoint (epoch 1) is kept" in line
    )
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1


def test_an_unusable_out_fails_at_once_with_one_line(tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    missing_data = "data.root=/nonexistent/data"  # the --out error comes before any data is read
    for out in (a_file, a_file / "run", Path("/sys/tailfuse-run")):
        line = one_error_line(
            capsys, ["train", "cifar10_lt_quick", missing_data, "--out", str(out)]
        )
        assert str(out) in line and "nonexistent" not in line
    assert a_file.read_text() == "keep me"


@pytest.mark.slow  # a child process (torch import) on top of two runs
def test_a_full_disk_and_an_unwritable_cache_are_one_line_and_a_warning(trees, tmp_path):
    """A real write failure: the process may write files of at most 40 kB (RLIMIT_FSIZE)."""
    run = tmp_path / "run"
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))\n"
        "from tailfuse.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    command = [
        sys.executable,
        "-c",
        script,
        "train",
        "cifar10_lt_quick",
        *tree_overrides(trees["a"]),
        f"data.cache_dir={tmp_path / 'cache'}",
        "--out",
        str(run),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env=_environment(), timeout=300
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        lines[-1].startswith("error: cannot write checkpoint")
        and "no checkpoint was written" in lines[-1]
    )
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert not list((run / "checkpoints").glob(".*.tmp"))
    # decoded images over the limit could not be cached: a warning, and the run
    # went on to its checkpoint
    assert any(line.startswith("warning: decoded images not cached") for line in lines)


def test_a_cache_folder_that_cannot_be_created_is_a_warning(trees, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    results = tailfuse.train(
        "cifar10_lt_quick",
        tmp_path / "ok",
        [*tree_overrides(trees["a"]), f"data.cache_dir={blocker / 'cache'}"],
    )
    assert results["test"]["num_samples"] == 12
    warnings = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")
    ]
    warnings = [
        line for line in warnings if "bfloat16" not in line
    ]  # a CPU without native bf16 adds one
    assert len(warnings) == 2 and all(
        str(blocker / "cache") in line for line in warnings
    )  # train and test images


def _environment() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(REPOSITORY / "src")}


def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("name: caf\xe9\n".encode("latin-1"))
    line = one_error_line(capsys, ["data", "summary", str(recipe)])
    assert str(recipe) in line and "UTF-8" in line
    recipe.write_text("train: {epochs: [1,\n")
    line = one_error_line(capsys, ["data", "summary", str(recipe)])
    assert "not valid YAML" in line


def test_a_glt_label_that_is_not_an_integer_is_one_line(tmp_path, capsys):
    annotation = {
        "train": {"label": {"a.jpg": "cat", "b.jpg": 1}, "frequency": {"a.jpg": 0, "b.jpg": 1}},
        "test_bl": {"label": {"c.jpg": 0}, "frequency": {"c.jpg": 0}, "attribute": {"c.jpg": 0}},
    }
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(annotation))
    overrides = [
        "data.source=glt",
        f"data.annotation={path}",
        f"data.root={tmp_path}",
        "data.groups.by=count",
        "data.groups.boundaries=null",
    ]
    line = one_error_line(capsys, ["data", "summary", "cifar10_lt_quick", *overrides])
    assert str(path) in line and "not an integer" in line


def test_broken_checkpoints_are_one_line(trees, tmp_path, capsys):
    run = tmp_path / "run"
    tailfuse.train("cifar10_lt_quick", run, tree_overrides(trees["a"]))
    saved = load_checkpoint(run / "checkpoints" / "last.pt")

    no_weights = {key: value for key, value in saved.items() if key != "format"}
    no_weights["session"] = {
        key: value for key, value in saved["session"].items() if key != "model"
    }
    torch.save({"format": saved["format"], **no_weights}, tmp_path / "no_weights.pt")
    line = one_error_line(
        capsys, ["eval", str(tmp_path / "no_weights.pt"), "--out", str(tmp_path / "e1")]
    )
    assert "incomplete (missing session.model)" in line

    wrong_shape = {
        **saved,
        "session": {**saved["session"], "model": dict(saved["session"]["model"])},
    }
    wrong_shape["session"]["model"]["head.fc.weight"] = torch.zeros(5, 64)
    torch.save(wrong_shape, tmp_path / "wrong_shape.pt")
    line = one_error_line(
        capsys, ["eval", str(tmp_path / "wrong_shape.pt"), "--out", str(tmp_path / "e2")]
    )
    assert "does not fit this recipe's model" in line and "head.fc.weight" in line
    stage2 = tree_overrides(trees["a"], **{"init.checkpoint": tmp_path / "wrong_shape.pt"})
    line = one_error_line(
        capsys, ["train", "cifar10_lt_quick_dr", *stage2, "--out", str(tmp_path / "dr")]
    )
    assert "does not fit" in line and "head.fc.weight" in line

    no_optimizer = {**saved, "session": {**saved["session"], "optimizer": {}}}
    shutil.copytree(run, tmp_path / "resumable")
    torch.save(no_optimizer, tmp_path / "resumable" / "checkpoints" / "last.pt")
    line = one_error_line(
        capsys,
        [
            "train",
            "cifar10_lt_quick",
            *tree_overrides(trees["a"]),
            "--out",
            str(tmp_path / "resumable"),
            "--resume",
        ],
    )
    assert "cannot resume from" in line


def test_a_failing_data_loader_worker_is_one_line(trees, tmp_path, capsys):
    tree = tmp_path / "tree"
    shutil.copytree(trees["a"], tree)
    broken = tree / "train" / "automobile" / "0002.jpg"
    broken.write_bytes(b"not a jpeg")
    streamed = [
        "data.storage=stream",
        "data.augment.kind=imagenet",
        "data.augment.crop_size=32",
        "data.augment.resize=32",
        "data.num_workers=1",
    ]
    line = one_error_line(
        capsys,
        [
            "train",
            "cifar10_lt_quick",
            *tree_overrides(tree),
            *streamed,
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert (
        line.startswith("error: a data-loading worker failed: cannot decode image")
        and str(broken) in line
    )


def test_eval_of_a_run_directory_evaluates_its_selected_checkpoint(trees, tmp_path, capsys):
    run = tmp_path / "run"
    results = tailfuse.train("cifar10_lt_quick", run, tree_overrides(trees["a"]))
    capsys.readouterr()
    assert main(["eval", str(run), "--out", str(tmp_path / "e")]) == 0
    captured = capsys.readouterr()
    assert f"evaluating {run / 'checkpoints' / 'last.pt'}" in captured.err
    assert json.loads(captured.out)["top1"] == results["test"]["top1"]
    line = one_error_line(capsys, ["eval", str(tmp_path), "--out", str(tmp_path / "e2")])
    assert "without checkpoints/" in line
    # which model the run reported must be known: a damaged results.json or a missing
    # reported checkpoint is one line, never a silent fallback to another checkpoint
    reported = run / "results.json"
    good = reported.read_bytes()
    for damage, reason in [
        ('{"selection": {"ru', "not valid JSON"),
        ('{"test": {}}', "it names no selection rule"),
        ('{"selection": {"rule": "best_validation"}}', "best_validation.pt is missing"),
    ]:
        reported.write_text(damage)
        line = one_error_line(capsys, ["eval", str(run), "--out", str(tmp_path / "e3")])
        assert reason in line and str(run) in line
    assert not (tmp_path / "e3").exists()
    reported.write_bytes(good)


# ------------------------------------------------------------- the same faults elsewhere


def test_a_stage1_run_of_another_recipe_is_not_reused(trees, tmp_path, capsys):
    stage1_tiny = (
        'init.overrides=["train.epochs=1","train.batch_size=4",'
        '"train.threads=1","train.progress=false"]'
    )
    overrides = [*tree_overrides(trees["a"]), stage1_tiny]
    tailfuse.train("cifar10_lt_quick_dr", tmp_path / "dr", overrides)
    stage1 = tmp_path / "cifar10_lt_quick"
    before = snapshot(stage1)
    # the stage-1 recipe changed (no mixup): the run in the sibling folder is not that recipe's
    changed = [*tree_overrides(trees["a"]), stage1_tiny.replace('"]', '","method.mixup_alpha=0"]')]
    line = one_error_line(
        capsys, ["train", "cifar10_lt_quick_dr", *changed, "--out", str(tmp_path / "dr2")]
    )
    assert "holds another run" in line and "method.mixup_alpha" in line and "init.run_dir" in line
    assert snapshot(stage1) == before


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["train.seed=-1"], "train.seed: Input should be greater than or equal to 0"),
        (["data.subset_seed=-3"], "data.subset_seed: Input should be greater than or equal to 0"),
        (["data.split={seed: -1}"], "data.split.seed: Input should be greater than or equal to 0"),
        (["--resume"], "nothing to resume"),
    ],
)
def test_other_bad_inputs_are_one_line(trees, tmp_path, capsys, arguments, expected):
    out = tmp_path / "never"
    line = one_error_line(
        capsys,
        ["train", "cifar10_lt_quick", *tree_overrides(trees["a"]), *arguments, "--out", str(out)],
    )
    assert expected in line
    assert not out.exists()


def test_a_crafted_cocottributes_file_runs_no_code(tmp_path):
    import joblib

    from tailfuse.data.glt_builders import load_cocottributes
    from tailfuse.errors import DataError

    good = tmp_path / "good.jbl"
    joblib.dump({"ann_vecs": {3: np.array([0.9, 0.2, 0.7])}, "patch_id_to_ann_id": {3: 41}}, good)
    assert {key: value.tolist() for key, value in load_cocottributes(good).items()} == {
        41: [True, False, True]
    }
    marker = tmp_path / "marker.txt"
    crafted = tmp_path / "crafted.jbl"
    joblib.dump({"ann_vecs": _RunsCode(marker), "patch_id_to_ann_id": {}}, crafted)
    with pytest.raises(DataError, match="refused"):
        load_cocottributes(crafted)
    assert not marker.exists()


def test_auxiliary_names_that_leave_the_output_folder_are_refused():
    with pytest.raises(ConfigError, match="folder name"):
        load_recipe(
            "cifar10_lt_quick_ffn", ["init.auxiliary={'../../x': {recipe: cifar10_lt_quick}}"]
        )
