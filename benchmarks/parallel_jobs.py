"""Two one-thread runs side by side against one two-thread run: what ``compare --jobs 2`` buys.

    python benchmarks/parallel_jobs.py [RECIPE] [key=value ...]

Alternates, ``--rounds`` times (default 2): (a) one process training ``RECIPE`` with
``train.threads=2``; (b) two processes at once, each with ``train.threads=1``. Each
measurement is ``tailfuse bench``'s end-to-end training throughput (images/s, median of
its rounds). Prints every measurement and the ratio of (b)'s summed throughput to (a)'s:
above 1, ``--jobs 2 --threads 2`` trains more images per second than ``--jobs 1``.
Run it on an otherwise idle machine; it takes a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def end_to_end(recipe: str, overrides: list[str], threads: int, steps: int) -> float:
    """Median end-to-end images/s of ``tailfuse bench`` with ``threads`` CPU threads."""
    import tailfuse

    result = tailfuse.bench(recipe, [*overrides, f"train.threads={threads}"], steps=steps, rounds=3)
    return float(result["end_to_end_median"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", nargs="?", default="cifar10_lt_quick")
    parser.add_argument("overrides", nargs="*", default=[])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="training steps per bench round")
    arguments = parser.parse_args()
    single, side_by_side = [], []
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        for round_index in range(arguments.rounds):
            job = (arguments.recipe, arguments.overrides)
            one = pool.submit(end_to_end, *job, 2, arguments.steps).result()
            pair = [pool.submit(end_to_end, *job, 1, arguments.steps) for _ in range(2)]
            two = sum(future.result() for future in pair)
            single.append(one)
            side_by_side.append(two)
            print(
                f"round {round_index + 1}: one 2-thread run {one:.0f} images/s; "
                f"two 1-thread runs {two:.0f} images/s together",
                flush=True,
            )
    ratio = statistics.median(side_by_side) / statistics.median(single)
    print(f"{arguments.recipe}: two 1-thread runs / one 2-thread run = {ratio:.2f}")


if __name__ == "__main__":
    main()
