"""Stage-1 throughput: the trainer's end-to-end epoch against a model-only loop, one process.

    python benchmarks/stage1_throughput.py [RECIPE] [key=value ...]

Runs alternating rounds of (a) forward/backward/SGD on pre-made random tensors of the
training batch's shape and (b) the trainer's own ``train_epoch`` (sampling, gathering,
augmentation, mixup, the method's loss), and prints both throughputs and their ratio.
Same as ``tailfuse bench RECIPE``; the target is a ratio of at most 1.2 on a 2-core CPU.
"""

from __future__ import annotations

import sys

import tailfuse
from tailfuse.engine.benchmark import format_benchmark


def main(arguments: list[str]) -> None:
    recipe = arguments[0] if arguments else "cifar10_lt_quick"
    print(format_benchmark(tailfuse.bench(recipe, arguments[1:], steps=None, rounds=3)))


if __name__ == "__main__":
    main(sys.argv[1:])
