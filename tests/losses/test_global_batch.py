"""Weighted losses under DDP: the processes' losses, combined as the session and DDP combine
them, are the one-process weighted mean over the global batch (losses.reduction).

The processes are simulated in one: each part of a batch computes its loss inside
``global_batch`` with an all-reduce that returns the sum of every part's contribution (read
in a first pass), and the session's arithmetic (loss × share × processes, gradients
averaged over processes) combines them. The torchrun version of the same check is
tests/engine/test_distributed.py (``-m slow``).
"""

from __future__ import annotations

import pytest
import torch

from tailfuse.losses.cross_entropy import CrossEntropy
from tailfuse.losses.experts import ResLoss, RIDELoss
from tailfuse.losses.gcl import GaussianCloudedLogitLoss
from tailfuse.losses.logit_adjustment import LogitAdjustedLoss
from tailfuse.losses.margins import KPSLoss, LDAMLoss
from tailfuse.losses.reduction import global_batch

COUNTS = [50, 20, 8, 3]
WEIGHTS = torch.tensor([0.2, 0.5, 1.2, 2.1])
# part 0 holds mostly head images, part 1 mostly tail ones: their weight sums differ
LABELS = torch.tensor([0, 0, 1, 0, 2, 3, 3, 2, 3, 1, 3])
PARTS = [slice(0, 5), slice(5, 11)]


def _logits(experts: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [
        (0.6 * torch.randn(len(LABELS), len(COUNTS), generator=generator)).requires_grad_()
        for _ in range(experts)
    ]


def _call(loss, logits, labels, kind):
    if kind == "experts":
        return loss(logits, labels)
    if kind == "cosine":
        return loss(logits[0].tanh(), labels, class_weights=WEIGHTS)
    return loss(logits[0], labels, class_weights=WEIGHTS)


LOSSES = {
    "class-balanced CE": (lambda: CrossEntropy(), "plain", 1),
    "LDAM with DRW": (lambda: LDAMLoss(COUNTS, drw_epoch=0), "cosine", 1),
    "KPS, class weights": (lambda: KPSLoss(COUNTS, weighted_from_epoch=None), "cosine", 1),
    "GCL, class weights": (lambda: GaussianCloudedLogitLoss(COUNTS, noise_mul=0.0), "cosine", 1),
    "Balanced Softmax, class weights": (lambda: LogitAdjustedLoss(COUNTS), "plain", 1),
    "RIDE with DRW": (lambda: RIDELoss(COUNTS, drw_epoch=0), "experts", 3),
    "ResLT": (lambda: ResLoss(COUNTS, groups="cifar10"), "experts", 3),
}


def _combined_over_processes(make_loss, kind, logits, use_global_batch=True):
    """Σ_p share_p·loss_p: the session scales by share·processes, DDP averages over them."""
    recorded: list[list[torch.Tensor]] = [[] for _ in PARTS]

    def part_loss(index, all_reduce):
        rows = PARTS[index]
        part_logits = [value[rows] for value in logits]
        share = len(LABELS[rows]) / len(LABELS)
        if not use_global_batch:
            return share * _call(make_loss(), part_logits, LABELS[rows], kind)
        with global_batch(all_reduce, share):
            return share * _call(make_loss(), part_logits, LABELS[rows], kind)

    def recorder(index):
        def all_reduce(tensor):
            recorded[index].append(tensor.clone())
            return tensor

        return all_reduce

    for index in range(len(PARTS)):  # first pass: what each part contributes, in call order
        part_loss(index, recorder(index))

    def summed_over_parts():
        calls = iter(range(len(recorded[0])))

        def all_reduce(tensor):
            call = next(calls)
            return sum(contributions[call] for contributions in recorded)

        return all_reduce

    return sum(part_loss(index, summed_over_parts()) for index in range(len(PARTS)))


@pytest.mark.parametrize("name", LOSSES)
def test_processes_combine_to_the_one_process_weighted_mean(name):
    make_loss, kind, experts = LOSSES[name]
    logits = _logits(experts)
    one_process = _call(make_loss(), logits, LABELS, kind)
    one_gradients = torch.autograd.grad(one_process, logits)
    combined = _combined_over_processes(make_loss, kind, logits)
    combined_gradients = torch.autograd.grad(combined, logits)
    assert float(combined.detach()) == pytest.approx(float(one_process.detach()), rel=1e-6)
    for one, two in zip(one_gradients, combined_gradients, strict=True):
        torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", LOSSES)
def test_each_process_alone_would_weight_its_own_share(name):
    """Without the global denominator the combination is not the one-process loss."""
    make_loss, kind, experts = LOSSES[name]
    logits = _logits(experts)
    one_process = float(_call(make_loss(), logits, LABELS, kind).detach())
    naive = float(_combined_over_processes(make_loss, kind, logits, False).detach())
    assert abs(naive - one_process) > 1e-3 * abs(one_process)


def test_outside_a_ddp_step_a_weighted_loss_is_torchs_own():
    logits = _logits(1)[0]
    expected = torch.nn.functional.cross_entropy(logits, LABELS, weight=WEIGHTS)
    assert torch.equal(CrossEntropy()(logits, LABELS, class_weights=WEIGHTS), expected)


def _gcl_over_parts(with_rows: bool) -> torch.Tensor:
    cosine = _logits(1)[0].tanh()
    total = 0.0
    for rows in PARTS:
        loss = GaussianCloudedLogitLoss(COUNTS, noise_mul=0.5)
        loss.set_generator(torch.Generator().manual_seed(5))  # every process: the same stream
        loss.set_rows((rows.start, len(LABELS)) if with_rows else None)
        share = len(LABELS[rows]) / len(LABELS)
        total = total + share * loss(cosine[rows], LABELS[rows])
    return total


def test_gcl_noise_of_a_share_is_its_rows_of_the_global_batch_noise():
    loss = GaussianCloudedLogitLoss(COUNTS, noise_mul=0.5)
    loss.set_generator(torch.Generator().manual_seed(5))
    one_process = float(loss(_logits(1)[0].tanh(), LABELS).detach())
    assert float(_gcl_over_parts(True).detach()) == pytest.approx(one_process, rel=1e-6)
    assert float(_gcl_over_parts(False).detach()) != pytest.approx(one_process, rel=1e-3)
