"""channels_last against the default (contiguous) memory format, one process, side by side.

    python benchmarks/memory_format.py [RECIPE] [key=value ...] [--rounds N] [--steps S]

Alternates, ``--rounds`` times (default 3): ``tailfuse bench RECIPE`` with
``train.channels_last=true``, then with ``train.channels_last=false``, one bench round of
``--steps`` training steps each. Prints every measurement (model-only and end-to-end
images/s) and the ratio of the end-to-end medians, channels_last over contiguous: above 1,
the recipes' ``channels_last: true`` pays on this CPU. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics

import tailfuse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", nargs="?", default="cifar10_lt_quick")
    parser.add_argument("overrides", nargs="*", default=[])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="training steps per bench round")
    arguments = parser.parse_args()
    end_to_end: dict[bool, list[float]] = {True: [], False: []}
    for round_index in range(arguments.rounds):
        for channels_last in (True, False):
            overrides = [*arguments.overrides, f"train.channels_last={str(channels_last).lower()}"]
            result = tailfuse.bench(arguments.recipe, overrides, steps=arguments.steps, rounds=1)
            end_to_end[channels_last].append(float(result["end_to_end_median"]))
            print(
                f"round {round_index + 1}, channels_last={channels_last}: model-only "
                f"{result['model_only_median']:.0f}, end-to-end {result['end_to_end_median']:.0f}"
                f" images/s ({result['precision']}, {result['threads']} threads, batch "
                f"{result['batch_size']}, {result['steps_per_round']} steps)",
                flush=True,
            )
    faster, plain = (statistics.median(end_to_end[flag]) for flag in (True, False))
    print(
        f"end-to-end medians: channels_last {faster:.0f}, contiguous {plain:.0f} images/s; "
        f"ratio channels_last / contiguous: {faster / plain:.3f}"
    )


if __name__ == "__main__":
    main()
