"""Epoch-build time of every sampler at iNaturalist 2018 scale (437,513 images, 8,142 classes).

    python benchmarks/sampler_epoch_build.py [--repeats 3]

Class sizes follow an exponential long tail down to 2 images, scaled so the total is
iNaturalist 2018's 437,513 (the largest class gets about 2,500). Prints, per sampler,
the best of ``--repeats`` builds of one epoch order (``num_samples`` = the number of images),
and the time of rebuilding IFL's environment weights from one epoch of confidences.
"""

from __future__ import annotations

import argparse
import time

import torch

from tailfuse.data.samplers import SAMPLERS, build_sampler
from tailfuse.methods.ifl import intra_class_environment_weights

IMAGES, CLASSES = 437_513, 8_142


def inaturalist_like_labels() -> torch.Tensor:
    """Labels whose class sizes fall exponentially (ratio 500) to at least 2
    and add up to 437,513."""
    shape = torch.logspace(0, -torch.log10(torch.tensor(500.0)), CLASSES, dtype=torch.float64)
    counts = (shape / shape.sum() * IMAGES).floor().clamp_min(2).long()
    counts[0] += IMAGES - int(counts.sum())
    return torch.repeat_interleave(torch.arange(CLASSES), counts)


def best_of(repeats: int, build) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        build()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    labels = inaturalist_like_labels()
    counts = torch.bincount(labels)
    print(
        f"{len(labels):,} images, {len(counts):,} classes (largest {int(counts.max())}, smallest "
        f"{int(counts.min())}), {torch.get_num_threads()} threads, best of {arguments.repeats}"
    )
    for name in sorted(SAMPLERS):
        sampler = build_sampler(name, labels, CLASSES)
        seconds = best_of(
            arguments.repeats,
            lambda sampler=sampler: sampler.epoch_indices(torch.Generator().manual_seed(0)),
        )
        print(f"  {name:15s} {seconds * 1000:8.1f} ms per epoch")
    confidence = torch.rand(len(labels), generator=torch.Generator().manual_seed(1))
    seconds = best_of(
        arguments.repeats, lambda: intra_class_environment_weights(labels, confidence, CLASSES, 4.0)
    )
    print(f"  {'ifl environment':15s} {seconds * 1000:8.1f} ms per rebuild")


if __name__ == "__main__":
    main()
