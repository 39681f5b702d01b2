"""DDP on the CPU (gloo, 2 processes under torchrun) against one process with the same global batch.

Runs are float64 (``train.precision=fp64``): in float32 a freshly initialised ResNet-32 turns
rounding differences into ~1% gradient differences (ReLU masks flip), one process against
itself with another memory format included, which would hide real mismatches. In float64
the two-process runs with SyncBatchNorm must give the one-process weights and metrics to
1e-8. One torchrun job trains every two-process run (tests/engine/ddp_worker.py); those tests
are marked slow (minutes on a shared 2-core machine: run with ``-m slow``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tailfuse
from tailfuse.engine.checkpoint import load_checkpoint
from tailfuse.engine.distributed import share_bounds

from ..conftest import tiny_overrides

WORKER = Path(__file__).with_name("ddp_worker.py")
TOLERANCE = 1e-8


def _overrides(root, **extra) -> list[str]:
    values = {
        "train.precision": "fp64",
        "train.max_steps_per_epoch": 2,
        "train.sync_batchnorm": "true",
        **extra,
    }
    return tiny_overrides(root, epochs=2, **values)


def _torchrun(plan: list[dict], folder: Path) -> None:
    plan_path = folder / "plan.json"
    plan_path.write_text(json.dumps(plan))
    source = str(Path(tailfuse.__file__).resolve().parents[1])
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(plan_path),
    ]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-4000:]


def _model(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["session"]


def _largest_difference(first: dict, second: dict) -> float:
    return max(
        float((first[key].double() - second[key].double()).abs().max())
        for key in first
        if first[key].is_floating_point()
    )


def _test_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())["test"]


@pytest.fixture(scope="module")
def runs(cifar10_jpeg_root, tmp_path_factory):
    """One-process and two-process runs of stage 1, DR + H2T stage 2, IFL; a 2→1-process resume."""
    folder = tmp_path_factory.mktemp("ddp")
    stage1 = _overrides(cifar10_jpeg_root)
    per_process_bn = _overrides(cifar10_jpeg_root, **{"train.sync_batchnorm": "false"})
    ifl = _overrides(
        cifar10_jpeg_root,
        **{
            "method.name": "ifl",
            "method.update_milestones": "[0]",
            "method.center_milestones": "[0]",
            "method.center_weights": "[0.01]",
        },
    )
    tailfuse.train("cifar10_lt_quick", folder / "stage1_one", stage1)
    stage2 = _overrides(
        cifar10_jpeg_root, **{"init.checkpoint": folder / "stage1_one" / "checkpoints" / "last.pt"}
    )
    tailfuse.train("cifar10_lt_quick_dr_h2t", folder / "h2t_one", stage2)
    tailfuse.train("cifar10_lt_quick", folder / "ifl_one", ifl)
    _torchrun(
        [
            {"recipe": "cifar10_lt_quick", "overrides": stage1, "out": str(folder / "stage1_two")},
            {
                "recipe": "cifar10_lt_quick",
                "overrides": per_process_bn,
                "out": str(folder / "stage1_two_local_bn"),
            },
            {
                "recipe": "cifar10_lt_quick_dr_h2t",
                "overrides": stage2,
                "out": str(folder / "h2t_two"),
            },
            {"recipe": "cifar10_lt_quick", "overrides": ifl, "out": str(folder / "ifl_two")},
            {
                "recipe": "cifar10_lt_quick",
                "overrides": stage1,
                "out": str(folder / "resumed"),
                "interrupt_at_epoch": 1,
            },
        ],
        folder,
    )
    assert load_checkpoint(folder / "resumed" / "checkpoints" / "last.pt")["epoch"] == 1
    tailfuse.train("cifar10_lt_quick", folder / "resumed", stage1, resume=True)  # on one process
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stage1", "h2t", "ifl"])
def test_two_processes_with_sync_batchnorm_equal_one_process(runs, name):
    one, two = _model(runs / f"{name}_one"), _model(runs / f"{name}_two")
    assert _largest_difference(one["model"], two["model"]) < TOLERANCE
    for module in one["method_modules"]:  # IFL: environments rebuilt from the gathered confidences
        assert (
            _largest_difference(one["method_modules"][module], two["method_modules"][module])
            < TOLERANCE
        )
    first, second = _test_metrics(runs / f"{name}_one"), _test_metrics(runs / f"{name}_two")
    assert first["top1"] == second["top1"] and first["num_samples"] == second["num_samples"] == 100
    assert first["per_class_accuracy"] == second["per_class_accuracy"]
    assert abs(first["ece"] - second["ece"]) < 1e-6


@pytest.mark.slow
def test_ifl_environments_were_rebuilt_from_every_process_records(runs):
    weights = _model(runs / "ifl_two")["method_modules"]["ifl"]["environment_weights"]
    assert torch.equal(weights[0], torch.ones_like(weights[0]))  # environment 1 stays uniform
    assert not torch.equal(weights[1], torch.ones_like(weights[1]))  # environment 2 was rebuilt


@pytest.mark.slow
def test_per_process_batchnorm_differs_from_the_global_batch(runs):
    """The default (each process normalises its share, as DataParallel did)
    is not the one-process run."""
    difference = _largest_difference(
        _model(runs / "stage1_one")["model"], _model(runs / "stage1_two_local_bn")["model"]
    )
    print(
        "per-process BatchNorm, 2 processes vs 1, 4 steps of 32: largest weight "
        f"difference {difference:.2e}"
    )
    assert difference > 1e3 * TOLERANCE


@pytest.mark.slow
def test_a_two_process_run_resumed_on_one_process_equals_the_one_process_run(runs):
    assert (
        _largest_difference(_model(runs / "stage1_one")["model"], _model(runs / "resumed")["model"])
        < TOLERANCE
    )
    lines = (runs / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert (
        json.loads((runs / "resumed" / "results.json").read_text())["environment"]["processes"] == 1
    )
    assert (
        json.loads((runs / "stage1_two" / "results.json").read_text())["environment"]["processes"]
        == 2
    )


IFL = {
    "method.name": "ifl",
    "method.update_milestones": "[0]",
    "method.center_milestones": "[0]",
    "method.center_weights": "[0.01]",
}
METHODS = {  # name: (recipe, overrides); "@NAME": the one-process checkpoint of run NAME
    # losses that are weighted means over the batch (losses.reduction), mixup in the methods
    # that draw partners themselves, GCL's noise: each taken from the whole global batch
    # class-balanced CE from the first step, divided by the weights' sum over the global batch
    "cb_ce": ("cifar10_lt_quick_cb_ce", {"method.loss_options.class_weight_divisor": "weight_sum"}),
    "ride_drw_mixup": (
        "cifar10_lt_quick_ride",
        {"method.loss_options.drw_epoch": 0, "method.mixup_alpha": 1.0},
    ),
    "reslt": ("cifar10_lt_quick_reslt", {}),  # each branch's CE over its group's images; mixup
    "ifl_mixup": ("cifar10_lt_quick", {**IFL, "method.mixup_alpha": 1.0}),  # two environments
    "gcl_stage1": ("cifar10_lt_quick_gcl_stage1", {}),  # noise drawn for the global batch
    # the other method families: two samplers (BBN), expert losses (TADE), CutMix with a
    # minority branch (CMO, mixing from the first step), stage 2 on them (H2T per expert,
    # GCL + H2T), learned scales (LWS) and FFN's fused stage 2 on a second backbone
    "bbn": ("cifar10_lt_quick_bbn", {}),
    "tade": ("cifar10_lt_quick_tade", {}),
    "cmo": (
        "cifar10_lt_quick_cmo",
        {"method.start_epoch": -1, "method.end_epochs": 0, "method.mix_prob": 1.0},
    ),
    "ride_h2t": ("cifar10_lt_quick_ride_h2t", {"init.checkpoint": "@ride_drw_mixup"}),
    "gcl_h2t": ("cifar10_lt_quick_gcl_h2t", {"init.checkpoint": "@gcl_stage1"}),
    "lws": ("cifar10_lt_quick_lws", {"init.checkpoint": "@cb_ce"}),
    # 159 training images in batches of 158: the second global batch holds one image, so
    # process 1 has none (it used to stop the run: "the loss became nan")
    "last_batch_of_one": ("cifar10_lt_quick_cb_ce", {"train.batch_size": 158}),
    "ffn_kps": ("cifar10_lt_quick_ffn_kps", {}),  # FFN: its two backbones, then stage 2
    "ffn_ce": ("cifar10_lt_quick_ffn_ce", {}),
    "ffn": (
        "cifar10_lt_quick_ffn",
        {"init.checkpoint": "@ffn_kps", "init.auxiliary.ce.checkpoint": "@ffn_ce"},
    ),
}


@pytest.fixture(scope="module")
def method_runs(cifar10_jpeg_root, tmp_path_factory):
    """One-process and two-process runs of METHODS, SyncBatchNorm, float64."""
    folder = tmp_path_factory.mktemp("ddp_methods")
    plan = []
    for name, (recipe, extra) in METHODS.items():
        extra = {
            key: folder / f"{value[1:]}_one" / "checkpoints" / "last.pt"
            if str(value).startswith("@")
            else value
            for key, value in extra.items()
        }
        overrides = _overrides(cifar10_jpeg_root, **extra)
        tailfuse.train(recipe, folder / f"{name}_one", overrides)
        plan.append({"recipe": recipe, "overrides": overrides, "out": str(folder / f"{name}_two")})
    _torchrun(plan, folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_two_processes_give_the_one_process_run_of_every_method(method_runs, name):
    """Each process's weighted mean takes its denominator from the global batch, and mixup
    partners and GCL's noise come from the whole global batch: without these, the weights
    of the first five runs differ by 0.44 (class-balanced CE) to 1.55 (ResLT's mixup) after
    four steps."""
    one, two = _model(method_runs / f"{name}_one"), _model(method_runs / f"{name}_two")
    assert _largest_difference(one["model"], two["model"]) < TOLERANCE
    for module in one["method_modules"]:  # LWS's scales
        assert (
            _largest_difference(one["method_modules"][module], two["method_modules"][module])
            < TOLERANCE
        )
    first = _test_metrics(method_runs / f"{name}_one")
    second = _test_metrics(method_runs / f"{name}_two")
    assert first["per_class_accuracy"] == second["per_class_accuracy"]


def _batchnorm_worker(rank: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    from tailfuse.engine.distributed import convert_sync_batchnorm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    images, labels = _batchnorm_data()
    model = convert_sync_batchnorm(_batchnorm_model(), torch.device("cpu"))
    share = slice(*share_bounds(len(labels), rank, 2))  # 5 and 4 images: unequal shares
    loss = torch.nn.functional.cross_entropy(
        model(images[share]), labels[share], reduction="sum"
    ) / len(labels)
    loss.backward()
    for (
        parameter
    ) in model.parameters():  # what DDP does, with the sum already over the global batch
        dist.all_reduce(parameter.grad)
    if rank == 0:
        torch.save(
            [p.grad for p in model.parameters()] + [model[1].running_mean, model[1].running_var],
            f"{folder}/two.pt",
        )
    dist.destroy_process_group()


def _batchnorm_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).double()


def _batchnorm_data():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(9, 3, 6, 6, generator=generator, dtype=torch.float64), torch.randint(
        3, (9,), generator=generator
    )


def test_cross_process_batchnorm_gives_the_whole_batch_statistics_and_gradients(tmp_path):
    """gloo, 2 processes: forward statistics, running statistics and gradients of one
    BatchNorm2d on all 9 images."""
    import socket

    import torch.multiprocessing as multiprocessing

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    multiprocessing.spawn(_batchnorm_worker, args=(port, str(tmp_path)), nprocs=2)
    images, labels = _batchnorm_data()
    model = _batchnorm_model()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    expected = [p.grad for p in model.parameters()] + [model[1].running_mean, model[1].running_var]
    for one, two in zip(expected, torch.load(tmp_path / "two.pt"), strict=True):
        assert torch.allclose(one, two, atol=1e-12), (one, two)


def test_share_bounds_split_a_global_batch_as_tensor_split():
    assert [share_bounds(10, rank, 3) for rank in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert [share_bounds(1, rank, 2) for rank in range(2)] == [(0, 1), (1, 1)]
