"""Plugins: a method from outside tailfuse, via a recipe's imports: key and via an entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tailfuse.cli import main

from .conftest import REPOSITORY
from .own_data import make_image_folder

PLUGIN = textwrap.dedent('''
    """A tiny method: ERM whose predictions are the logits halved
    (so its predict is visibly used)."""
    from typing import Literal

    import torch

    from tailfuse.config import StrictModel
    from tailfuse.data.samplers import SAMPLERS
    from tailfuse.losses import LOSSES
    from tailfuse.methods import Method, register_method


    class HalvedOptions(StrictModel):
        name: Literal["halved_erm"] = "halved_erm"
        sampler: str = "every_other"


    @register_method("halved_erm", HalvedOptions)
    class HalvedErm(Method):
        def __init__(self, options, model, class_counts, config, auxiliary=None):
            super().__init__(options, model, class_counts, config, auxiliary)
            self.criterion = LOSSES["plain_ce"](class_counts)

        def branches(self):
            return {"main": self.options.sampler}

        def loss(self, batches, context):
            batch = batches["main"]
            return self.criterion(self.model(batch.images), batch.labels)

        def predict(self, images):
            return self.model(images) / 2


    LOSSES["plain_ce"] = lambda class_counts, **options: torch.nn.CrossEntropyLoss()
    SAMPLERS["every_other"] = SAMPLERS["instance"]
''')


def test_a_plugin_named_by_imports_trains_evaluates_and_predicts_through_the_cli(
    cifar10_jpeg_root, tmp_path, capsys
):
    root = make_image_folder(cifar10_jpeg_root, tmp_path / "photos", test_per_class=4)
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "halved_plugin.py").write_text(PLUGIN)
    (folder / "halved.yaml").write_text(
        f"base: image_folder\nname: halved\nimports: [halved_plugin.py]\ndata: {{root: {root}}}\n"
        "method: {name: halved_erm}\n"
    )
    fast = [
        "train.epochs=1",
        "train.max_steps_per_epoch=2",
        "train.batch_size=16",
        "train.progress=false",
    ]
    assert main(["train", str(folder / "halved.yaml"), *fast, "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["method"] == "halved_erm" and results["test"]["num_samples"] == 24
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                str(tmp_path / "run" / "checkpoints" / "last.pt"),
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["top1"] == results["test"]["top1"]
    assert (
        main(
            [
                "predict",
                str(tmp_path / "run" / "checkpoints" / "last.pt"),
                str(root / "test" / "cat"),
                "--format",
                "json",
            ]
        )
        == 0
    )
    assert len(json.loads(capsys.readouterr().out)) == 4


def test_an_entry_point_plugin_is_loaded_before_the_recipe_is_resolved(tmp_path):
    # an installed distribution, as pip would leave it: a module and a
    # dist-info with the entry point
    site = tmp_path / "site"
    site.mkdir()
    (site / "halved_entry.py").write_text(PLUGIN)
    info = site / "halved_entry-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: halved-entry\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tailfuse.plugins]\nhalved = halved_entry\n")

    def show_with(python_path: str) -> subprocess.CompletedProcess:
        """`tailfuse config show` of a recipe naming the plugin's method, in a fresh process."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "tailfuse.cli",
                "config",
                "show",
                "image_folder",
                "method.name=halved_erm",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": python_path},
            cwd=tmp_path,
            timeout=300,
        )

    shown = show_with(os.pathsep.join([str(site), str(REPOSITORY / "src")]))
    assert shown.returncode == 0, shown.stderr
    assert "method:\n  name: halved_erm\n  sampler: every_other\n" in shown.stdout
    without = show_with(str(REPOSITORY / "src"))  # the distribution is not installed
    assert without.returncode == 2 and "unknown method 'halved_erm'" in without.stderr


def test_a_plugin_that_is_missing_or_fails_is_one_error_line(tmp_path, capsys):
    from .test_reliability import one_error_line

    root = tmp_path / "images"
    recipe = tmp_path / "recipe.yaml"
    for plugin, message in [
        (
            "missing.py",
            f"imports: plugin file missing.py does not exist next to the recipe or in {Path.cwd()}",
        ),
        ("no_such_plugin_module", "imports: cannot import plugin 'no_such_plugin_module'"),
        (
            "broken.py",
            f"plugin '{tmp_path / 'broken.py'}' failed: ValueError: first line second line",
        ),
    ]:
        recipe.write_text(f"base: image_folder\nimports: [{plugin}]\ndata: {{root: {root}}}\n")
        (tmp_path / "broken.py").write_text('raise ValueError("first line\\nsecond line")\n')
        line = one_error_line(capsys, ["config", "show", str(recipe)])
        assert message in line, line
