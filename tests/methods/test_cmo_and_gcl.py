"""CMO (pasted area, label mix by area, epoch window) and the GCL stage-2
method, on small tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tailfuse  # noqa: F401
from tailfuse.config import build_config
from tailfuse.data.randomness import EpochRandomness, derive_seed
from tailfuse.errors import ConfigError
from tailfuse.methods import Batch, StepContext, build_method
from tailfuse.methods.cmo import cutmix_box, paste_box
from tailfuse.models import build_model

COUNTS = [50, 20, 8, 3]


class FixedCentres:
    """A stand-in numpy generator whose ``integers`` returns the given centres in turn."""

    def __init__(self, *values: int):
        self.values = list(values)

    def integers(self, high: int) -> int:
        return self.values.pop(0)


def test_cutmix_box_side_and_clipping_by_hand():
    # lam 0.75 on 32 x 32: side 32*sqrt(0.25) = 16, centre (20, 10) -> rows
    # [12, 28), columns [2, 18)
    assert cutmix_box(32, 32, 0.75, FixedCentres(20, 10)) == (12, 28, 2, 18)
    # centre at the corner: clipped to [0, 8) x [0, 8)
    assert cutmix_box(32, 32, 0.75, FixedCentres(0, 0)) == (0, 8, 0, 8)
    # centre at the far corner: rows and columns [23, 32), cut at the image's edge
    assert cutmix_box(32, 32, 0.75, FixedCentres(31, 31)) == (23, 32, 23, 32)


def test_cutmix_box_odd_sides_and_a_rectangular_image_by_hand():
    # 30 x 22 image, lam 0.75: sides int(30 * 0.5) = 15 and int(22 * 0.5) = 11; half sides 7 and 5
    # centre (20, 3): rows [13, 27), columns [-2 -> 0, 8)
    assert cutmix_box(30, 22, 0.75, FixedCentres(20, 3)) == (13, 27, 0, 8)
    # centre (2, 19): rows [-5 -> 0, 9), columns [14, 24 -> 22)
    assert cutmix_box(30, 22, 0.75, FixedCentres(2, 19)) == (0, 9, 14, 22)


def test_cutmix_box_for_lambda_one_is_empty():
    # lam 1: side 0, so nothing is pasted, even at the origin
    assert cutmix_box(32, 32, 1.0, FixedCentres(0, 0)) == (0, 0, 0, 0)
    assert cutmix_box(32, 32, 1.0, FixedCentres(5, 9)) == (5, 5, 9, 9)


def test_paste_box_copies_the_donor_area_and_returns_the_kept_fraction():
    images, donors = (
        torch.zeros(2, 3, 8, 8),
        torch.ones(2, 3, 8, 8) * torch.tensor([1.0, 2.0]).view(2, 1, 1, 1),
    )
    mixed, kept = paste_box(images, donors, (2, 6, 1, 4))  # 4 x 3 = 12 of 64 pixels
    assert kept == pytest.approx(1 - 12 / 64)
    assert mixed[0].sum().item() == 3 * 12 * 1.0 and mixed[1].sum().item() == 3 * 12 * 2.0
    assert (
        torch.equal(mixed[:, :, 2:6, 1:4], donors[:, :, 2:6, 1:4]) and images.sum().item() == 0
    )  # input untouched


def _cmo(loss: str = "cross_entropy", **options):
    config = build_config(
        {
            "method": {"name": "cmo", "loss": loss, "mix_prob": 1.0, **options},
            "model": {"backbone": "resnet32"},
        }
    )
    torch.manual_seed(0)
    model = build_model(config.model, len(COUNTS))
    return build_method(config, model, COUNTS), model


def _batches(height: int = 32, width: int = 32):
    generator = torch.Generator().manual_seed(1)
    main = Batch(torch.randn(4, 3, height, width, generator=generator), torch.tensor([0, 0, 1, 0]))
    minority = Batch(
        torch.randn(4, 3, height, width, generator=generator), torch.tensor([3, 2, 3, 1])
    )
    return {"main": main, "minority": minority}


@pytest.mark.parametrize(
    "loss, height, width",
    [("cross_entropy", 32, 32), ("balanced_softmax", 32, 32), ("cross_entropy", 32, 20)],
)
def test_cmo_loss_mixes_labels_by_the_pasted_area(loss, height, width):
    method, model = _cmo(loss)
    assert method.branches() == {"main": "instance", "minority": "class_balanced"}
    model.eval()  # no BatchNorm statistics change between the two forward passes
    batches = _batches(height, width)
    value = method.loss(
        batches, StepContext(epoch=5, total_epochs=20, randomness=EpochRandomness(0, 5))
    )
    # the same draws by hand: r, then lam ~ Beta(1, 1), then the centre row and column; the
    # box's sides are the image's sides times sqrt(1 - lam)
    rng = np.random.default_rng(derive_seed(0, 5, "numpy"))
    rng.random()
    lam = rng.beta(1.0, 1.0)
    rows, columns = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
    row, column = rng.integers(height), rng.integers(width)
    r1, r2 = max(row - rows // 2, 0), min(row + rows // 2, height)
    c1, c2 = max(column - columns // 2, 0), min(column + columns // 2, width)
    images = batches["main"].images.clone()
    images[:, :, r1:r2, c1:c2] = batches["minority"].images[:, :, r1:r2, c1:c2]
    kept = 1 - (r2 - r1) * (c2 - c1) / (height * width)
    assert 0 < kept < 1
    logits = model(images)
    if loss == "balanced_softmax":
        prior = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
        logits = logits + torch.log(prior + 1e-12).float()
    expected = kept * F.cross_entropy(logits, batches["main"].labels) + (
        1 - kept
    ) * F.cross_entropy(logits, batches["minority"].labels)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_cmo_with_ldam_drw_and_outside_its_epoch_window_is_the_plain_loss():
    config_options = {"loss_options": {"max_m": 0.5, "s": 30.0, "drw_epoch": 2}}
    config = build_config(
        {
            "method": {"name": "cmo", "loss": "ldam", "mix_prob": 1.0, **config_options},
            "model": {"backbone": "resnet32", "head": "cosine", "cosine_scale": 1.0},
        }
    )
    torch.manual_seed(0)
    model = build_model(config.model, len(COUNTS))
    method = build_method(config, model, COUNTS)
    model.eval()
    batches = _batches()
    for epoch in (3, 17):  # start_epoch 3 < e < 20 - 3 is the window: 3 and 17 are outside
        value = method.loss(
            batches, StepContext(epoch=epoch, total_epochs=20, randomness=EpochRandomness(0, epoch))
        )
        plain = method.criterion(model(batches["main"].images), batches["main"].labels)
        assert value.item() == pytest.approx(plain.item(), rel=1e-6)
    assert method.criterion.active()  # DRW on from epoch 2


def test_cmo_with_ldam_drw_inside_its_window_mixes_the_two_ldam_losses_by_area():
    """LDAM-DRW + CMO: kept · LDAM(z, y) + (1 − kept) · LDAM(z, y_minority), each the
    class-weighted CE of s · (cos − m_y at the label) (spec h2t §3.1, DRW weights on)."""
    options = {"loss_options": {"max_m": 0.5, "s": 30.0, "drw_epoch": 2}}
    config = build_config(
        {
            "method": {"name": "cmo", "loss": "ldam", "mix_prob": 1.0, **options},
            "model": {"backbone": "resnet32", "head": "cosine", "cosine_scale": 1.0},
        }
    )
    torch.manual_seed(0)
    model = build_model(config.model, len(COUNTS))
    method = build_method(config, model, COUNTS)
    model.eval()
    batches = _batches()
    epoch = 5  # inside 3 < e < 20 - 3, after DRW's epoch 2 (CMO tells the loss the epoch)
    value = method.loss(
        batches, StepContext(epoch=epoch, total_epochs=20, randomness=EpochRandomness(0, epoch))
    )
    rng = np.random.default_rng(derive_seed(0, epoch, "numpy"))
    rng.random()
    lam = rng.beta(1.0, 1.0)
    side = int(32 * np.sqrt(1 - lam))
    row, column = rng.integers(32), rng.integers(32)
    r1, r2 = max(row - side // 2, 0), min(row + side // 2, 32)
    c1, c2 = max(column - side // 2, 0), min(column + side // 2, 32)
    images = batches["main"].images.clone()
    images[:, :, r1:r2, c1:c2] = batches["minority"].images[:, :, r1:r2, c1:c2]
    kept = 1 - (r2 - r1) * (c2 - c1) / 32**2
    cosines = model(images).double()
    counts = torch.tensor(COUNTS, dtype=torch.float64)
    margins = counts**-0.25 * (0.5 / (counts**-0.25).max())
    weights = (1 - 0.9999) / (1 - 0.9999**counts)
    weights = weights / weights.sum() * len(COUNTS)

    def ldam(labels):
        adjusted = cosines - F.one_hot(labels, len(COUNTS)) * margins
        return F.cross_entropy(30.0 * adjusted, labels, weight=weights)

    expected = kept * ldam(batches["main"].labels) + (1 - kept) * ldam(batches["minority"].labels)
    assert 0 < kept < 1
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gcl_stage2_trains_the_cosine_head_with_eval_mode_batchnorm_and_predicts_s_cos():
    config = build_config(
        {
            "method": {"name": "gcl", "h2t": {"ratio": 0.25}},
            "model": {"backbone": "resnet32", "head": "cosine", "cosine_scale": 1.0},
        }
    )
    torch.manual_seed(0)
    model = build_model(config.model, len(COUNTS))
    method = build_method(config, model, COUNTS)
    assert method.branches() == {"balanced": "class_balanced", "fusing": "instance"}
    method.train_mode()
    assert not model.backbone.training and model.head.training
    batches = {
        "balanced": Batch(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])),
        "fusing": Batch(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)),
    }
    randomness = EpochRandomness(0, 0)
    method.loss(batches, StepContext(epoch=0, total_epochs=1, randomness=randomness)).backward()
    assert (
        all(p.grad is None for p in model.backbone.parameters())
        and model.head.weight.grad is not None
    )
    assert method.criterion.generator is randomness.stream(
        "loss"
    )  # GCL's noise: the step's loss stream
    model.eval()
    images = torch.randn(2, 3, 32, 32)
    assert torch.allclose(method.predict(images), 20.0 * model(images))
    with pytest.raises(ConfigError, match="needs model.head=cosine"):  # the recipe's own check
        build_method(
            build_config({"method": {"name": "gcl"}}),
            build_model(build_config({}).model, 4),
            COUNTS,
        )
    # and the method's, for a model built apart from the recipe
    linear_model = build_model(build_config({}).model, 4)
    with pytest.raises(
        ConfigError,
        match=r"^method.name=gcl needs model.head=cosine \(GCL works on cosine logits\)$",
    ):
        build_method(config, linear_model, COUNTS)
