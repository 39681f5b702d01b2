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
from tailfuse.engine.checkpoint import load_checkpoint
from tailfuse.errors import CheckpointError

#: Settings a stage-1 run takes from the stage-2 recipe that starts from it.
INHERITED_TRAIN_KEYS = ("device", "progress", "threads")


def stage1_config(config: RunConfig, source: StageSource) -> RunConfig:
    """The earlier-stage recipe of ``source``, on exactly the later recipe's data."""
    recipe = apply_overrides(read_recipe_dict(source.recipe), source.overrides)
    recipe["data"] = config_to_dict(config)["data"]
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
    """The checkpoint of ``source``, training (or resuming) that run first when it is missing."""
    if source.checkpoint:
        return Path(source.checkpoint)
    from tailfuse.engine.trainer import train

    first_stage = stage1_config(config, source)
    run_dir = stage1_run_dir(config, source, out_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if last.exists():
        state = load_checkpoint(last)
        if state["epoch"] >= first_stage.train.epochs:
            return last
        print(f"stage 1 in {run_dir} stopped at epoch {state['epoch']}; resuming it")
        train(first_stage, run_dir, resume=True)
    else:
        print(f"stage-1 checkpoint {last} not found; training {first_stage.name} into {run_dir}")
        train(first_stage, run_dir)
    return last


def checked_checkpoint(
    config: RunConfig, checkpoint_path: Path, class_counts: list[int], subset_checksum: str, check_head: bool
) -> dict:
    """Load an earlier-stage checkpoint and refuse, with the reason, one that does not fit.

    It must have this recipe's backbone, class count and training subset (and head, when
    ``check_head``).
    """
    saved = load_checkpoint(checkpoint_path)
    saved_model = saved["config"]["model"]
    problems = []
    if saved_model["backbone"] != config.model.backbone:
        problems.append(f"backbone {saved_model['backbone']} (recipe: {config.model.backbone})")
    elif saved_model.get("backbone_options", {}) != config.model.backbone_options:
        saved_options = saved_model.get("backbone_options", {})
        problems.append(f"backbone_options {saved_options} (recipe: {config.model.backbone_options})")
    saved_classes = len(saved["data"]["class_counts"])
    if saved_classes != len(class_counts):
        problems.append(f"{saved_classes} classes (recipe: {len(class_counts)})")
    elif saved["data"]["subset_checksum"] != subset_checksum:
        problems.append(
            f"training subset {saved['data']['subset_checksum']} (recipe: {subset_checksum}; same data.* settings?)"
        )
    if check_head and saved_model["head"] != config.model.head:
        problems.append(f"head {saved_model['head']} (recipe: {config.model.head}; use init.load=backbone)")
    if problems:
        raise CheckpointError(f"stage-1 checkpoint {checkpoint_path} does not fit: " + "; ".join(problems))
    return saved


def initial_model_state(config: RunConfig, checkpoint_path: Path, class_counts: list[int], subset_checksum: str, model_state: dict) -> dict:
    """Stage-1 weights to start stage 2 from, after :func:`checked_checkpoint`.

    ``model_state`` is the freshly built model's state (kept for the head with ``load: backbone``).
    """
    saved = checked_checkpoint(config, checkpoint_path, class_counts, subset_checksum, config.init.load == "all")
    weights = saved["session"]["model"]
    if config.init.load == "backbone":
        weights = {**model_state, **{k: v for k, v in weights.items() if k.startswith("backbone.")}}
    return weights


def auxiliary_models(config: RunConfig, out_dir: Path, class_counts: list[int], subset_checksum: str) -> dict[str, dict]:
    """Train-if-missing, check and load every ``init.auxiliary`` model: name -> model state dict."""
    states = {}
    for name, source in config.init.auxiliary.items():
        path = ensure_stage1_checkpoint(config, source, out_dir)
        states[name] = checked_checkpoint(config, path, class_counts, subset_checksum, check_head=False)["session"]["model"]
    return states
