"""Multi-stage runs: find, train if missing, check and load the stage-1 model of stage 2."""

from __future__ import annotations

from pathlib import Path

from tailfuse.config import (
    RunConfig,
    StageSource,
    apply_overrides,
    build_config,
    config_to_dict,
    read_recipe_dict,
)
from tailfuse.engine.checkpoint import load_run_checkpoint
from tailfuse.errors import CheckpointError

#: Settings a stage-1 run takes from the stage-2 recipe that starts from it.
INHERITED_TRAIN_KEYS = ("device", "progress", "threads")


def stage1_config(config: RunConfig, source: StageSource) -> RunConfig:
    """The earlier-stage recipe of ``source``, on exactly the later recipe's data."""
    recipe = apply_overrides(read_recipe_dict(source.recipe), source.overrides)
    recipe["data"] = config_to_dict(config)["data"]
    if source.subset_seed is not None:  # FFN's quirk: the earlier stage on another subset
        recipe["data"]["subset_seed"] = source.subset_seed
    recipe.setdefault("train", {})
    for key in INHERITED_TRAIN_KEYS:
        recipe["train"][key] = getattr(config.train, key)
    return build_config(recipe, f"{source.recipe} (earlier stage of {config.name})")


def stage1_run_dir(config: RunConfig, source: StageSource, out_dir: Path) -> Path:
    """Where the run of ``source`` lives when no checkpoint file is named."""
    if source.run_dir:
        return Path(source.run_dir)
    return out_dir.parent / stage1_config(config, source).name


def ensure_stage1_checkpoint(config: RunConfig, source: StageSource, out_dir: Path) -> Path:
    """The checkpoint ``source.select`` names, training that run first when
    its directory holds none.

    A run directory is never resumed unasked: a finished stage-1 run of the same recipe is
    used; one that stopped early, or one of another recipe, is refused with what to do.
    """
    if source.checkpoint:
        return Path(source.checkpoint)
    last = _ensure_trained(config, source, out_dir)
    if source.select == "last":
        return last
    selected = last.parent / f"{source.select}.pt"
    if not selected.is_file():
        kept = load_run_checkpoint(last)["config"]["train"]["selection"]
        raise CheckpointError(
            f"init.select={source.select}: {selected} does not exist (that run's train.selection "
            f"is {kept}); train it with train.selection={source.select} (init.overrides) or "
            f"choose init.select=last"
        )
    return selected


def _ensure_trained(config: RunConfig, source: StageSource, out_dir: Path) -> Path:
    """The final checkpoint of ``source``'s run; trains it first when its folder holds none."""
    from tailfuse.engine.trainer import train

    first_stage = stage1_config(config, source)
    run_dir = stage1_run_dir(config, source, out_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if last.exists():
        state = load_run_checkpoint(last)
        _check_same_stage1_recipe(state, first_stage, run_dir)
        if state["epoch"] >= first_stage.train.epochs:
            return last
        raise CheckpointError(
            f"stage 1 in {run_dir} stopped at epoch {state['epoch']} of "
            f"{first_stage.train.epochs}; continue it with `tailfuse train "
            f"{run_dir / 'config.yaml'} --out {run_dir} --resume`, then rerun"
        )
    else:
        print(f"stage-1 checkpoint {last} not found; training {first_stage.name} into {run_dir}")
        train(first_stage, run_dir)
    return last


def _check_same_stage1_recipe(state: dict, first_stage: RunConfig, run_dir: Path) -> None:
    """Refuse to reuse a stage-1 run trained from another recipe (e.g.
    changed ``init.overrides``)."""
    from tailfuse.engine.trainer import unresumable_differences

    differences = unresumable_differences(state["config"], first_stage)
    if differences:
        raise CheckpointError(
            f"{run_dir} holds another run than the stage 1 this "
            f"recipe needs ({first_stage.name}; it differs in "
            f"{', '.join(differences[:6])}{', ...' if len(differences) > 6 else ''}); "
            "set init.run_dir to another folder, or init.checkpoint to use that run anyway"
        )


def checked_checkpoint(
    config: RunConfig,
    checkpoint_path: Path,
    class_counts: list[int],
    subset_checksum: str,
    check_head: bool,
    subset_seed: int | None = None,
    summary: dict | None = None,
) -> dict:
    """Load an earlier-stage checkpoint and refuse, with the reason, one that does not fit.

    It must have this recipe's backbone, class count and training subset (and head, when
    ``check_head``); with the data ``summary``, also its classes in the same order and,
    when both recorded it, the same training pixels (``content_checksum``). With ``subset_seed``
    (FFN's quirk) it must instead have been trained on that ``data.subset_seed`` with
    this recipe's class counts.
    """
    saved = load_run_checkpoint(checkpoint_path)
    saved_model = saved["config"]["model"]
    problems = []
    if saved_model["backbone"] != config.model.backbone:
        problems.append(f"backbone {saved_model['backbone']} (recipe: {config.model.backbone})")
    elif saved_model.get("backbone_options", {}) != config.model.backbone_options:
        saved_options = saved_model.get("backbone_options", {})
        problems.append(
            f"backbone_options {saved_options} (recipe: {config.model.backbone_options})"
        )
    saved_classes = len(saved["data"]["class_counts"])
    if saved_classes != len(class_counts):
        problems.append(f"{saved_classes} classes (recipe: {len(class_counts)})")
    elif summary is not None and list(saved["data"]["class_names"]) != list(summary["class_names"]):
        problems.append("classes in another order or with other names (the class folders differ)")
    elif subset_seed is not None:
        saved_seed = saved["config"]["data"]["subset_seed"]
        if saved_seed != subset_seed:
            problems.append(f"data.subset_seed {saved_seed} (init.subset_seed: {subset_seed})")
        if list(saved["data"]["class_counts"]) != list(class_counts):
            saved_counts = saved["data"]["class_counts"]
            problems.append(f"class counts {saved_counts} (recipe: {class_counts})")
    elif saved["data"]["subset_checksum"] != subset_checksum:
        problems.append(
            f"training subset {saved['data']['subset_checksum']} (recipe: "
            f"{subset_checksum}; same data.* settings?)"
        )
    elif (
        summary is not None
        and saved["data"].get("content_checksum")
        and summary.get("content_checksum")
        and saved["data"]["content_checksum"] != summary["content_checksum"]
    ):
        problems.append(
            f"training images {saved['data']['content_checksum']} (here: "
            f"{summary['content_checksum']}; same layout but other pixels: "
            "is data.root the same dataset?)"
        )
    if check_head and saved_model["head"] != config.model.head:
        problems.append(
            f"head {saved_model['head']} (recipe: {config.model.head}; use init.load=backbone)"
        )
    if problems:
        raise CheckpointError(
            f"stage-1 checkpoint {checkpoint_path} does not fit: " + "; ".join(problems)
        )
    return saved


def initial_model_state(
    config: RunConfig,
    checkpoint_path: Path,
    class_counts: list[int],
    subset_checksum: str,
    model_state: dict,
    summary: dict | None = None,
) -> dict:
    """Stage-1 weights to start stage 2 from, after :func:`checked_checkpoint`.

    ``model_state`` is the freshly built model's state (kept for the head with ``load: backbone``).
    """
    init = config.init
    saved = checked_checkpoint(
        config,
        checkpoint_path,
        class_counts,
        subset_checksum,
        init.load == "all",
        init.subset_seed,
        summary=summary,
    )
    weights = saved["session"]["model"]
    if config.init.load == "backbone":
        weights = {**model_state, **{k: v for k, v in weights.items() if k.startswith("backbone.")}}
    return weights


def auxiliary_models(
    config: RunConfig,
    out_dir: Path,
    class_counts: list[int],
    subset_checksum: str,
    summary: dict | None = None,
) -> dict[str, dict]:
    """Train-if-missing, check and load every ``init.auxiliary`` model: name -> model state dict."""
    states = {}
    for name, source in config.init.auxiliary.items():
        path = ensure_stage1_checkpoint(config, source, out_dir)
        saved = checked_checkpoint(
            config, path, class_counts, subset_checksum, False, source.subset_seed, summary=summary
        )
        states[name] = saved["session"]["model"]
    return states
