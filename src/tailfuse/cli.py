"""``tailfuse train | eval | sweep | data summary | bench | recipes``: the command line.

User mistakes (a bad key, a missing path, an incompatible checkpoint) print one
``error:`` line and exit with status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import sys

import tailfuse
from tailfuse.config import builtin_recipe_dir
from tailfuse.errors import TailfuseError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tailfuse", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a recipe into a run directory")
    train.add_argument("recipe", help="recipe file or shipped recipe name (see `tailfuse recipes`)")
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=2")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on its recipe's test set")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. data.root=PATH")
    evaluate.add_argument("--out", default=None, help="report directory (default: RUN/eval_<checkpoint>)")

    data = commands.add_parser("data", help="inspect datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    summary = data_commands.add_parser("summary", help="class counts, groups and subset checksum as JSON")
    summary.add_argument("recipe")
    summary.add_argument("overrides", nargs="*")

    bench = commands.add_parser("bench", help="end-to-end training throughput vs the model-only loop")
    bench.add_argument("recipe")
    bench.add_argument("overrides", nargs="*")
    bench.add_argument("--steps", type=int, default=None, help="steps per round (default: one epoch)")
    bench.add_argument("--rounds", type=int, default=3)

    sweep = commands.add_parser("sweep", help="run one recipe over values of one key and several seeds")
    sweep.add_argument("recipe")
    sweep.add_argument("overrides", nargs="*")
    sweep.add_argument("--param", required=True, help="dotted key, e.g. method.h2t.ratio")
    sweep.add_argument("--values", nargs="+", required=True)
    sweep.add_argument("--seeds", nargs="+", type=int, default=[0])
    sweep.add_argument("--out", required=True)

    commands.add_parser("recipes", help="list the shipped recipes")
    return parser


def _run(arguments: argparse.Namespace) -> int:
    if arguments.command == "train":
        results = tailfuse.train(arguments.recipe, arguments.out, arguments.overrides, resume=arguments.resume)
        groups = results["test"]["group_accuracy"]
        print(
            f"{results['name']}: test top-1 {results['test']['top1']:.2f} "
            + " ".join(f"{name} {value:.2f}" for name, value in groups.items())
            + f" (selection: {results['selection']['rule']}, epoch {results['selection']['epoch']}); "
            f"report in {arguments.out}/report.md"
        )
    elif arguments.command == "eval":
        results = tailfuse.evaluate(arguments.checkpoint, arguments.out, arguments.overrides)
        summary = {key: results["test"][key] for key in ("top1", "top5", "group_accuracy", "macro_precision", "ece")}
        print(json.dumps(summary, indent=2))
    elif arguments.command == "data":
        print(json.dumps(tailfuse.data_summary(arguments.recipe, arguments.overrides), indent=2))
    elif arguments.command == "bench":
        from tailfuse.engine.benchmark import format_benchmark

        print(format_benchmark(tailfuse.bench(arguments.recipe, arguments.overrides, arguments.steps, arguments.rounds)))
    elif arguments.command == "sweep":
        from tailfuse.eval.sweep_report import markdown_table

        summary = tailfuse.sweep(
            arguments.recipe, arguments.param, arguments.values, arguments.seeds, arguments.out, arguments.overrides
        )
        print(markdown_table(arguments.param, summary))
        print(f"table, CSV and plot in {arguments.out}/sweep.md")
    elif arguments.command == "recipes":
        for path in sorted(builtin_recipe_dir().glob("[!_]*.yaml")):
            print(path.stem)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tailfuse`` command."""
    arguments = _parser().parse_args(argv)
    try:
        return _run(arguments)
    except TailfuseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last complete checkpoint is intact (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
