"""Paths the README's figures take and the other tests force off: bf16 autocast, DataLoader
workers > 0, and CUDA (a ``gpu`` test that runs where CUDA exists)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import tailfuse  # noqa: F401  (registers the methods)
from tailfuse.config import build_config, load_recipe
from tailfuse.data.prepare import LabelledImages
from tailfuse.engine.runtime import Runtime
from tailfuse.engine.session import TrainingSession

COUNTS = [12, 6, 3, 3]


def in_memory_data(device="cpu"):
    generator = torch.Generator().manual_seed(0)
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor(COUNTS))
    images = torch.randint(0, 256, (len(labels), 3, 8, 8), generator=generator, dtype=torch.uint8)
    split = LabelledImages(images.to(device), labels.to(device))
    groups = {"many": [0], "medium": [1], "few": [2, 3]}
    return SimpleNamespace(
        train=split,
        test=split,
        validation=None,
        named_tests={},
        num_classes=4,
        class_counts=COUNTS,
        plan=SimpleNamespace(groups=groups),
    )


def erm_session(precision: str, device: str = "cpu") -> TrainingSession:
    config = build_config(
        {
            "model": {"backbone": "resnet32"},
            "method": {"name": "erm"},
            "train": {
                "batch_size": 12,
                "epochs": 1,
                "max_steps_per_epoch": 2,
                "precision": precision,
                "device": device,
            },
        }
    )
    torch.manual_seed(0)
    return TrainingSession(
        config, in_memory_data(device), Runtime(torch.device(device), precision, False)
    )


class DtypeRecorder(nn.Module):
    def __init__(self, loss):
        super().__init__()
        self.loss, self.dtypes = loss, []

    def forward(self, logits, labels):
        self.dtypes.append(logits.dtype)
        return self.loss(logits, labels)


def test_bf16_autocast_runs_the_forward_pass_in_bfloat16_and_stays_close_to_fp32():
    sessions = {precision: erm_session(precision) for precision in ("fp32", "bf16")}
    for session in sessions.values():
        session.method.criterion = DtypeRecorder(session.method.criterion)
    records = {precision: session.train_epoch(0) for precision, session in sessions.items()}
    assert sessions["fp32"].method.criterion.dtypes == [torch.float32] * 2
    assert sessions["bf16"].method.criterion.dtypes == [torch.bfloat16] * 2
    # the same start, batches and steps: bf16 rounding moves the result a little, not a lot
    fp32_loss, bf16_loss = records["fp32"]["train_loss"], records["bf16"]["train_loss"]
    assert fp32_loss != bf16_loss and abs(fp32_loss - bf16_loss) < 0.05 * fp32_loss
    fp32_weight = sessions["fp32"].model.head.fc.weight
    bf16_weight = sessions["bf16"].model.head.fc.weight
    assert bf16_weight.dtype == torch.float32  # parameters stay float32 under autocast
    assert not torch.equal(fp32_weight, bf16_weight)
    assert torch.allclose(fp32_weight, bf16_weight, atol=5e-2)
    logits = sessions["bf16"].predict(sessions["bf16"].data.test)
    assert logits.dtype == torch.float32 and logits.shape == (24, 4)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    from ..fakes import write_list_file_dataset

    return write_list_file_dataset(
        tmp_path_factory.mktemp("streamed"), train_counts=[6, 4, 3, 2], test_per_class=3
    )


def streamed_session(files, workers: int) -> TrainingSession:
    from tailfuse.data.prepare import load_data
    from tailfuse.engine.runtime import make_runtime

    config = load_recipe(
        "imagenet_lt_ffn_ce_stage1",
        [
            f"data.root={files['root']}",
            f"data.train_list={files['train_list']}",
            f"data.test_list={files['test_list']}",
            f"data.num_workers={workers}",
            "data.augment.crop_size=32",
            "data.augment.resize=36",
            "model.backbone=resnet32",
            "train.batch_size=5",
            "train.eval_batch_size=5",
            "train.precision=fp32",
            "train.device=cpu",
            "method.mixup_alpha=0",
        ],
    )
    runtime = make_runtime(config.train)
    torch.manual_seed(0)
    return TrainingSession(config, load_data(config.data, runtime.device), runtime)


def test_dataloader_workers_deliver_the_sampled_images_reproducibly(streamed):
    sessions = [
        streamed_session(streamed, 2),
        streamed_session(streamed, 2),
        streamed_session(streamed, 0),
    ]
    assert sessions[0].steps_per_epoch == 3  # 15 images, batches of 5
    # evaluation (resize + center crop: no randomness) gives the same
    # logits with and without workers
    assert torch.equal(
        sessions[0].predict(sessions[0].data.test), sessions[2].predict(sessions[2].data.test)
    )
    # every batch a worker delivers carries the labels of the indices the sampler chose, in order
    session = sessions[0]
    order = session.samplers["main"].epoch_indices(torch.Generator().manual_seed(0))
    from tailfuse.data.randomness import EpochRandomness

    batches = list(session._branch_batches(order, 3, EpochRandomness(0, 0), "main"))
    assert torch.cat([b.indices for b in batches]).tolist() == order.tolist()
    assert torch.equal(torch.cat([b.labels for b in batches]), session.data.train.labels[order])
    # two runs with workers draw the same augmentations: identical weights after an epoch
    before = copy.deepcopy(sessions[0].model.state_dict())
    sessions[0].train_epoch(0)
    sessions[1].train_epoch(0)
    for key, value in sessions[0].model.state_dict().items():
        assert torch.equal(value, sessions[1].model.state_dict()[key]), key
    assert not torch.equal(before["head.fc.weight"], sessions[0].model.head.fc.weight)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_predictions_match_the_cpu_and_a_bf16_cuda_step_runs_in_bfloat16():
    cpu, cuda = erm_session("fp32", "cpu"), erm_session("fp32", "cuda")
    cuda.model.load_state_dict(cpu.model.state_dict())
    assert next(cuda.model.parameters()).device.type == "cuda"
    with torch.no_grad():
        cpu_logits, cuda_logits = cpu.predict(cpu.data.test), cuda.predict(cuda.data.test)
    assert cuda_logits.device.type == "cpu" and torch.allclose(cpu_logits, cuda_logits, atol=1e-3)
    bf16 = erm_session("bf16", "cuda")
    bf16.model.load_state_dict(cpu.model.state_dict())
    bf16.method.criterion = DtypeRecorder(bf16.method.criterion)
    record = bf16.train_epoch(0)
    assert bf16.method.criterion.dtypes == [torch.bfloat16] * 2
    assert torch.isfinite(torch.tensor(record["train_loss"]))


@pytest.mark.parametrize(
    ("precision", "native", "warned"),
    [("bf16", False, True), ("bf16", True, False), ("fp32", False, False)],
)
def test_bf16_on_a_cpu_without_native_bfloat16_warns(
    monkeypatch, capsys, precision, native, warned
):
    """bf16 autocast is emulated (over 10x slower) on AVX2-only CPUs: the run says so once."""
    from tailfuse.config import TrainConfig
    from tailfuse.engine import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    runtime.make_runtime(TrainConfig(precision=precision, device="cpu"))
    err = capsys.readouterr().err
    assert ("warning: this CPU has no native bfloat16" in err) is warned
    assert ("train.precision=fp32" in err) is warned


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bfloat16(
    monkeypatch, capsys, native, expected
):
    """``precision: auto`` (the quick recipes): bf16 where it is fast, fp32 where it is emulated,
    and no bf16 warning either way."""
    from tailfuse.config import TrainConfig
    from tailfuse.engine import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    made = runtime.make_runtime(TrainConfig(precision="auto", device="cpu"))
    assert made.precision == expected
    assert "bfloat16" not in capsys.readouterr().err
    assert runtime.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert runtime.resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for: kept
