"""tailfuse: long-tailed visual recognition from one recipe file (``tailfuse COMMAND --help``).

User mistakes (a bad key, a missing path, an incompatible checkpoint) print one
``error:`` line and exit with status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys

import tailfuse
from tailfuse import commands as extra_commands
from tailfuse.commands import at_least
from tailfuse.errors import TailfuseError, did_you_mean


class _Parser(argparse.ArgumentParser):
    """argparse with one ``error:`` line (and where to look) instead of the usage text."""

    def error(self, message: str):
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if choice:  # a typo: name the closest choice first
            choices = re.findall(r"'([^']*)'", choice.group(2))
            message += did_you_mean(choice.group(1), choices)
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tailfuse", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"tailfuse {tailfuse.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a recipe into a run directory")
    train.add_argument("recipe", help="recipe file or shipped recipe name (see `tailfuse recipes`)")
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=2")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    train.add_argument(
        "--overwrite", action="store_true", help="delete an earlier run's files in --out first"
    )
    train.add_argument(
        "--nproc",
        type=at_least(1),
        default=1,
        help="processes on this machine (DDP through torchrun --standalone; one per GPU, "
        "or CPU processes with gloo)",
    )

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on its recipe's test set")
    evaluate.add_argument(
        "checkpoint", help="checkpoint file, or a run directory (its selected checkpoint)"
    )
    evaluate.add_argument(
        "overrides", nargs="*", help="key.sub=value overrides, e.g. data.root=PATH"
    )
    evaluate.add_argument(
        "--out", default=None, help="report directory (default: RUN/eval_<checkpoint>)"
    )
    evaluate.add_argument(
        "--overwrite", action="store_true", help="replace results already in --out"
    )
    evaluate.add_argument(
        "--with",
        dest="with_checkpoint",
        default=None,
        help="GLT: a checkpoint trained on the other training set (Train-CBL for a Train-GLT run, "
        "or the reverse); prints and saves the CLT/GLT/ALT table of the pair",
    )

    data = commands.add_parser("data", help="inspect datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    summary = data_commands.add_parser(
        "summary", help="class counts, groups and subset checksum as JSON"
    )
    summary.add_argument("recipe")
    summary.add_argument("overrides", nargs="*")

    verify = data_commands.add_parser(
        "verify",
        help="decode every image of list files (txt or iNaturalist JSON); "
        "report missing/unreadable/corrupt ones",
    )
    verify.add_argument(
        "lists", nargs="+", help="list files (relative/path label lines, or iNaturalist *.json)"
    )
    verify.add_argument(
        "--root", required=True, help="the folder the listed paths are relative to (data.root)"
    )
    verify.add_argument(
        "--report", default=None, help="JSON report to write (list checksums and every problem)"
    )
    verify.add_argument(
        "--workers", type=at_least(0), default=0, help="decoding processes (0: this process)"
    )

    build = data_commands.add_parser(
        "build-glt",
        help="build CIFAR-10-GLT annotation files (Train-GLT and "
        "Train-CBL) from an ImageFolder tree",
    )
    build.add_argument(
        "--root", required=True, help="folder with train/<class>/ and test/<class>/ images"
    )
    build.add_argument("--out", required=True, help="folder for the two annotation JSON files")
    build.add_argument("--attribute", choices=["tint", "rotation"], default="tint")
    build.add_argument("--mode", choices=["cyclic", "aligned"], default="cyclic")
    build.add_argument(
        "--rho", type=float, default=100.0, help="class imbalance ratio (spec: 100; also 10, 50)"
    )
    build.add_argument("--seed", type=at_least(0), default=0)
    build.add_argument(
        "--max-per-class",
        type=at_least(1),
        default=None,
        help="n_max of the class profile (default: smallest class)",
    )
    build.add_argument(
        "--gbl-per-rank",
        type=at_least(1),
        default=100,
        help="Test-GBL images per (class, attribute)",
    )
    build.add_argument(
        "--cbl-test-per-class",
        type=at_least(1),
        default=300,
        help="Test-CBL images per class (7:2:1)",
    )
    build.add_argument(
        "--cbl-val-per-class",
        type=at_least(0),
        default=30,
        help="val images per class of the Train-CBL file",
    )
    build.add_argument(
        "--test-lt-pool-per-class",
        type=at_least(1),
        default=400,
        help="test images per class Test-GLT is drawn from",
    )

    imagenet = data_commands.add_parser(
        "build-imagenet-glt",
        help="build ImageNet-GLT annotation files from an ILSVRC-2012 train "
        "folder (spec glt_ifl §1.3)",
    )
    imagenet.add_argument(
        "--train-dir", required=True, help="ILSVRC-2012 CLS-LOC train folder (<wnid>/<images>)"
    )
    imagenet.add_argument(
        "--weights", required=True, help="torchvision ResNet-50 state dict (.pth) for the features"
    )
    imagenet.add_argument(
        "--profile",
        required=True,
        help="JSON list of per-class Train-GLT targets (the authors' 1000 counts)",
    )
    imagenet.add_argument("--out", required=True)
    imagenet.add_argument("--batch-size", type=at_least(1), default=128)
    imagenet.add_argument("--num-workers", type=at_least(0), default=4)
    imagenet.add_argument("--device", default="auto")
    imagenet.add_argument(
        "--seed", type=at_least(0), default=25, help="seed of the val draw and of K-Means"
    )

    coco = data_commands.add_parser(
        "build-mscoco-glt",
        help="build MSCOCO-GLT annotation files and object crops from "
        "cocottributes + COCO (spec §1.4)",
    )
    coco.add_argument("--attributes", required=True, help="cocottributes_py3.jbl (joblib)")
    coco.add_argument(
        "--coco-annotations", nargs="+", required=True, help="COCO 2014 instances_*.json files"
    )
    coco.add_argument(
        "--coco-images", nargs="+", required=True, help="folders holding the COCO 2014 images"
    )
    coco.add_argument("--out", required=True)
    coco.add_argument("--seed", type=at_least(0), default=25)

    bench = commands.add_parser(
        "bench", help="end-to-end training throughput vs the model-only loop"
    )
    bench.add_argument("recipe")
    bench.add_argument("overrides", nargs="*")
    bench.add_argument(
        "--steps", type=at_least(1), default=None, help="steps per round (default: one epoch)"
    )
    bench.add_argument("--rounds", type=at_least(1), default=3)

    sweep = commands.add_parser(
        "sweep", help="run one recipe over values of one key and several seeds"
    )
    sweep.add_argument("recipe")
    sweep.add_argument("overrides", nargs="*")
    sweep.add_argument("--param", required=True, help="dotted key, e.g. method.h2t.ratio")
    sweep.add_argument("--values", nargs="+", required=True)
    sweep.add_argument("--seeds", nargs="+", type=at_least(0), default=[0])
    sweep.add_argument("--out", required=True)

    compare = commands.add_parser(
        "compare",
        help="run several recipes over seeds (what has not run yet) and write one comparison table",
    )
    compare.add_argument(
        "rows",
        nargs="*",
        help="RECIPE or 'LABEL=RECIPE', overrides of that row after ':' (e.g. "
        "'DR+H2T=cifar10_lt_quick_dr_h2t')",
    )
    compare.add_argument(
        "--rows-file",
        default=None,
        help="YAML list of {label, recipe, overrides} rows (after the positional ones)",
    )
    compare.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override applied to every run, earlier stages included (repeatable)",
    )
    compare.add_argument("--seeds", nargs="+", type=at_least(0), default=[0])
    compare.add_argument(
        "--published",
        default=None,
        help="YAML list of published figures: {recipe or label, paper, source}",
    )
    compare.add_argument(
        "--plan",
        action="store_true",
        help="print every run in the order compare would start it, with how far it got, "
        "and stop (trains nothing, writes nothing)",
    )
    compare.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write the table of the rows whose runs have all finished "
        "(the others are named, not shown)",
    )
    compare.add_argument(
        "--jobs",
        type=at_least(1),
        default=1,
        help="runs trained side by side as separate processes",
    )
    compare.add_argument(
        "--threads",
        type=at_least(1),
        default=None,
        help="CPU threads in all, divided between the jobs",
    )
    compare.add_argument("--out", required=True)
    compare.add_argument(
        "--summaries",
        default=None,
        metavar="DIR",
        help="also copy the table and every finished run's summary (its files, no "
        "checkpoints) into DIR/compare.* and DIR/runs/NAME/, e.g. to commit them",
    )

    glt_bench = commands.add_parser(
        "glt-bench",
        help="train a GLT recipe on Train-GLT and Train-CBL over seeds: the CLT/GLT/ALT table",
    )
    glt_bench.add_argument("recipe")
    glt_bench.add_argument("overrides", nargs="*")
    glt_bench.add_argument("--seeds", nargs="+", type=at_least(0), default=[0])
    glt_bench.add_argument(
        "--label", default=None, help="row label in the table (default: the recipe)"
    )
    glt_bench.add_argument("--out", required=True)

    glt_table = commands.add_parser(
        "glt-table", help="one CLT/GLT/ALT table from several glt-bench folders"
    )
    glt_table.add_argument("folders", nargs="+")
    glt_table.add_argument("--labels", nargs="+", default=None)
    glt_table.add_argument("--out", required=True, help="markdown file to write")

    extra_commands.add_commands(commands)
    return parser


def _launch_torchrun(argv: list[str], processes: int) -> int:
    """``tailfuse train --nproc N ...``: the same command under ``torchrun --standalone``."""
    import subprocess

    rest, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            rest.append(item)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "tailfuse.cli",
        *rest,
    ]
    return subprocess.call(command)


def _run(arguments: argparse.Namespace) -> int:
    if arguments.command in extra_commands.COMMANDS:
        return extra_commands.run(arguments)
    if arguments.command == "train":
        from tailfuse.engine.distributed import world

        results = tailfuse.train(
            arguments.recipe,
            arguments.out,
            arguments.overrides,
            resume=arguments.resume,
            overwrite=arguments.overwrite,
        )
        if not world().is_main:
            return 0
        groups = results["test"]["group_accuracy"]
        print(
            f"{results['name']}: test top-1 {results['test']['top1']:.2f} "
            + " ".join(f"{name} {value:.2f}" for name, value in groups.items())
            + f" (selection: {results['selection']['rule']}, epoch "
            f"{results['selection']['epoch']}); report in {arguments.out}/report.md"
        )
        if results.get("glt"):
            from tailfuse.eval.glt import protocol_text

            print(protocol_text(results["glt"]))
    elif arguments.command == "eval":
        results = tailfuse.evaluate(
            arguments.checkpoint, arguments.out, arguments.overrides, overwrite=arguments.overwrite
        )
        summary = {
            key: results["test"][key]
            for key in ("top1", "top5", "group_accuracy", "macro_precision", "ece")
        }
        print(json_text(summary, indent=2))
        if results.get("glt"):
            from tailfuse.eval.glt import protocol_text

            print(protocol_text(results["glt"]))
        if arguments.with_checkpoint:
            _evaluate_glt_pair(arguments, results)
    elif arguments.command == "data" and arguments.data_command == "summary":
        print(json_text(tailfuse.data_summary(arguments.recipe, arguments.overrides), indent=2))
    elif arguments.command == "data" and arguments.data_command == "verify":
        from tailfuse.data.verify import PROBLEM_KINDS, format_report, verify_list, write_report

        reports = [verify_list(path, arguments.root, arguments.workers) for path in arguments.lists]
        for report in reports:
            print(format_report(report))
        if arguments.report:
            write_report(reports, arguments.report)
            print(f"report in {arguments.report}")
        return 1 if any(report[kind] for report in reports for kind in PROBLEM_KINDS) else 0
    elif arguments.command == "data" and arguments.data_command == "build-glt":
        from tailfuse.data.glt import (
            CifarGltOptions,
            annotation_summary,
            read_glt_annotation,
            write_cifar_glt,
            write_preview,
        )

        options = CifarGltOptions(
            attribute=arguments.attribute,
            mode=arguments.mode,
            rho=arguments.rho,
            seed=arguments.seed,
            max_per_class=arguments.max_per_class,
            gbl_per_rank=arguments.gbl_per_rank,
            cbl_test_per_class=arguments.cbl_test_per_class,
            cbl_val_per_class=arguments.cbl_val_per_class,
            test_lt_pool_per_class=arguments.test_lt_pool_per_class,
        )
        for kind, path in write_cifar_glt(arguments.root, arguments.out, options).items():
            annotation = read_glt_annotation(path, arguments.root)
            sizes = ", ".join(
                f"{name} {info['size']}"
                for name, info in annotation_summary(annotation)["splits"].items()
            )
            print(f"{path} (Train-{kind.upper()}): {sizes}")
        preview = write_preview(
            annotation, path.with_name(path.name.replace("_intra_lt_inter_bl.json", "_preview.png"))
        )
        print(f"{preview}: one Test-GBL image per class and attribute")
        print(
            f"train with: data.source=glt data.root={arguments.root} "
            "data.annotation=<the inter_lt file> data.annotation_cbl=<the inter_bl file>"
        )
    elif arguments.command == "data" and arguments.data_command == "build-imagenet-glt":
        from tailfuse.data.glt_builders import build_imagenet_glt_files

        for kind, path in build_imagenet_glt_files(
            arguments.train_dir,
            arguments.weights,
            arguments.profile,
            arguments.out,
            batch_size=arguments.batch_size,
            num_workers=arguments.num_workers,
            device=arguments.device,
            seed=arguments.seed,
        ).items():
            print(f"{path} (Train-{kind.upper()})")
    elif arguments.command == "data" and arguments.data_command == "build-mscoco-glt":
        from tailfuse.data.glt_builders import build_mscoco_glt_files

        for kind, path in build_mscoco_glt_files(
            arguments.attributes,
            arguments.coco_annotations,
            arguments.coco_images,
            arguments.out,
            seed=arguments.seed,
        ).items():
            print(f"{path} (Train-{kind.upper()})")
    elif arguments.command == "glt-bench":
        from tailfuse.engine.glt_bench import run_glt_benchmark
        from tailfuse.eval.glt_table import glt_table_markdown

        summary = run_glt_benchmark(
            arguments.recipe, arguments.seeds, arguments.out, arguments.overrides, arguments.label
        )
        print(glt_table_markdown([summary]))
        print(f"table in {arguments.out}/glt_table.md")
    elif arguments.command == "glt-table":
        from pathlib import Path

        from tailfuse.eval.glt_table import combine_bench_dirs, write_glt_table

        write_glt_table(
            combine_bench_dirs(arguments.folders, arguments.labels), Path(arguments.out)
        )
        print(Path(arguments.out).read_text())
    elif arguments.command == "bench":
        from tailfuse.engine.benchmark import format_benchmark

        print(
            format_benchmark(
                tailfuse.bench(
                    arguments.recipe, arguments.overrides, arguments.steps, arguments.rounds
                )
            )
        )
    elif arguments.command == "sweep":
        from tailfuse.eval.sweep_report import markdown_table

        summary = tailfuse.sweep(
            arguments.recipe,
            arguments.param,
            arguments.values,
            arguments.seeds,
            arguments.out,
            arguments.overrides,
        )
        print(markdown_table(arguments.param, summary))
        print(f"table, CSV and plot in {arguments.out}/sweep.md")
    elif arguments.command == "compare":
        from tailfuse.engine.compare import parse_row, read_rows, run_compare
        from tailfuse.eval.compare_report import markdown_table as compare_table

        rows = [parse_row(text) for text in arguments.rows]
        rows += read_rows(arguments.rows_file) if arguments.rows_file else []
        if arguments.plan:
            from tailfuse.engine.compare import plan_text

            print(plan_text(rows, arguments.seeds, arguments.out, arguments.overrides))
            return 0
        command = "tailfuse " + " ".join(
            map(shlex.quote, sys.argv[1:] if arguments.argv is None else arguments.argv)
        )
        summary = run_compare(
            rows,
            arguments.seeds,
            arguments.out,
            arguments.overrides,
            arguments.published,
            arguments.jobs,
            arguments.threads,
            command,
            arguments.report_only,
            arguments.summaries,
        )
        print(compare_table(summary))
        print(f"table, CSV, JSON and plot in {arguments.out}/compare.md")
        if arguments.summaries:
            print(f"table and finished runs' summaries copied to {arguments.summaries}")
    return 0


def json_text(value, indent: int | None = None) -> str:
    """Strict JSON (NaN -> null), as the run files hold."""
    from tailfuse.eval.report import json_text as strict

    return strict(value, indent)


def _evaluate_glt_pair(arguments: argparse.Namespace, first: dict) -> None:
    """``tailfuse eval A --with B``: both checkpoints' protocols, then the CLT/GLT/ALT table."""
    from pathlib import Path

    from tailfuse.errors import TailfuseError
    from tailfuse.eval.glt import protocol_text
    from tailfuse.eval.glt_table import bench_summary, glt_table_markdown, write_glt_table

    other_out = Path(arguments.out) / "with" if arguments.out else None
    second = tailfuse.evaluate(
        arguments.with_checkpoint, other_out, arguments.overrides, overwrite=arguments.overwrite
    )
    kinds = {results["data"].get("glt_train_set") for results in (first, second)}
    if kinds != {"glt", "cbl"}:
        raise TailfuseError(
            "eval --with needs one Train-GLT and one Train-CBL checkpoint of a GLT dataset"
        )
    print(protocol_text(second["glt"]))
    runs = {results["data"]["glt_train_set"]: [results] for results in (first, second)}
    summary = bench_summary(first["name"], runs)
    print(glt_table_markdown([summary]))
    if arguments.out:
        write_glt_table([summary], Path(arguments.out) / "glt_table.md")


#: top-level modules of the required dependencies (pyproject's ``dependencies``)
REQUIRED_MODULES = frozenset(
    {"torch", "torchvision", "numpy", "yaml", "pydantic", "tqdm", "PIL", "matplotlib"}
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tailfuse`` command."""
    arguments = _parser().parse_args(argv)
    arguments.argv = argv
    try:
        if getattr(arguments, "nproc", 1) > 1:
            from tailfuse.engine.distributed import launched_by_torchrun

            if launched_by_torchrun():
                print("error: --nproc inside a torchrun job; use one or the other", file=sys.stderr)
                return 2
            return _launch_torchrun(sys.argv[1:] if argv is None else list(argv), arguments.nproc)
        status = _run(arguments)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
        return status
    except BrokenPipeError:  # `tailfuse recipes | head`: the reader stopped reading
        return _stdout_closed()
    except TailfuseError as error:  # one line, even where it quotes a multi-line message
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except OSError as error:  # a file the system refused (full disk, permissions): name it
        if error.filename is None:
            raise
        print(f"error: {error.filename}: {error.strerror or type(error).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last complete checkpoint is intact (use --resume)", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:  # an install without its dependencies (pip --no-deps)
        if error.name not in REQUIRED_MODULES:
            raise
        print(
            f"error: {error.name} is not installed in this Python ({sys.executable}); "
            "install tailfuse with its dependencies (in a checkout: python -m pip install -e .)",
            file=sys.stderr,
        )
        return 2
    finally:
        if "tailfuse.engine.distributed" in sys.modules:  # no process group without it
            sys.modules["tailfuse.engine.distributed"].shutdown()


def _stdout_closed() -> int:
    """Stop quietly when stdout's reader has gone, as a command killed by SIGPIPE would.

    The Python documentation's idiom (``signal``, "Note on SIGPIPE"): point stdout at
    /dev/null so the interpreter's final flush does not fail again, and exit with
    128 + SIGPIPE (141), the status a shell reports for a writer killed by SIGPIPE.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (replaced in-process)
        pass
    return 141


if __name__ == "__main__":
    sys.exit(main())
