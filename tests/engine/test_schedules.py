"""Learning-rate schedules against the values the spec lists (h2t §2.2)."""

from __future__ import annotations

import pytest

from tailfuse.config import ScheduleConfig
from tailfuse.engine.schedules import learning_rate


def test_stage1_warmup_and_multistep():
    schedule = ScheduleConfig(name="multistep", warmup_epochs=5, milestones=[160, 180], gamma=0.1)
    rates = [learning_rate(schedule, 0.1, epoch, 200) for epoch in range(200)]
    assert rates[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.10])
    assert rates[5] == rates[159] == pytest.approx(0.1)
    assert rates[160] == rates[179] == pytest.approx(0.01)  # 161st epoch
    assert rates[180] == rates[199] == pytest.approx(0.001)


def test_stage2_cosine_with_lr_factor():
    schedule = ScheduleConfig(name="cosine", lr_factor=0.2)
    rates = [learning_rate(schedule, 0.1, epoch, 10) for epoch in range(10)]
    listed = [
        0.02000,
        0.01951,
        0.01809,
        0.01588,
        0.01309,
        0.01000,
        0.00691,
        0.00412,
        0.00191,
        0.00049,
    ]
    assert rates == pytest.approx(listed, abs=5e-6)


def test_cosine_after_warmup_and_constant():
    schedule = ScheduleConfig(name="cosine", warmup_epochs=2)
    assert learning_rate(schedule, 0.1, 0, 30) == pytest.approx(0.05)
    assert learning_rate(schedule, 0.1, 15, 30) == pytest.approx(0.05)
    assert learning_rate(ScheduleConfig(name="constant"), 0.3, 99, 100) == 0.3
