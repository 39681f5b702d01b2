"""Class-balanced re-weighting by effective number (Cui et al. 2019) as a schedule on any loss.

``w_c = (1−β)/(1−β^{n_c})``, normalised to sum to C (spec ffn §2.3). Switched on from the
first epoch it is the class-balanced loss (the "CBL" / CB-focal rows); switched on at a
later epoch it is deferred re-weighting (DRW, Cao et al. 2019: epoch 160 of 200 on CIFAR).
The wrapped loss takes ``class_weights=`` in its forward.
"""

from __future__ import annotations

import torch
from torch import nn

from tailfuse.losses.margins import class_balanced_weights


class ClassReweighting(nn.Module):
    """``loss(z, y, class_weights=w)`` from 0-based epoch ``from_epoch`` on,
    plain ``loss(z, y)`` before.

    Other attributes (``training_logits``, ``set_generator``) are the wrapped loss's.
    """

    def __init__(
        self, loss: nn.Module, class_counts: list[int], beta: float = 0.9999, from_epoch: int = 0
    ):
        super().__init__()
        self.loss = loss
        self.register_buffer(
            "weights", torch.tensor(class_balanced_weights(class_counts, beta)), persistent=False
        )
        self.from_epoch = from_epoch
        self.epoch = 0

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("loss")
            if inner is None:  # not built yet (copy, unpickling)
                raise
            return getattr(inner, name)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.loss, "set_epoch"):
            self.loss.set_epoch(epoch)

    def active(self) -> bool:
        """Whether the weights apply in the current epoch."""
        return self.epoch >= self.from_epoch

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not self.active():
            return self.loss(logits, labels)
        return self.loss(logits, labels, class_weights=self.weights.to(logits.device))
