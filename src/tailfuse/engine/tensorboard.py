"""Optional TensorBoard logging (``train.tensorboard: true``) from the per-epoch
record of metrics.jsonl."""

from __future__ import annotations

import math
from pathlib import Path

from tailfuse.errors import ConfigError


def record_scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """Flatten one metrics.jsonl record into ``tag -> value``
    (``test_group_accuracy/few``), finite numbers only."""
    scalars = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        tag = f"{prefix}{key}"
        if isinstance(value, dict):
            scalars.update(record_scalars(value, f"{tag}/"))
        elif (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ):
            scalars[tag] = float(value)
    return scalars


class EpochLogger:
    """Writes each epoch's record to ``RUN/tensorboard`` (needs the ``tensorboard`` extra)."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard=true needs tensorboard: pip install 'tailfuse[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def log(self, record: dict) -> None:
        for tag, value in record_scalars(record).items():
            self.writer.add_scalar(tag, value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
