"""Commands for using one's own data and trained models: ``init``, ``predict``, ``export``,
``config show``, ``recipes`` and ``plot tsne`` (registered by ``tailfuse.cli``).

Heavy modules (torch) are imported inside the handlers, so ``tailfuse --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMANDS = ("init", "predict", "export", "config", "recipes", "plot")


def at_least(minimum: int):
    """An argparse type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    parse.__name__ = "integer"  # argparse's word for a value it cannot parse
    return parse


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``tailfuse`` parser."""
    init = commands.add_parser(
        "init",
        help="write a stage-1 and an H2T stage-2 recipe for your own ImageFolder tree",
        description="Write NAME.yaml (stage 1) and NAME_h2t.yaml (H2T stage 2) for DATA_ROOT: "
        "a folder with train/<class>/ and test/<class>/ (optional val/<class>/), "
        "or one <class>/ tree to split.",
    )
    init.add_argument("data_root")
    init.add_argument(
        "--name", default=None, help="recipe and run name (default: the folder's name)"
    )
    init.add_argument("--out", default=".", help="folder for the two recipe files (default: here)")
    init.add_argument(
        "--image-size",
        type=at_least(1),
        default=32,
        help="side of the square images trained on (default 32)",
    )
    init.add_argument(
        "--validation",
        type=float,
        default=0.1,
        help="one-tree split: validation fraction per class",
    )
    init.add_argument(
        "--test", type=float, default=0.2, help="one-tree split: test fraction per class"
    )
    init.add_argument("--force", action="store_true", help="replace existing recipe files")

    predict = commands.add_parser(
        "predict", help="top-k classes of new images from a checkpoint (CSV or JSON)"
    )
    predict.add_argument("checkpoint", help="a run's checkpoints/last.pt (or best_validation.pt)")
    predict.add_argument(
        "paths", nargs="+", help="image files, folders (searched recursively) or quoted globs"
    )
    predict.add_argument("--top-k", type=at_least(1), default=5)
    predict.add_argument("--format", choices=["csv", "json"], default="csv")
    predict.add_argument("--out", default=None, help="file to write (default: standard output)")
    predict.add_argument("--batch-size", type=at_least(1), default=64)
    predict.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")

    export = commands.add_parser(
        "export", help="export a checkpoint's prediction to ONNX or TorchScript, parity-checked"
    )
    export.add_argument("checkpoint")
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    export.add_argument(
        "--out",
        default=None,
        help="model file (default: RUN/model.onnx or RUN/model.torchscript.pt)",
    )
    export.add_argument(
        "--check-images",
        nargs="+",
        default=None,
        help="images for the parity check (default: up to 32 test images "
        "of the checkpoint's recipe)",
    )

    config = commands.add_parser("config", help="show the resolved recipe")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser(
        "show", help="print a recipe with its bases and overrides resolved (YAML)"
    )
    show.add_argument("recipe")
    show.add_argument("overrides", nargs="*")

    commands.add_parser(
        "recipes", help="list the shipped recipes with one line of description each"
    )

    plot = commands.add_parser("plot", help="figures of a finished run")
    plot_commands = plot.add_subparsers(dest="plot_command", required=True)
    tsne = plot_commands.add_parser(
        "tsne", help="t-SNE of test features coloured by many/medium/few (RUN/tsne.png)"
    )
    tsne.add_argument("run", help="run directory")
    tsne.add_argument("--checkpoint", default=None, help="default: the run's selected checkpoint")
    tsne.add_argument("--max-images", type=at_least(1), default=2000)
    tsne.add_argument("--out", default=None, help="image file (default: RUN/tsne.png)")
    tsne.add_argument("--seed", type=at_least(0), default=0)


def recipe_descriptions() -> list[tuple[str, str]]:
    """(name, first comment line) of every shipped recipe; private ``_`` bases are left out."""
    from tailfuse.config import builtin_recipe_dir

    rows = []
    for path in sorted(builtin_recipe_dir().glob("[!_]*.yaml")):
        first = next((line for line in path.read_text().splitlines() if line.startswith("#")), "#")
        rows.append((path.stem, first.lstrip("#").strip()))
    return rows


def run(arguments: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS`."""
    if arguments.command == "recipes":
        rows = recipe_descriptions()
        width = max(len(name) for name, _ in rows)
        for name, description in rows:
            print(f"{name:<{width}}  {description}")
    elif arguments.command == "config":
        import yaml

        from tailfuse.config import config_to_dict, load_recipe
        from tailfuse.models import check_backbone

        config = load_recipe(arguments.recipe, arguments.overrides, reach_earlier_stages=True)
        check_backbone(config.model)  # as `train` would, before printing a recipe it refuses
        print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
    elif arguments.command == "init":
        from tailfuse.data.init_recipe import write_init_recipes

        write_init_recipes(
            arguments.data_root,
            arguments.out,
            arguments.name,
            arguments.image_size,
            arguments.validation,
            arguments.test,
            arguments.force,
        )
    elif arguments.command == "predict":
        from tailfuse.engine.predict import Predictor, expand_image_paths, predictions_text

        predictor = Predictor.from_checkpoint(arguments.checkpoint, arguments.device)
        rows = predictor.predict_files(
            expand_image_paths(arguments.paths), arguments.top_k, arguments.batch_size
        )
        text = predictions_text(rows, arguments.format)
        if arguments.out:
            Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
            from tailfuse.files import write_text_atomically

            write_text_atomically(Path(arguments.out), text)
            print(
                f"{len(rows)} predictions in {arguments.out} ({predictor.device})", file=sys.stderr
            )
        else:
            sys.stdout.write(text)
    elif arguments.command == "export":
        from tailfuse.engine.export import export_checkpoint

        checkpoint = Path(arguments.checkpoint)
        default_name = "model.onnx" if arguments.format == "onnx" else "model.torchscript.pt"
        out = Path(arguments.out) if arguments.out else checkpoint.parent.parent / default_name
        metadata = export_checkpoint(checkpoint, out, arguments.format, arguments.check_images)
        parity = metadata["parity"]
        print(
            f"parity: max |logit difference| {parity['max_abs_logit_difference']:.3g} over "
            f"{parity['images']} images ({parity['runtime']}; tolerance {parity['tolerance']:g})"
        )
        print(
            f"{out} ({arguments.format}); preprocessing and class names in "
            f"{metadata['metadata_path']}"
        )
    elif arguments.command == "plot":
        from tailfuse.engine.tsne import plot_run_tsne

        path = plot_run_tsne(
            arguments.run, arguments.checkpoint, arguments.max_images, arguments.out, arguments.seed
        )
        print(f"t-SNE of test features in {path}")
    return 0
