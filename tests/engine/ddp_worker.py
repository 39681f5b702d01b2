"""Runs several trainings inside one torchrun job (test helper: one start-up for many runs).

    torchrun --standalone --nproc_per_node 2 tests/engine/ddp_worker.py PLAN.json

PLAN.json is a list of ``{"recipe", "overrides", "out", "resume", "interrupt_at_epoch"}``;
``interrupt_at_epoch`` stops that run with KeyboardInterrupt when the (0-based) epoch starts,
as Ctrl-C would, after the previous epoch's checkpoint was written.
"""

from __future__ import annotations

import json
import sys

import tailfuse
from tailfuse.engine import session as session_module
from tailfuse.engine.distributed import shutdown


def run(entry: dict) -> None:
    original = session_module.TrainingSession.train_epoch
    stop = entry.get("interrupt_at_epoch")

    def train_epoch(self, epoch, **kwargs):
        if stop is not None and epoch == stop:
            raise KeyboardInterrupt
        return original(self, epoch, **kwargs)

    session_module.TrainingSession.train_epoch = train_epoch
    try:
        tailfuse.train(
            entry["recipe"], entry["out"], entry["overrides"], resume=entry.get("resume", False)
        )
    except KeyboardInterrupt:
        pass
    finally:
        session_module.TrainingSession.train_epoch = original


if __name__ == "__main__":
    for item in json.loads(open(sys.argv[1]).read()):
        run(item)
    shutdown()
