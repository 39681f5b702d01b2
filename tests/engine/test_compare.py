"""``tailfuse compare``: two tiny recipes x two seeds, table values from the runs,
reuse on a second call."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from tailfuse.cli import main
from tailfuse.config import load_recipe
from tailfuse.engine.compare import parse_row, plan_runs
from tailfuse.errors import ConfigError
from tailfuse.eval.compare_report import markdown_table, read_published

from ..conftest import stop_training_at_epoch, tiny_overrides


def test_parse_row_label_recipe_and_overrides():
    row = parse_row("DR + H2T=cifar10_lt_quick_dr_h2t:method.h2t.ratio=0.5 train.epochs=3")
    assert (row.label, row.recipe, row.overrides) == (
        "DR + H2T",
        "cifar10_lt_quick_dr_h2t",
        ["method.h2t.ratio=0.5", "train.epochs=3"],
    )
    assert parse_row("cifar10_lt_quick").label == "cifar10_lt_quick"


def test_markdown_table_prints_paper_figures_and_the_difference():
    entry = {"value": "GCL", "runs": 2, "paper": 48.61}
    for column, (mean, std) in {
        "all": (50.0, 1.0),
        "many": (60.0, 0.5),
        "medium": (40.0, 0.0),
        "few": (30.0, 2.0),
        "macro_precision": (55.5, 0.25),
        "ece": (3.0, 0.125),
    }.items():
        entry[f"{column}_mean"], entry[f"{column}_std"] = mean, std
    table = markdown_table([entry])
    assert "paper (all) | Δ all |" in table.splitlines()[0]
    assert (
        "| GCL | 2 | 50.00 ± 1.00 | 60.00 ± 0.50 | 40.00 ± 0.00 | 30.00 ± 2.00 | 55.50 ± 0.25 | "
        "3.00 ± 0.12 | 48.61 | +1.39 |"
    ) in table


def test_markdown_table_shows_no_spread_for_a_single_run():
    entry = {"value": "DR + H2T", "runs": 1}
    for column in ("all", "many", "medium", "few", "macro_precision", "ece"):
        entry[f"{column}_mean"], entry[f"{column}_std"] = 68.41, 0.0
    row = markdown_table([entry]).splitlines()[-1]
    assert row == "| DR + H2T | 1 | 68.41 | 68.41 | 68.41 | 68.41 | 68.41 | 68.41 |"


def test_published_figures_file_errors_are_clear(tmp_path):
    path = tmp_path / "paper.yaml"
    path.write_text("- {recipe: x}\n")
    with pytest.raises(ConfigError, match="needs 'paper'"):
        read_published(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]\n", "compare needs at least one row (a recipe)"),
        ("recipe: cifar10_lt_quick\n", "must be a YAML list of mappings with a 'recipe'"),
        ("- {label: CE}\n", "must be a YAML list of mappings with a 'recipe'"),
        ("- [unclosed\n", "cannot read rows file"),
        (None, "cannot read rows file"),
    ],
)
@pytest.mark.parametrize("mode", [[], ["--plan"], ["--report-only"]])
def test_a_bad_rows_file_is_one_error_line_and_writes_nothing(
    tmp_path, capsys, content, message, mode
):
    rows_file = tmp_path / "rows.yaml"
    if content is not None:
        rows_file.write_text(content)
    out = tmp_path / "out"
    arguments = ["compare", "--rows-file", str(rows_file), "--seeds", "0", "--out", str(out)]

    assert main([*arguments, *mode]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert not out.exists()


def test_the_data_location_is_part_of_a_runs_identity(tmp_path, monkeypatch):
    """Two copies of a dataset are two runs (stage 1 and 2); spellings of one folder are one run."""
    jpeg, lossless = tmp_path / "cifar10-jpeg", tmp_path / "cifar10-lossless"
    jpeg.mkdir()
    lossless.mkdir()
    (tmp_path / "link").symlink_to(jpeg)
    monkeypatch.chdir(tmp_path)
    roots = {
        "jpeg": str(jpeg),
        "lossless": str(lossless),
        "relative": "./cifar10-jpeg",
        "symlink": str(tmp_path / "link"),
    }

    def planned(rows, overrides):
        _, cells = plan_runs([parse_row(row) for row in rows], [0], tmp_path / "out", overrides)
        return {
            label: (cells[(label, 0)].run_dir, cells[(label, 0)].config.init.run_dir)
            for label, _ in cells
        }

    # in each row's overrides
    runs = planned(
        [f"{label}=cifar10_lt_quick_crt:data.root={root}" for label, root in roots.items()]
        + [f"quiet=cifar10_lt_quick_crt:data.root={jpeg} train.threads=1 train.progress=false"],
        [],
    )
    assert runs["jpeg"][0] != runs["lossless"][0] and runs["jpeg"][1] != runs["lossless"][1]
    assert runs["relative"] == runs["symlink"] == runs["quiet"] == runs["jpeg"]
    # in --set, which also reaches stage 1 through init.overrides
    by_set = {
        label: planned(["cRT=cifar10_lt_quick_crt"], [f"data.root={root}", "train.progress=false"])[
            "cRT"
        ]
        for label, root in roots.items()
    }
    assert by_set["jpeg"] == by_set["relative"] == by_set["symlink"] == runs["jpeg"]
    assert by_set["lossless"] == runs["lossless"]


def test_pretrained_weights_enter_a_runs_identity_as_the_resolved_file(tmp_path, monkeypatch):
    """``./weights/w.pth`` from two folders is two runs; two spellings of one file are one."""
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        (folder / "weights").mkdir(parents=True)
    (tmp_path / "link").symlink_to(first)

    def run_dir(folder, weights):
        monkeypatch.chdir(folder)
        row = parse_row(f"CE=cifar10_lt_quick_ce:model.weights={weights} data.root={tmp_path}")
        return plan_runs([row], [0], tmp_path / "out", [])[1][("CE", 0)].run_dir

    relative = run_dir(first, "./weights/w.pth")
    assert (
        relative == run_dir(tmp_path, "a/weights/w.pth") == run_dir(tmp_path, "link/weights/w.pth")
    )
    assert relative == run_dir(second, str(first / "weights" / "w.pth"))
    assert run_dir(second, "./weights/w.pth") != relative


def test_precision_auto_enters_a_runs_identity_as_what_it_resolves_to(monkeypatch, tmp_path):
    """A bf16 run is never reused as an fp32 one; a stage-1 ``auto`` run is the
    explicit one of its precision."""
    from tailfuse.engine import runtime

    def run_dirs(native_bf16, precision=None):
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native_bf16)
        overrides = ["train.device=cpu"] + ([f"train.precision={precision}"] if precision else [])
        rows = [parse_row("DR=cifar10_lt_quick_dr")]
        _, cells = plan_runs(rows, [0], tmp_path, overrides)
        return cells[("DR", 0)].run_dir, cells[("DR", 0)].config.init.run_dir

    assert load_recipe("cifar10_lt_quick_dr").train.precision == "auto"
    (bf16_stage2, bf16_stage1), (fp32_stage2, fp32_stage1) = run_dirs(True), run_dirs(False)
    assert bf16_stage2 != fp32_stage2 and bf16_stage1 != fp32_stage1
    assert run_dirs(True, "bf16")[1] == bf16_stage1 and run_dirs(False, "fp32")[1] == fp32_stage1
    assert run_dirs(False, "fp32")[1] == run_dirs(True, "fp32")[1] != run_dirs(False, "bf16")[1]


def test_compare_two_recipes_two_seeds_then_reuse(cifar10_jpeg_root, tmp_path, capsys):
    out = tmp_path / "compare"
    published = tmp_path / "paper.yaml"
    published.write_text("- {label: CE, paper: 70.70, source: 'FFN Table 5'}\n")
    overrides = [f"--set={item}" for item in tiny_overrides(cifar10_jpeg_root, epochs=1)]
    overrides += ["--set=train.max_steps_per_epoch=2", "--set=train.eval_every=0"]
    arguments = [
        "compare",
        "CE=cifar10_lt_quick_ce",
        "Balanced Softmax=cifar10_lt_quick_balanced_softmax",
        *overrides,
        "--seeds",
        "0",
        "1",
        "--published",
        str(published),
        "--out",
        str(out),
    ]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "| CE | 2 |" in printed and "70.70 |" in printed

    report = json.loads((out / "compare.json").read_text())
    assert [(run["value"], run["seed"]) for run in report["runs"]] == [
        ("CE", 0),
        ("CE", 1),
        ("Balanced Softmax", 0),
        ("Balanced Softmax", 1),
    ]
    for run in report["runs"]:
        results = json.loads((tmp_path / run["run_dir"] / "results.json").read_text())
        assert results["seed"] == run["seed"]
        assert run["all"] == results["test"]["top1"] and run["ece"] == results["test"]["ece"]
        assert run["few"] == results["test"]["group_accuracy"]["few"]
        assert run["macro_precision"] == results["test"]["macro_precision"]
    ce = [run for run in report["runs"] if run["value"] == "CE"]
    summary = report["summary"][0]
    assert summary["value"] == "CE" and summary["all_mean"] == pytest.approx(
        (ce[0]["all"] + ce[1]["all"]) / 2
    )
    assert summary["all_std"] == pytest.approx(abs(ce[0]["all"] - ce[1]["all"]) / 2**0.5)
    assert summary["difference"] == pytest.approx(summary["all_mean"] - 70.70)
    assert report["summary"][1]["paper"] is None
    with (out / "compare.csv").open() as handle:
        assert [line["method"] for line in csv.DictReader(handle)] == ["CE", "Balanced Softmax"]
    assert (out / "compare.png").stat().st_size > 1000 and "| CE | 2 |" in (
        out / "compare.md"
    ).read_text()

    # a second call re-uses every finished run
    stamps = {
        run["run_dir"]: (tmp_path / run["run_dir"] / "results.json").stat().st_mtime_ns
        for run in report["runs"]
    }
    assert main(arguments) == 0
    for run_dir, stamp in stamps.items():
        assert (tmp_path / run_dir / "results.json").stat().st_mtime_ns == stamp
    assert len(list((out / "runs").iterdir())) == 4


def test_compare_resumes_a_run_that_stopped_to_the_uninterrupted_result(
    cifar10_jpeg_root, tmp_path, capsys, monkeypatch
):
    """A run left half-done (a session's end, Ctrl-C) is continued from its checkpoint by
    the next compare call, not started again, and ends as a run that never stopped."""
    from tailfuse.engine.checkpoint import load_checkpoint
    from tailfuse.engine.trainer import train

    overrides = tiny_overrides(cifar10_jpeg_root, epochs=2)
    overrides += ["train.max_steps_per_epoch=2", "train.eval_every=0"]
    out = tmp_path / "compare"
    _, cells = plan_runs([parse_row("CE=cifar10_lt_quick_ce")], [0], out, overrides)
    run = cells[("CE", 0)]
    train(run.config, tmp_path / "straight")
    train_normally = stop_training_at_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train(run.config, run.run_dir)
    train_normally()
    arguments = ["compare", "CE=cifar10_lt_quick_ce", *[f"--set={item}" for item in overrides]]
    arguments += ["--seeds", "0", "--out", str(out)]
    assert main([*arguments, "--plan"]) == 0
    assert "1 stopped (compare resumes them)" in capsys.readouterr().out
    assert main(arguments) == 0
    results = json.loads((run.run_dir / "results.json").read_text())
    assert [start["epoch"] for start in results["environment"]["starts"]] == [0, 1]
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(run.run_dir / "checkpoints" / "last.pt")
    for key, value in straight["session"]["model"].items():
        assert torch.equal(value, resumed["session"]["model"][key]), key
    report = json.loads((out / "compare.json").read_text())
    assert report["runs"][0]["all"] == results["test"]["top1"]


def test_stage2_rows_share_the_stage1_run_of_each_seed_with_the_stage1_row(
    cifar10_jpeg_root, tmp_path, capfd
):
    """CE + mixup (cifar10_lt_quick) is cRT's stage 1: per seed, one run serves both rows,
    and cRT of a seed waits for it although its place in the plan comes next."""
    import tailfuse

    overrides = [
        *tiny_overrides(cifar10_jpeg_root, epochs=1),
        "train.max_steps_per_epoch=2",
        "train.eval_every=0",
    ]
    rows = ["cRT=cifar10_lt_quick_crt", "CE + mixup=cifar10_lt_quick"]
    summary = tailfuse.compare(
        rows, [0, 1], tmp_path, overrides, jobs=2, threads=2
    )  # two processes, a thread each
    assert [entry["value"] for entry in summary] == ["cRT", "CE + mixup"]
    printed = capfd.readouterr().out
    assert "stage-1 checkpoint" not in printed  # no cRT run had to train its stage 1 itself
    for seed in (0, 1):
        assert f"[cRT seed {seed}] training in {tmp_path}" in printed  # the row's label
        assert f"[cRT seed {seed}] finished\n" in printed
    runs = sorted(path.name for path in (tmp_path / "runs").iterdir())
    assert len(runs) == 4 and sum(name.startswith("cifar10_lt_quick-") for name in runs) == 2
    report = json.loads((tmp_path / "compare.json").read_text())
    stage1_dirs = {
        run["seed"]: run["run_dir"] for run in report["runs"] if run["value"] == "CE + mixup"
    }
    for run in report["runs"]:
        if run["value"] == "cRT":
            saved = json.loads((tmp_path / run["run_dir"] / "results.json").read_text())
            assert saved["seed"] == run["seed"]
            config = (tmp_path / run["run_dir"] / "config.yaml").read_text()
            assert (
                stage1_dirs[run["seed"]] in config
            )  # init.run_dir: the CE + mixup run of the same seed


def test_lines_of_runs_trained_side_by_side_name_their_run():
    import io

    from tailfuse.engine.compare import PrefixedLines

    target = io.StringIO()
    stream = PrefixedLines(target, "[ce seed 1] ")
    stream.write("epoch 1: loss 2.0")
    assert target.getvalue() == ""  # an unfinished line waits for its end
    stream.write(" lr 0.1\nepoch 2: loss 1.5\nfinal")
    stream.close_line()
    assert target.getvalue().splitlines() == [
        "[ce seed 1] epoch 1: loss 2.0 lr 0.1",
        "[ce seed 1] epoch 2: loss 1.5",
        "[ce seed 1] final",
    ]


def test_a_parallel_worker_prefixes_every_line_of_its_run(cifar10_jpeg_root, tmp_path, capsys):
    from tailfuse.config import config_to_dict, load_recipe
    from tailfuse.engine.compare import _train_one

    overrides = [
        *tiny_overrides(cifar10_jpeg_root, epochs=1),
        "train.max_steps_per_epoch=2",
        "train.seed=0",
    ]
    config = config_to_dict(load_recipe("cifar10_lt_quick_ce", overrides))
    results = _train_one(config, str(tmp_path / "run"), 1, "CE seed 0")
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line]
    assert lines and all(line.startswith("[CE seed 0] ") for line in lines)
    assert any(line.startswith("[CE seed 0] epoch 1: loss ") for line in lines)
    assert results["seed"] == 0 and (tmp_path / "run" / "results.json").is_file()


def test_a_stage2_identity_follows_its_stage1_run_not_how_its_overrides_are_spelt(tmp_path):
    from tailfuse.engine.compare import run_identity

    rows = [parse_row("DR=cifar10_lt_quick_dr")]
    base = ["data.root=/data/cifar10", "train.progress=false"]
    names = set()
    for out, extra in [
        (tmp_path / "a", ["train.precision=fp32"]),
        (tmp_path / "a", []),  # the recipe's precision: auto, fp32 on a CPU without bf16
        (tmp_path / "b", ["train.precision=fp32", "train.threads=1"]),  # moved, and threads
    ]:
        runs, _ = plan_runs(rows, [0], out, base + extra)
        names.add(tuple(run.run_dir.name for run in runs))
    if len(names) == 2:  # a CPU with native bf16: auto is bf16 there, another stage 1
        assert len({stage1 for stage1, _ in names}) == 2
    else:
        assert len(names) == 1
    # another stage 1 (another seed of it) is another stage-2 run
    (stage1, stage2), cells = plan_runs(rows, [1], tmp_path / "a", base)
    assert stage2.run_dir.name not in {name for _, name in names}
    # the identity before the stage 1 entered by its own: the overrides' text and the folder
    assert run_identity(stage2.config) != stage2.run_dir.name


def test_a_run_made_under_the_earlier_stage2_identity_is_reused(tmp_path):
    from tailfuse.engine.compare import run_identity

    rows = [parse_row("DR=cifar10_lt_quick_dr")]
    overrides = ["data.root=/data/cifar10", "train.precision=fp32"]
    (stage1, stage2), _ = plan_runs(rows, [0], tmp_path, overrides)
    earlier_name = tmp_path / "runs" / run_identity(stage2.config)
    assert earlier_name != stage2.run_dir and not stage2.run_dir.exists()
    earlier_name.mkdir(parents=True)
    (_, reused), _ = plan_runs(rows, [0], tmp_path, overrides)
    assert reused.run_dir == earlier_name  # found and resumed or reused, not trained again
    stage2.run_dir.mkdir()  # once the current name exists it wins
    (_, current), _ = plan_runs(rows, [0], tmp_path, overrides)
    assert current.run_dir == stage2.run_dir


def test_runs_start_in_row_order_each_once_its_stage1_is_finished(tmp_path):
    """A stage-2 row whose stage 1 is done starts before later rows, not after every stage 1."""
    from tailfuse.engine.compare import earlier_run_dirs, startable

    rows = [
        parse_row("GCL=cifar10_lt_quick_gcl"),
        parse_row("DR=cifar10_lt_quick_dr"),
        parse_row("LDAM-DRW=cifar10_lt_quick_ldam_drw"),
    ]
    overrides = ["data.root=/data/cifar10", "train.precision=fp32"]
    runs, cells = plan_runs(rows, [0, 1], tmp_path, overrides)
    names = [run.config.name for run in runs]
    assert names == [
        *["cifar10_lt_quick_gcl_stage1", "cifar10_lt_quick_gcl"] * 2,
        *["cifar10_lt_quick", "cifar10_lt_quick_dr"] * 2,
        *["cifar10_lt_quick_ldam_drw"] * 2,
    ]
    for index, run in enumerate(runs):  # every earlier stage is planned before its run
        assert all(
            run_dir in [earlier.run_dir for earlier in runs[:index]]
            for run_dir in earlier_run_dirs(run)
        )
    gcl_stage1 = [run for run in runs if run.config.name == "cifar10_lt_quick_gcl_stage1"]
    dr_stage1 = [run for run in runs if run.config.name == "cifar10_lt_quick"]
    assert earlier_run_dirs(cells[("GCL", 1)]) == [gcl_stage1[1].run_dir]
    assert earlier_run_dirs(cells[("LDAM-DRW", 0)]) == []

    # GCL's stage 1 finished for both seeds: its stage 2 goes first, DR waits for its stage 1
    waiting = [run for run in runs if run not in gcl_stage1]
    unfinished = {run.run_dir for run in waiting}
    assert [run.config.name for run in startable(waiting, unfinished)[:2]] == [
        "cifar10_lt_quick_gcl"
    ] * 2
    assert cells[("DR", 0)] not in startable(waiting, unfinished)
    unfinished.discard(dr_stage1[0].run_dir)
    assert cells[("DR", 0)] in startable(waiting, unfinished)
    assert cells[("DR", 1)] not in startable(waiting, unfinished)


def test_multi_expert_rows_plan_like_any_other_and_share_their_stage1(tmp_path):
    """The quick expert rows file (issue 13): RIDE + H2T and ResLT + H2T, and their controls
    without H2T, train on the RIDE and ResLT rows' own runs of the same seed, which each runs
    once."""
    from pathlib import Path

    from tailfuse.engine.compare import earlier_run_dirs, read_rows

    rows_file = Path(__file__).parents[2] / "benchmarks/compare_cifar10_lt_if100_quick_experts.yaml"
    rows = read_rows(rows_file)
    overrides = ["data.root=/data/cifar10", "train.precision=fp32"]
    runs, cells = plan_runs(rows, [0, 1], tmp_path, overrides)
    assert len(runs) == 18 == len({run.run_dir for run in runs})  # 9 rows x 2 seeds, none twice
    stage2_rows = {
        "RIDE": ("RIDE + H2T", "RIDE + DR (stage 2 without H2T)"),
        "ResLT": ("ResLT + H2T", "ResLT + stage 2 without H2T"),
    }
    for seed in (0, 1):
        for base, labels in stage2_rows.items():
            for label in labels:
                assert earlier_run_dirs(cells[(label, seed)]) == [cells[(base, seed)].run_dir]
        assert earlier_run_dirs(cells[("TADE", seed)]) == []
    assert cells[("RIDE", 0)].run_dir != cells[("RIDE", 1)].run_dir
    methods = {label: cells[(label, 0)].config.method.name for label, _ in cells}
    assert methods == {
        "BBN": "bbn",
        "BBN (official step shape)": "bbn",
        "RIDE": "ride",
        "RIDE + H2T": "dr",
        "RIDE + DR (stage 2 without H2T)": "dr",
        "ResLT": "reslt",
        "ResLT + H2T": "reslt_stage2",
        "ResLT + stage 2 without H2T": "reslt_stage2",
        "TADE": "tade",
    }
    steps = cells[("BBN (official step shape)", 0)].config.schedule
    assert (steps.name, steps.milestones, steps.gamma) == ("multistep", [24, 32], 0.01)
    assert cells[("BBN", 0)].config.schedule.name == "cosine"


def planned_names_of_committed_runs(tmp_path, results_folder, rows_file, root, precision, seeds):
    """Copy docs/results/RESULTS_FOLDER/runs into TMP_PATH and plan ROWS_FILE there with the
    README command's overrides: (the committed folder names, the names compare plans)."""
    import os
    import shutil
    from pathlib import Path

    from tailfuse.engine.compare import read_rows

    if os.path.realpath(root) != root:
        pytest.skip(f"{root} resolves elsewhere here, so its runs have other identities")
    repository = Path(__file__).parents[2]
    committed = repository / "docs/results" / results_folder / "runs"
    shutil.copytree(committed, tmp_path / "runs")
    rows = read_rows(repository / "benchmarks" / rows_file)
    overrides = [f"data.root={root}", f"train.precision={precision}", "train.progress=false"]
    runs, _ = plan_runs(rows, seeds, tmp_path, overrides)
    planned = {Path(run.run_dir).name for run in runs}
    return {folder.name for folder in committed.iterdir()}, planned


def test_the_committed_quick_comparison_runs_keep_their_identities(tmp_path):
    """compare finds every run summarised in docs/results/compare_c10_if100_quick/runs under
    the README's command: a new config key or identity rule must not rename finished runs
    (and so train them again)."""
    committed, names = planned_names_of_committed_runs(
        tmp_path,
        "compare_c10_if100_quick",
        "compare_cifar10_lt_if100_quick.yaml",
        "/work/shared/data/cifar10-jpeg",  # as the README's command wrote it
        "fp32",
        [0, 1],
    )
    # the stage-2 rows on CE + mixup were named when a stage-2 identity hashed its stage-1
    # folder's path (/work/runs/c12/runs/...): compare finds those only in that folder
    legacy = ("crt", "lws", "tau_norm", "dr", "dr_h2t", "mislas", "mislas_h2t")
    current = {
        name
        for name in committed
        if name.rsplit("-", 1)[0].removeprefix("cifar10_lt_quick_") not in legacy
    }
    assert len(current) >= 20 and current <= names
    assert len(names) == 40


def test_the_committed_multi_expert_runs_keep_their_identities(tmp_path):
    """compare finds the multi-expert runs summarised in
    docs/results/compare_c10_if100_quick_experts (bf16: `auto` on the machine that ran them;
    naming it keeps the test machine-independent)."""
    committed, names = planned_names_of_committed_runs(
        tmp_path,
        "compare_c10_if100_quick_experts",
        "compare_cifar10_lt_if100_quick_experts.yaml",
        "/work/shared/data/cifar10-jpeg",
        "bf16",
        [0, 1],
    )
    assert len(committed) >= 14 and committed <= names
    assert len(names) == 18  # 9 rows, 2 seeds


def test_the_committed_full_protocol_runs_keep_their_identities(tmp_path):
    """compare finds the 200-epoch runs summarised in docs/results/reproduce_c10_if100/runs
    (issue 11) under the README's command on the lossless copy, bf16, seed 0."""
    committed, names = planned_names_of_committed_runs(
        tmp_path,
        "reproduce_c10_if100",
        "compare_cifar10_lt_if100_full.yaml",
        "/work/shared/data/cifar10-lossless",
        "bf16",
        [0],
    )
    assert len(committed) >= 2 and committed <= names
    assert len(names) == 23  # 22 rows, and GCL's stage 1


def test_the_committed_float32_full_protocol_runs_keep_their_identities(tmp_path):
    """The float32 rows of issue 11 (AVX2-only machine, docs/results/reproduce_c10_if100/fp32):
    CB-CE divided by the weight sum keeps its identity though the recipe's divisor changed."""
    committed, names = planned_names_of_committed_runs(
        tmp_path,
        "reproduce_c10_if100/fp32",
        "compare_cifar10_lt_if100_full.yaml",
        "/work/shared/data/cifar10-lossless",
        "fp32",
        [0],
    )
    assert "cifar10_lt_if100_cb_ce-4d5a68f85ef7" in committed
    assert committed <= names


def _without_later_keys(method: dict) -> dict:
    """A method section without the keys added later at their neutral values, which an older
    run's config.yaml lacks (IDENTITY_LATER_KEYS)."""
    import copy

    from tailfuse.engine.compare import IDENTITY_LATER_KEYS

    method = copy.deepcopy(method)
    for key, neutral in IDENTITY_LATER_KEYS.items():
        section, *path = key.split(".")
        node = method if section == "method" else None
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(path[-1], object()) == neutral:
            del node[path[-1]]
    return method


@pytest.mark.parametrize(("folder_name", "precision"), [("runs", "bf16"), ("fp32/runs", "fp32")])
def test_the_readme_full_protocol_rows_are_the_committed_runs_figures(folder_name, precision):
    """Each committed 200-epoch run (issue 11) has its README row, and the row's all / many /
    medium / few are its results.json's, rounded to two decimals. A run's row is the one whose
    recipe and overrides give its method (two rows share FFN's KPS recipe, one without mixup;
    two CB-CE's, one divided by the weight sum)."""
    import re
    from pathlib import Path

    import yaml

    from tailfuse.config import config_to_dict
    from tailfuse.engine.compare import read_rows

    repository = Path(__file__).parents[2]
    readme = (repository / "README.md").read_text()
    section = readme.split("### Published protocol, CIFAR-10-LT IF 100", 1)[1].split("\n### ")[0]
    rows = read_rows(repository / "benchmarks/compare_cifar10_lt_if100_full.yaml")
    methods = {
        row.label: (
            row.recipe,
            _without_later_keys(config_to_dict(load_recipe(row.recipe, row.overrides))["method"]),
        )
        for row in rows
    }
    folders = sorted((repository / "docs/results/reproduce_c10_if100" / folder_name).iterdir())
    assert folders
    for folder in folders:
        results = json.loads((folder / "results.json").read_text())
        assert results["epochs"] == 200 and results["selection"]["rule"] == "final"
        assert results["environment"]["precision"] == precision
        config = yaml.safe_load((folder / "config.yaml").read_text())
        (label,) = [
            label
            for label, (recipe, method) in methods.items()
            if recipe == config["name"] and method == _without_later_keys(config["method"])
        ]
        label = label.replace("tau-norm", "τ-norm")
        lines = [line for line in section.splitlines() if line.startswith(f"| {label} |")]
        assert len(lines) == 1, label
        figures = [float(cell) for cell in re.split(r"\s*\|\s*", lines[0])[2:6]]
        test = results["test"]
        expected = [test["top1"]] + [test["group_accuracy"][g] for g in ("many", "medium", "few")]
        assert figures == [round(value, 2) for value in expected], label


def test_the_readme_multi_expert_table_is_the_committed_table_of_the_committed_runs():
    """README's multi-expert table is the committed compare.md's, and each row's all / many /
    medium / few are the mean ± sample std of its committed runs' results.json (issue 13)."""
    import re
    import statistics
    from collections import defaultdict
    from pathlib import Path

    from tailfuse.engine.compare import read_rows

    repository = Path(__file__).parents[2]
    folder = repository / "docs/results/compare_c10_if100_quick_experts"
    readme = (repository / "README.md").read_text()
    section = readme.split("### Multi-expert rows, CIFAR-10-LT IF 100 quick", 1)[1]
    section = section.split("\n### ")[0]
    table = [line for line in (folder / "compare.md").read_text().splitlines() if line[:2] == "| "]
    assert [line for line in section.splitlines() if line[:2] == "| "] == table
    rows_file = repository / "benchmarks/compare_cifar10_lt_if100_quick_experts.yaml"
    labels = {row.recipe: row.label for row in read_rows(rows_file)}
    tests_by_label = defaultdict(list)
    for run in (folder / "runs").iterdir():
        results = json.loads((run / "results.json").read_text())
        tests_by_label[labels[results["name"]]].append(results["test"])
    assert len(table) - 1 == len(tests_by_label) >= 8  # the header, then one line a row
    for line in table[1:]:
        cells = re.split(r"\s*\|\s*", line.strip("| "))
        tests = tests_by_label[cells[0]]
        assert int(cells[1]) == len(tests) == 2, cells[0]
        for cell, group in zip(cells[2:6], ("all", "many", "medium", "few"), strict=True):
            values = [t["top1"] if group == "all" else t["group_accuracy"][group] for t in tests]
            expected = f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
            assert cell == expected, (cells[0], group)


def test_plan_says_what_compare_would_run_in_which_order_and_trains_nothing(tmp_path, capsys):
    rows = [parse_row("DR=cifar10_lt_quick_dr"), parse_row("LDAM-DRW=cifar10_lt_quick_ldam_drw")]
    overrides = ["data.root=/data/cifar10", "train.precision=fp32"]
    (stage1, dr, ldam), _ = plan_runs(rows, [0], tmp_path, overrides)
    arguments = ["compare", "DR=cifar10_lt_quick_dr", "LDAM-DRW=cifar10_lt_quick_ldam_drw"]
    arguments += ["--seeds", "0", "--out", str(tmp_path), "--plan"]
    for override in overrides:
        arguments += ["--set", override]

    assert main(arguments) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        f"3 runs in {tmp_path / 'runs'}: 0 finished, 0 training now, 0 stopped"
    )
    assert lines[1].split()[:3] == ["not", "started", stage1.run_dir.name]
    assert lines[1].endswith("(cifar10_lt_quick seed 0; stage 1 of DR)")
    assert lines[2].endswith(f"{dr.run_dir.name}  (DR seed 0; after {stage1.run_dir.name})")
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written

    (stage1.run_dir / "results.json").parent.mkdir(parents=True)
    (stage1.run_dir / "results.json").write_text("{}")
    (ldam.run_dir / "checkpoints").mkdir(parents=True)
    (ldam.run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    epochs = [{"epoch": epoch, "train_loss": 1.0} for epoch in (1, 2, 3)]
    (ldam.run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(record) + "\n" for record in [*epochs, {"kind": "other"}])
    )
    assert main(arguments) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "1 finished, 0 training now, 1 stopped (compare resumes them), 1 not started" in lines[0]
    assert lines[1].split()[:2] == ["finished", stage1.run_dir.name]
    assert lines[2].endswith(f"{dr.run_dir.name}  (DR seed 0)")  # its stage 1 is done
    assert lines[3].split()[:6] == ["stopped", "after", "epoch", "3", "of", "40"]
    assert "h more" not in lines[3]  # no seconds logged, no estimate

    # with each epoch's seconds: the rest at the median of the last five epochs' pace
    paces = [900.0, 100.0, 120.0, 110.0, 5000.0, 130.0]  # the first and a paused one stand out
    epochs = [
        {"epoch": epoch, "train_loss": 1.0, "seconds": seconds}
        for epoch, seconds in enumerate(paces, start=1)
    ]
    (ldam.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epochs))
    assert main(arguments) == 0
    line = capsys.readouterr().out.splitlines()[3]
    hours = (40 - 6) * 120.0 / 3600  # median of 100, 120, 110, 5000, 130
    assert f"stopped after epoch 6 of 40, about {hours:.1f} h more at its last epochs' pace" in line

    # another process holds the run's lock: training now, not stopped
    import subprocess
    import sys

    (ldam.run_dir / ".tailfuse.lock").write_text("12345\n")  # a stale pid: stopped still
    assert main(arguments) == 0
    assert "0 training now, 1 stopped" in capsys.readouterr().out
    hold = (
        "import sys, time; from pathlib import Path; from tailfuse.engine.rundir import RunLock; "
        "lock = RunLock(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(ldam.run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(arguments) == 0
        lines = capsys.readouterr().out.splitlines()
        assert "1 finished, 1 training now, 0 stopped" in lines[0]
        assert lines[3].lstrip().startswith("training now, epoch 6 of 40 done, about")
    finally:
        holder.kill()
        holder.wait()
    assert main(arguments) == 0  # the holder died: the run is stopped again
    assert "0 training now, 1 stopped" in capsys.readouterr().out
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == sorted(
        [stage1.run_dir.name, ldam.run_dir.name]
    )


def test_report_only_tables_the_finished_rows_names_the_others_and_trains_nothing(tmp_path, capsys):
    rows = ["CE=cifar10_lt_quick_ce", "LDAM-DRW=cifar10_lt_quick_ldam_drw"]
    overrides = ["data.root=/data/cifar10", "train.precision=fp32"]
    _, cells = plan_runs([parse_row(row) for row in rows], [0, 1], tmp_path, overrides)
    for (label, seed), top1 in [(("CE", 0), 60.0), (("CE", 1), 62.0), (("LDAM-DRW", 0), 70.0)]:
        run_dir = cells[(label, seed)].run_dir
        run_dir.mkdir(parents=True)
        test = {
            "top1": top1,
            "group_accuracy": {"many": 80.0, "medium": 50.0, "few": 20.0},
            "macro_precision": 65.0,
            "ece": 5.0,
            "per_class_accuracy": [80.0, 50.0, 20.0],
        }
        results = {"test": test, "data": {"class_counts": [100, 10, 1]}}
        (run_dir / "results.json").write_text(json.dumps(results))
    arguments = ["compare", *rows, "--seeds", "0", "1", "--out", str(tmp_path), "--report-only"]
    for override in overrides:
        arguments += ["--set", override]

    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "not finished yet, left out of the table: LDAM-DRW" in out
    assert not cells[("LDAM-DRW", 1)].run_dir.exists()  # nothing trained
    report = json.loads((tmp_path / "compare.json").read_text())
    assert report["unfinished_rows"] == ["LDAM-DRW"]
    assert [entry["value"] for entry in report["summary"]] == ["CE"]
    assert report["summary"][0]["all_mean"] == pytest.approx(61.0)
    markdown = (tmp_path / "compare.md").read_text()
    assert "Not finished yet, left out: LDAM-DRW." in markdown and "| CE | 2 | 61.00" in markdown

    # a damaged results.json of a finished run: one line naming it, the table left as it was
    tables = {name: (tmp_path / name).read_bytes() for name in ("compare.md", "compare.json")}
    damaged = cells[("CE", 1)].run_dir / "results.json"
    for content, reason in [
        ('{"test": {"top1": 6', "cannot read the results of the finished run"),
        ('{"data": {}}', "holds no test results; remove"),
    ]:
        damaged.write_text(content)
        assert main(arguments) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: ") and "\n" not in error
        assert str(damaged) in error and reason in error
        assert {name: (tmp_path / name).read_bytes() for name in tables} == tables

    for run_dir in (cells[("CE", 0)].run_dir, cells[("LDAM-DRW", 0)].run_dir):
        (run_dir / "results.json").unlink()
    assert main(arguments) == 2
    assert "error: --report-only: no row has finished all its runs" in capsys.readouterr().err


def test_summaries_copies_the_table_and_each_finished_runs_files_but_no_checkpoint(
    tmp_path, capsys
):
    rows = ["CE=cifar10_lt_quick_ce", "LDAM-DRW=cifar10_lt_quick_ldam_drw"]
    overrides = ["data.root=/data/cifar10", "train.precision=fp32"]
    out = tmp_path / "runs_here"
    _, cells = plan_runs([parse_row(row) for row in rows], [0], out, overrides)
    test = {
        "top1": 60.0,
        "group_accuracy": {"many": 80.0, "medium": 50.0, "few": 20.0},
        "macro_precision": 65.0,
        "ece": 5.0,
        "per_class_accuracy": [80.0, 50.0, 20.0],
    }
    finished, unfinished = cells[("CE", 0)].run_dir, cells[("LDAM-DRW", 0)].run_dir
    for run_dir in (finished, unfinished):
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"weights")
        (run_dir / "config.yaml").write_text(f"name: {run_dir.name}\n")
        (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (finished / ".results.json.77.tmp").write_text("half")  # a temporary sibling
    results = {"test": test, "data": {"class_counts": [100, 10, 1]}}
    (finished / "results.json").write_text(json.dumps(results))
    committed = tmp_path / "docs" / "results" / "c10"
    arguments = ["compare", *rows, "--seeds", "0", "--out", str(out), "--report-only"]
    arguments += ["--summaries", str(committed)]
    for override in overrides:
        arguments += ["--set", override]

    assert main(arguments) == 0
    assert f"summaries copied to {committed}" in capsys.readouterr().out
    assert sorted(path.name for path in committed.iterdir()) == [
        "compare.csv",
        "compare.json",
        "compare.md",
        "compare.png",
        "runs",
    ]
    for name in ("compare.md", "compare.json"):
        assert (committed / name).read_bytes() == (out / name).read_bytes()
    assert [path.name for path in (committed / "runs").iterdir()] == [finished.name]
    copied = committed / "runs" / finished.name
    assert sorted(path.name for path in copied.iterdir()) == [
        "config.yaml",
        "metrics.jsonl",
        "results.json",
    ]
    for path in copied.iterdir():
        assert path.read_bytes() == (finished / path.name).read_bytes()

    # a --summaries path that is a file: one error line before anything is written
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    arguments[arguments.index(str(committed))] = str(blocker)
    (out / "compare.md").unlink()
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"error: --summaries {blocker}: exists and is not a folder"
    assert blocker.read_text() == "keep me" and not (out / "compare.md").exists()


def test_a_failing_parallel_run_is_reported_at_once_and_ends_compare_with_one_error_line(
    cifar10_jpeg_root, tmp_path, capfd
):
    overrides = [
        *tiny_overrides(cifar10_jpeg_root, epochs=2),
        "train.max_steps_per_epoch=3",
        "train.eval_every=0",
    ]
    arguments = [
        "compare",
        "CE=cifar10_lt_quick_ce",
        "Broken=cifar10_lt_quick_ce:data.root=/nowhere",
    ]
    arguments += ["--seeds", "0", "--jobs", "2", "--threads", "2", "--out", str(tmp_path)]
    arguments += ["--summaries", str(tmp_path / "committed")]
    for override in overrides:
        arguments += ["--set", override]
    assert main(arguments) == 2
    err = capfd.readouterr().err
    # the broken run fails while the other trains; it is named at once, not after the other
    assert "[Broken seed 0] failed: " in err and "the 1 still running finish" in err
    assert err.splitlines()[-1].startswith("error: ") and "/nowhere" in err.splitlines()[-1]
    finished = [path for path in (tmp_path / "runs").iterdir() if (path / "results.json").exists()]
    assert len(finished) == 1  # the run beside it still finished
    assert not (tmp_path / "compare.md").exists()  # no table from an incomplete comparison
    # --summaries filed the finished run when it finished, though compare ended in an error
    filed = tmp_path / "committed" / "runs" / finished[0].name
    assert (filed / "results.json").read_bytes() == (finished[0] / "results.json").read_bytes()
    assert not (tmp_path / "committed" / "compare.md").exists()


def test_summaries_files_each_run_when_it_finishes_in_a_sequential_compare(
    cifar10_jpeg_root, tmp_path, capfd
):
    """--jobs 1: the first run is filed before the next one starts (here it fails), so a queue
    stopped later (a session's end, an error) keeps the summaries of what finished."""
    overrides = [
        *tiny_overrides(cifar10_jpeg_root, epochs=1),
        "train.max_steps_per_epoch=2",
        "train.eval_every=0",
    ]
    arguments = ["compare", "CE=cifar10_lt_quick_ce", "Broken=cifar10_lt_quick_ce:data.root=/x"]
    arguments += ["--seeds", "0", "--out", str(tmp_path / "out")]
    arguments += ["--summaries", str(tmp_path / "committed")]
    for override in overrides:
        arguments += ["--set", override]
    assert main(arguments) == 2
    assert capfd.readouterr().err.splitlines()[-1].startswith("error: ")
    (finished,) = [
        p for p in (tmp_path / "out" / "runs").iterdir() if (p / "results.json").exists()
    ]
    filed = tmp_path / "committed" / "runs" / finished.name
    assert sorted(path.name for path in filed.iterdir()) == sorted(
        path.name for path in finished.iterdir() if path.is_file() and path.name[0] != "."
    )
    assert "per_class_accuracy.png" in {path.name for path in filed.iterdir()}
    assert not (filed / "checkpoints").exists()


def test_a_later_added_key_at_its_neutral_value_leaves_a_stage2_identity_unchanged():
    """``model.reslt_eval_weight_power=0.7`` (the value before the key existed) passed to stage 1
    through ``init.overrides`` names the same run as not passing it; another value another run."""
    from tailfuse.config import apply_overrides, build_config, read_recipe_dict
    from tailfuse.engine.compare import run_identity

    def identity(*stage1_overrides):
        recipe = apply_overrides(
            read_recipe_dict("cifar10_lt_quick_reslt_h2t"),
            ["init.run_dir=/runs/reslt", "train.precision=fp32"],
        )
        recipe["init"]["overrides"] = list(stage1_overrides)
        return run_identity(build_config(recipe))

    plain = identity("train.progress=false")
    assert identity("train.progress=false", "model.reslt_eval_weight_power=0.7") == plain
    assert identity("model.reslt_eval_weight_power = 0.70") == plain
    assert identity("model.reslt_eval_weight_power=0.5") != plain
