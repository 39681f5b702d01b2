"""GLT end to end through the CLI on small real subsets of CIFAR-10 (spec glt_ifl §2, §3, §7.2)."""

from __future__ import annotations

import json

import pytest

from tailfuse.cli import main

STAGE1_TINY = (
    'init.overrides=["train.epochs=1","train.batch_size=32",'
    '"train.eval_every=0","train.precision=fp32"]'
)


def glt_tiny(root, epochs=1, **extra):
    """A seconds-long CIFAR-10-GLT run on real images: n_max 40, rho 4, small test sets."""
    values = {
        "data.root": str(root),
        "data.glt.max_per_class": 40,
        "data.glt.rho": 4,
        "data.glt.gbl_per_rank": 2,
        "data.glt.cbl_test_per_class": 10,
        "data.glt.cbl_val_per_class": 10,
        "data.glt.test_lt_pool_per_class": 10,
        "train.epochs": epochs,
        "train.batch_size": 32,
        "train.eval_every": 1,
        "train.progress": "false",
        "train.precision": "fp32",
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


IFL_EARLY = {
    "method.update_milestones": "[0]",
    "method.center_milestones": "[0,1]",
    "method.center_weights": "[0.0,0.005]",
}
# a one-epoch IFL run: environments rebuilt after epoch 0, center loss on from the start
IFL_ONE_EPOCH = {
    "method.update_milestones": "[0]",
    "method.center_milestones": "[0]",
    "method.center_weights": "[0.005]",
}
STAGE1_IFL_TINY = (
    STAGE1_TINY[:-1] + "," + ",".join(f'"{k}={v}"' for k, v in IFL_ONE_EPOCH.items()) + "]"
)


def test_ifl_train_and_eval_print_and_save_every_protocol(cifar10_jpeg_root, tmp_path, capsys):
    run = tmp_path / "ifl"
    assert (
        main(
            [
                "train",
                "cifar10_glt_quick_ifl",
                *glt_tiny(cifar10_jpeg_root, epochs=2, **IFL_EARLY),
                "--out",
                str(run),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert " CLT [test_bl] (Acc / Prec): overall " in printed and " GLT [test_bbl]" in printed
    results = json.loads((run / "results.json").read_text())
    assert list(results["glt"]) == ["test_bl", "test_bbl", "test_lt"]
    clt = results["glt"]["test_bl"]
    assert clt["protocol"] == "CLT" and clt["metrics"]["overall"]["count"] == 100
    assert set(clt["metrics"]["attribute_splits"]) == {"many_a", "medium_a", "few_a"}
    assert (
        abs(clt["metrics"]["overall"]["accuracy"] - results["test"]["top1"]) < 1e-6
    )  # Test-CBL is the headline test set
    assert "## GLT protocols" in (run / "report.md").read_text()

    assert (
        main(["eval", str(run / "checkpoints" / "last.pt"), "--out", str(tmp_path / "eval")]) == 0
    )
    printed = capsys.readouterr().out
    assert "CLT [test_bl]" in printed and "GLT [test_bbl]" in printed
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert evaluated["glt"]["test_bbl"]["metrics"] == results["glt"]["test_bbl"]["metrics"]

    # Logit-Adj + IFL post hoc on the same checkpoint
    out = tmp_path / "eval_la"
    assert (
        main(
            [
                "eval",
                str(run / "checkpoints" / "last.pt"),
                "method.posthoc_tau=1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    adjusted = json.loads((out / "results.json").read_text())
    assert (
        adjusted["test"]["nll"] != results["test"]["nll"]
    )  # logits shifted by -log prior (argmax may agree)


@pytest.mark.parametrize(
    "recipe",
    [
        "cifar10_glt_quick_bsm_ifl",
        "cifar10_glt_quick_mixup_ifl",
        "cifar10_glt_quick_randaug_ifl",
        "cifar10_glt_quick_la_ifl",
        "cifar10_glt_quick_ifl_1env",
        "cifar10_glt_quick_ifl_3env",
        "cifar10_glt_quick_bsm_alt",
    ],
)
def test_every_quick_glt_variant_runs_end_to_end(cifar10_jpeg_root, tmp_path, recipe):
    extra = IFL_ONE_EPOCH if "ifl" in recipe else {}
    assert (
        main(
            ["train", recipe, *glt_tiny(cifar10_jpeg_root, **extra), "--out", str(tmp_path / "run")]
        )
        == 0
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    expected = ["test_bl", "test_bbl"] + ([] if recipe.endswith("_alt") else ["test_lt"])
    assert list(results["glt"]) == expected
    assert results["glt"]["test_bbl"]["protocol"] == ("ALT" if recipe.endswith("_alt") else "GLT")


@pytest.mark.parametrize("recipe", ["cifar10_glt_quick_crt_ifl", "cifar10_glt_quick_lws_ifl"])
def test_stage2_on_ifl_trains_its_stage1_first(cifar10_jpeg_root, tmp_path, recipe):
    out = tmp_path / "stage2"
    assert (
        main(["train", recipe, *glt_tiny(cifar10_jpeg_root), STAGE1_IFL_TINY, "--out", str(out)])
        == 0
    )
    stage1 = json.loads((tmp_path / "cifar10_glt_quick_ifl" / "results.json").read_text())
    assert stage1["method"] == "ifl"
    assert json.loads((out / "results.json").read_text())["glt"]["test_bl"]["protocol"] == "CLT"


def test_glt_bench_and_table_through_the_cli(cifar10_jpeg_root, tmp_path, capsys):
    out = tmp_path / "bench"
    assert (
        main(
            [
                "glt-bench",
                "cifar10_glt_quick_baseline",
                *glt_tiny(cifar10_jpeg_root),
                "--seeds",
                "0",
                "--label",
                "CE",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "**CLT**" in printed and "**ALT**" in printed and "| CE |" in printed
    summary = json.loads((out / "glt_summary.json").read_text())
    assert {"CLT overall", "GLT overall", "ALT overall", "ALT tail attr."} <= set(summary["cells"])
    alt = json.loads(
        (out / "cbl" / "data.glt.train_set=cbl" / "seed0" / "results.json").read_text()
    )
    assert (
        summary["cells"]["ALT overall"]["accuracy"]
        == alt["glt"]["test_bbl"]["metrics"]["overall"]["accuracy"]
    )
    assert alt["data"]["class_counts"] == [20] * 10  # Train-CBL is class-balanced
    # `tailfuse eval A --with B`: the same three protocols from the two checkpoints
    checkpoints = [
        str(out / ts / f"data.glt.train_set={ts}" / "seed0" / "checkpoints" / "last.pt")
        for ts in ("glt", "cbl")
    ]
    capsys.readouterr()
    assert (
        main(["eval", checkpoints[0], "--with", checkpoints[1], "--out", str(tmp_path / "pair")])
        == 0
    )
    printed = capsys.readouterr().out
    assert " ALT [test_bbl]" in printed and " CLT [test_bl]" in printed
    pair = json.loads((tmp_path / "pair" / "glt_table.json").read_text())[0]["cells"]
    assert pair["ALT overall"]["accuracy"] == summary["cells"]["ALT overall"]["accuracy"]
    assert pair["CLT few"] == summary["cells"]["CLT few"]
    assert (
        main(["eval", checkpoints[0], "--with", checkpoints[0]]) == 2
    )  # two Train-GLT runs: refused
    table = tmp_path / "table.md"
    assert (
        main(["glt-table", str(out), str(out), "--labels", "first", "second", "--out", str(table)])
        == 0
    )
    assert "| first |" in table.read_text() and "| second |" in table.read_text()


def test_build_glt_writes_both_files(tmp_path, capsys):
    from tailfuse.data.glt import read_glt_annotation

    from .fakes import write_image_folder

    root = write_image_folder(tmp_path / "images", [100, 100, 100], [40, 40, 40])
    arguments = [
        "data",
        "build-glt",
        "--root",
        str(root),
        "--out",
        str(tmp_path / "ann"),
        "--rho",
        "4",
        "--attribute",
        "rotation",
        "--mode",
        "aligned",
    ]
    assert main(arguments) == 2
    assert capsys.readouterr().err.startswith(
        "error: class c0 has 40 test images; the GLT test sets need 600"
    )
    assert not (tmp_path / "ann").exists()  # nothing half-written
    assert (
        main(
            [
                *arguments,
                "--gbl-per-rank",
                "3",
                "--cbl-test-per-class",
                "10",
                "--test-lt-pool-per-class",
                "10",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "(Train-GLT): train " in printed and "(Train-CBL): train " in printed
    files = sorted((tmp_path / "ann").iterdir())
    assert [f.name for f in files] == [
        "cifar10_glt_rotation_aligned_rho4_seed0_intra_lt_inter_bl.json",
        "cifar10_glt_rotation_aligned_rho4_seed0_intra_lt_inter_lt.json",
        "cifar10_glt_rotation_aligned_rho4_seed0_preview.png",
    ]
    assert files[2].stat().st_size > 2000
    annotation = read_glt_annotation(files[1], root)
    assert set(annotation.splits["test_bbl"].transforms["rotation"].tolist()) == {0, 90, 180}
