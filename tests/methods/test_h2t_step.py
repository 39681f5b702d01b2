"""The H2T training step on a stub backbone whose maps say which image they came from.

Every image of the balanced ("fused") branch is filled with 10 + k and every image of the
instance-sampled ("fusing") branch with 100 + k (k: position in the batch); the stub
backbone turns an image into a map whose every channel holds that value, and the head
records what reaches it. So each channel at the head says exactly where it came from.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tailfuse  # noqa: F401  (registers the methods)
from tailfuse.config import build_config
from tailfuse.data.randomness import EpochRandomness
from tailfuse.methods import Batch, StepContext, build_method
from tailfuse.models import Classifier, LinearHead

CHANNELS, BATCH = 8, 4
COUNTS = [30, 10, 3, 1]


class ValueBackbone(nn.Module):
    """(B, 3, H, W) images -> (B, C, 2, 2) maps, every entry the image's mean value."""

    out_channels = CHANNELS

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # a backbone parameter for the method to freeze

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).expand(-1, CHANNELS, 2, 2).clone()


class RecordingHead(LinearHead):
    def __init__(self):
        super().__init__(CHANNELS, len(COUNTS))
        self.seen: list[torch.Tensor] = []

    def forward(self, feature_map):
        self.seen.append(feature_map.detach().clone())
        return super().forward(feature_map)


class RecordingLoss(nn.Module):
    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss, self.labels = loss, []

    def forward(self, logits, labels):
        self.labels.append(labels.clone())
        return self.loss(logits, labels)


def filled(values: list[float]) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()


BALANCED = Batch(filled([10.0 + k for k in range(BATCH)]), torch.tensor([3, 2, 1, 0]))
FUSING = Batch(filled([100.0 + k for k in range(BATCH)]), torch.tensor([0, 0, 0, 1]))


def step(h2t: dict, name: str = "dr", seed: int = 0):
    config = build_config({"method": {"name": name, "h2t": h2t}})
    model = Classifier(ValueBackbone(), RecordingHead())
    method = build_method(config, model, COUNTS)
    method.criterion = RecordingLoss(method.criterion)
    method.train_mode()
    context = StepContext(epoch=0, total_epochs=1, randomness=EpochRandomness(seed, 0))
    branches = (
        {"balanced": BALANCED, "fusing": FUSING}
        if h2t.get("ratio", 0) > 0
        else {"balanced": BALANCED}
    )
    loss = method.loss(branches, context)
    (seen,) = model.head.seen
    return seen[:, :, 0, 0], method.criterion.labels, loss


@pytest.mark.parametrize(("ratio", "donated"), [(0.25, 2), (0.5, 4), (0.45, 3), (0.9, 7), (1.0, 8)])
def test_exactly_floor_p_c_channels_come_from_the_index_aligned_fusing_sample(ratio, donated):
    channels, labels, _ = step({"ratio": ratio})
    for k in range(BATCH):
        row = channels[k].tolist()
        assert sorted(set(row)) == sorted(
            {10.0 + k, 100.0 + k} if 0 < donated < CHANNELS else {row[0]}
        )
        assert row.count(100.0 + k) == donated  # floor(p * 8) channels of the fusing sample k
        assert row.count(10.0 + k) == CHANNELS - donated  # the rest stay the balanced sample's
    donor_channels = channels >= 100.0
    assert (donor_channels == donor_channels[0]).all()  # one channel subset shared by the batch
    assert [label.tolist() for label in labels] == [
        [3, 2, 1, 0]
    ]  # the balanced branch's labels only


def test_the_donated_channels_change_with_the_seed_of_the_step():
    first, _, _ = step({"ratio": 0.5}, seed=0)
    subsets = {tuple((step({"ratio": 0.5}, seed=seed)[0][0] >= 100).tolist()) for seed in range(6)}
    assert len(subsets) > 1 and tuple((first[0] >= 100).tolist()) in subsets


def test_without_h2t_the_head_sees_the_balanced_maps_unchanged():
    channels, labels, _ = step({"ratio": 0.0})
    assert channels.tolist() == [[10.0 + k] * CHANNELS for k in range(BATCH)]
    assert [label.tolist() for label in labels] == [[3, 2, 1, 0]]


def test_per_sample_channels_inside_a_step_draw_a_subset_per_sample():
    for seed in range(3):
        channels, _, _ = step({"ratio": 0.5, "channels": "per_sample"}, seed=seed)
        for k in range(BATCH):
            row = channels[k].tolist()
            assert row.count(100.0 + k) == 4 and row.count(10.0 + k) == 4
        subsets = {tuple((channels[k] >= 100).tolist()) for k in range(BATCH)}
        assert len(subsets) > 1  # C(8, 4) = 70 subsets: four equal draws would be a shared subset


def test_soft_mixing_inside_a_step_is_the_convex_mix_of_the_two_samples():
    channels, labels, _ = step({"ratio": 0.2, "mixing": "soft"})
    # 0.8 * (10 + k) + 0.2 * (100 + k) = 28 + k, in every channel
    assert torch.allclose(channels, torch.tensor([[28.0 + k] * CHANNELS for k in range(BATCH)]))
    assert [label.tolist() for label in labels] == [[3, 2, 1, 0]]


@pytest.mark.parametrize("name", ["dr", "crt", "lws", "mislas"])
def test_every_stage2_method_fuses_before_its_head(name):
    channels, labels, _ = step({"ratio": 0.25}, name=name)
    assert [row.count(100.0 + k) for k, row in enumerate(channels.tolist())] == [2] * BATCH
    assert [label.tolist() for label in labels] == [[3, 2, 1, 0]]


def test_another_fusing_sampler_feeds_the_fusing_branch_inside_a_training_session():
    """``fusing_sampler: class_balanced``: the donor batches are drawn
    class-balanced, not by instance."""
    from types import SimpleNamespace

    from tailfuse.engine.runtime import Runtime
    from tailfuse.engine.session import TrainingSession

    counts = [60, 3, 3, 2]
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    images = (
        (torch.arange(len(labels)).view(-1, 1, 1, 1) % 256)
        .expand(-1, 3, 4, 4)
        .to(torch.uint8)
        .contiguous()
    )
    from tailfuse.data.prepare import LabelledImages

    train = LabelledImages(images, labels)
    data = SimpleNamespace(
        train=train,
        num_classes=4,
        class_counts=counts,
        validation=None,
        test=train,
        named_tests={},
        plan=None,
    )
    donors = {}
    for sampler in ("instance", "class_balanced"):
        config = build_config(
            {
                "model": {"backbone": "resnet32"},
                "method": {"name": "dr", "h2t": {"ratio": 0.5, "fusing_sampler": sampler}},
                "train": {"batch_size": 34, "epochs": 1, "max_steps_per_epoch": 2},
                "data": {"augment": {"crop_padding": 0, "horizontal_flip": False}},
            }
        )
        session = TrainingSession(config, data, Runtime(torch.device("cpu"), "fp32", False))
        assert session.method.branches() == {"balanced": "class_balanced", "fusing": sampler}
        seen: list[torch.Tensor] = []
        original = session.method.loss

        def recording_loss(batches, context, original=original, seen=seen):
            seen.append(batches["fusing"].labels)
            return original(batches, context)

        session.method.loss = recording_loss
        session.train_epoch(0)
        donors[sampler] = torch.cat(seen)
    # instance sampling: 60 of 68 images are class 0; class-balanced: a quarter are
    assert (donors["instance"] == 0).float().mean() > 0.75
    assert (donors["class_balanced"] == 0).float().mean() < 0.45
