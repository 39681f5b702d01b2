"""The trainer: a run directory, epochs, evaluation, checkpoints, resume, results.

Read top to bottom: :func:`train` prepares the run directory and data, builds a
:class:`TrainingSession`, resumes it when asked, runs the epochs (evaluating and
checkpointing as configured), selects the model to report without looking at the test
set unless the recipe names ``best_test``, and writes the report.

Under torchrun every process runs this function; only rank 0 writes the run directory
(engine/distributed.py), and a run resumes on any number of processes.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from tailfuse.config import RunConfig, build_config, config_to_dict
from tailfuse.data.prepare import load_data, with_absolute_paths
from tailfuse.engine.checkpoint import (
    capture_rng_state,
    load_run_checkpoint,
    load_weights,
    restore_rng_state,
    save_checkpoint,
)
from tailfuse.engine.distributed import world
from tailfuse.engine.provenance import provenance, start_record
from tailfuse.engine.rundir import (
    check_output_folder,
    checkpoint_record,
    legacy_log,
    make_output_folder,
    open_run_directory,
    restored_log,
    write_metrics_log,
    write_text_atomically,
)
from tailfuse.engine.runtime import make_runtime
from tailfuse.engine.session import TrainingSession, warn_non_finite
from tailfuse.engine.stages import auxiliary_models, ensure_stage1_checkpoint, initial_model_state
from tailfuse.errors import CheckpointError, ConfigError, TailfuseError, TrainingError
from tailfuse.eval.report import json_text, write_report
from tailfuse.files import read_json

#: Keys that may differ between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = {
    "train.progress",
    "train.threads",
    "train.device",
    "train.tensorboard",
    "data.root",
    "data.cache_dir",
    "data.download",
    "train.compile",
    "train.check_finite_every",
    "data.num_workers",
}


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_differences(saved: dict, current: dict) -> list[str]:
    """Dotted keys whose values differ between two resolved recipes."""
    old, new = _flatten(saved), _flatten(current)
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def selection_rule(config: RunConfig, has_validation: bool) -> str:
    """Which epoch's model is reported: never the test set unless the recipe says so."""
    rule = config.train.selection
    if rule == "auto":
        return "best_validation" if has_validation else "final"
    if rule == "best_validation" and not has_validation:
        raise TailfuseError("train.selection=best_validation needs data.validation_per_class > 0")
    return rule


def _is_eval_epoch(config: RunConfig, epoch_number: int, rule: str) -> bool:
    """Evaluate at the last epoch, every ``eval_every`` epochs, and every epoch under best_test."""
    every = config.train.eval_every
    if rule == "best_test":  # the authors' best epoch is the best of all of them
        return True
    return epoch_number == config.train.epochs or (every > 0 and epoch_number % every == 0)


def check_starting_point(config: RunConfig) -> None:
    """Refuse a stage-2 method without a trained model to start from.

    Such a method freezes the backbone and re-trains the classifier; without ``init``
    (or ``model.weights``) it would train a head on a random frozen backbone.
    """
    from tailfuse.methods import METHODS

    method_class = METHODS.get(config.method.name)
    if (
        getattr(method_class, "needs_trained_model", False)
        and config.init is None
        and not config.model.weights
    ):
        raise ConfigError(
            f"method {config.method.name} re-trains the classifier on a frozen, already trained "
            "backbone: set init.recipe or init.checkpoint (the stage-1 run) or model.weights"
        )


def check_same_classes(saved_names: list[str], names: list[str], what: str) -> None:
    """Refuse data whose classes (names, in label order) differ from the ones
    a model was trained on."""
    if list(saved_names) == list(names):
        return
    position = next(
        (i for i, (a, b) in enumerate(zip(saved_names, names)) if a != b),  # noqa: B905
        None,
    )
    if position is not None:
        detail = f"label {position} is '{names[position]}' here but was '{saved_names[position]}'"
    else:
        detail = f"{len(names)} classes here, {len(saved_names)} in training"
    raise CheckpointError(
        f"{what}: the class folders differ from the ones it was trained on ({detail})"
    )


def seed_everything(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators from the recipe.

    Model initialisation draws from torch's; the others are saved in every checkpoint,
    so seeding them makes two identical runs write bit-identical checkpoints.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    config: RunConfig, out_dir: str | Path, resume: bool = False, overwrite: bool = False
) -> dict:
    """Train the recipe ``config`` into ``out_dir`` and return its results (``results.json``).

    The directory is created and locked first (another run on it is refused), an earlier
    run in it is kept unless ``overwrite`` (or continued with ``resume``).
    """
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise ConfigError(
            "--resume continues the run in --out and --overwrite deletes it: pass one of them"
        )
    config = with_absolute_paths(config)  # stored so: eval from any folder finds the data
    check_starting_point(config)
    # under torchrun only rank 0 owns (locks, creates, cleans) the run directory
    owner = (
        open_run_directory(out_dir, resume, overwrite)
        if world().is_main
        else contextlib.nullcontext()
    )
    with owner:
        return _train_locked(config, out_dir, resume)


def unresumable_differences(saved_config: dict, config: RunConfig) -> list[str]:
    """The keys in which ``config`` differs from a saved run's config, less the ones a resumed
    run may change (:data:`RESUMABLE_CHANGES`)."""
    return [
        key
        for key in config_differences(saved_config, config_to_dict(config))
        if key not in RESUMABLE_CHANGES
    ]


def _train_locked(config: RunConfig, out_dir: Path, resume: bool) -> dict:
    last_path = out_dir / "checkpoints" / "last.pt"
    saved = None
    if resume:
        saved = load_run_checkpoint(last_path)
        differences = unresumable_differences(saved["config"], config)
        if differences:
            raise CheckpointError(
                f"cannot resume {out_dir}: the recipe differs from the saved run "
                f"in {', '.join(differences)}"
            )

    runtime = make_runtime(config.train)
    data = load_data(config.data, runtime.device)
    summary = data.summary()
    if saved is not None:
        _check_resumed_data(out_dir, saved["data"], summary)
    initialize, auxiliary = None, None
    if config.init is not None and saved is None:
        stage1_checkpoint = ensure_stage1_checkpoint(config, config.init, out_dir)
        auxiliary = auxiliary_models(
            config, out_dir, data.class_counts, summary["subset_checksum"], summary=summary
        )

        def initialize(model):
            state = initial_model_state(
                config,
                stage1_checkpoint,
                data.class_counts,
                summary["subset_checksum"],
                model.state_dict(),
                summary=summary,
            )
            load_weights(model, state, stage1_checkpoint)

    seed_everything(config.train.seed)
    session = TrainingSession(config, data, runtime, initialize=initialize, auxiliary=auxiliary)
    rule = selection_rule(config, data.validation is not None)
    main = world().is_main  # under torchrun only rank 0 writes

    if main:
        write_text_atomically(
            out_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False)
        )
        write_text_atomically(out_dir / "data_summary.json", json_text(summary, indent=2))
    log_path = out_dir / "metrics.jsonl"

    start_epoch, best, history = 0, {"score": float("-inf"), "epoch": 0}, []
    if saved is not None:
        try:
            session.load_state_dict(saved["session"])
            restore_rng_state(saved["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            detail = " ".join(str(error).split())[:200]
            raise CheckpointError(
                f"cannot resume from {last_path}: {type(error).__name__}: {detail}"
            ) from None
        start_epoch, best = saved["epoch"], dict(saved["best"])
        if "history" in saved:
            history = [dict(record) for record in saved["history"]]
            log_records = restored_log(log_path, history)
        else:  # a checkpoint written before the history was kept in it
            log_records = legacy_log(log_path, start_epoch)
            history = [checkpoint_record(record) for record in log_records]
    else:
        log_records = []
        if rule == "best_test" and config.init is not None and config.init.inherit_best:
            # H2T/MiSLAS start best_acc1 from stage 1: the initial model competes as epoch 0
            best = {"score": session.evaluate(data.test)["top1"], "epoch": 0}
            if main:
                initial = _checkpoint(config, session, summary, 0, best, [])
                save_checkpoint(initial, out_dir / "checkpoints" / f"{rule}.pt")
    if main:
        write_metrics_log(log_path, log_records)
        earlier_starts = read_starts(out_dir) if saved is not None else []
        write_text_atomically(
            out_dir / "starts.jsonl",
            "".join(
                json.dumps(record) + "\n" for record in [*earlier_starts, start_record(start_epoch)]
            ),
        )

    progress = config.train.progress and main
    tensorboard = None
    if config.train.tensorboard and main:
        from tailfuse.engine.tensorboard import EpochLogger

        tensorboard = EpochLogger(out_dir)
    evaluated: dict = {}
    for epoch in range(start_epoch, config.train.epochs):
        try:
            record = session.train_epoch(epoch, progress=progress)
        except TrainingError as error:
            kept = (
                f"the last good checkpoint (epoch {epoch}) is kept in {last_path}"
                if epoch
                else "no checkpoint was written"
            )
            raise TrainingError(f"training diverged in {out_dir}: {error}; {kept}") from None
        if _is_eval_epoch(config, epoch + 1, rule):
            evaluated = _evaluate_splits(session, data)
            record.update(_log_entries(evaluated))
            selection_split = {"best_validation": "validation", "best_test": "test"}.get(rule)
            if selection_split and record[f"{selection_split}_top1"] > best["score"]:
                best = {"score": record[f"{selection_split}_top1"], "epoch": epoch + 1}
                if main:
                    save_checkpoint(
                        _checkpoint(
                            config,
                            session,
                            summary,
                            epoch + 1,
                            best,
                            [*history, checkpoint_record(record)],
                        ),
                        out_dir / "checkpoints" / f"{rule}.pt",
                    )
        history.append(checkpoint_record(record))
        log_records.append(record)
        if main:
            # the checkpoint holds the whole history, so a kill before the log
            # is rewritten loses no line
            save_checkpoint(
                _checkpoint(config, session, summary, epoch + 1, best, history), last_path
            )
            write_metrics_log(log_path, log_records)
        world().barrier()  # no process reads a checkpoint before rank 0 has written it
        if tensorboard is not None:
            tensorboard.log(record)
        if main:
            (tqdm.write if progress else print)(
                _format_record(record)
            )  # one line per epoch, bars or not
    if tensorboard is not None:
        tensorboard.close()

    final_epoch_metrics = evaluated if start_epoch < config.train.epochs else {}
    return finish_run(config, session, out_dir, rule, best, final_epoch_metrics)


def _check_resumed_data(out_dir: Path, saved_data: dict, summary: dict) -> None:
    """A resumed run must see the same classes, subset and (when recorded) pixels."""
    check_same_classes(
        saved_data["class_names"], summary["class_names"], f"cannot resume {out_dir}"
    )
    if saved_data["subset_checksum"] != summary["subset_checksum"]:
        raise CheckpointError(
            f"cannot resume {out_dir}: the training subset changed (checksum "
            f"{summary['subset_checksum']} vs saved {saved_data['subset_checksum']}); "
            "is data.root the same dataset?"
        )
    saved_content = saved_data.get("content_checksum")
    if (
        saved_content
        and summary["content_checksum"]
        and saved_content != summary["content_checksum"]
    ):
        raise CheckpointError(
            f"cannot resume {out_dir}: the training images changed (content "
            f"checksum {summary['content_checksum']} vs saved {saved_content}); "
            "is data.root the same dataset?"
        )


def _evaluate_splits(session: TrainingSession, data) -> dict:
    return {
        name: session.evaluate(getattr(data, name))
        for name in ("validation", "test")
        if getattr(data, name) is not None
    }


def _log_entries(evaluated: dict) -> dict:
    entries = {}
    for split_name, metrics in evaluated.items():
        entries[f"{split_name}_top1"] = metrics["top1"]
        entries[f"{split_name}_group_accuracy"] = metrics["group_accuracy"]
    return entries


def _format_record(record: dict) -> str:
    """The epoch's progress line; an epoch without training steps (τ-norm) shows no loss."""
    if math.isnan(record["train_loss"]):
        text = f"epoch {record['epoch']}: no training steps"
    else:
        text = (
            f"epoch {record['epoch']}: loss {record['train_loss']:.4f} lr {record['lr']:.5f} "
            f"({record['images_per_second']:.0f} img/s)"
        )
    if "validation_top1" in record:
        text += f" val {record['validation_top1']:.2f}"
    if "test_top1" in record:
        groups = record["test_group_accuracy"]
        text += (
            f" test {record['test_top1']:.2f} ("
            + ", ".join(f"{g} {groups[g]:.1f}" for g in groups)
            + ")"
        )
    return text


def _checkpoint(
    config: RunConfig,
    session: TrainingSession,
    summary: dict,
    epoch: int,
    best: dict,
    history: list[dict],
) -> dict:
    data_keys = ("class_names", "class_counts", "subset_checksum", "content_checksum", "total")
    return {
        "config": config_to_dict(config),
        "epoch": epoch,
        "session": session.state_dict(),
        "rng": capture_rng_state(),
        "best": best,
        "data": {key: summary[key] for key in data_keys},
        "history": [dict(record) for record in history],
    }


def glt_protocols(session: TrainingSession, data) -> dict:
    """Every GLT test set of the run, scored as spec glt_ifl §2 and named by its protocol."""
    from tailfuse.data.glt import PROTOCOL_NAMES
    from tailfuse.eval.glt import glt_metrics

    names = PROTOCOL_NAMES[data.plan.glt_train_set]
    protocols = {}
    for split_name, split in data.named_tests.items():
        metrics = glt_metrics(
            session.predict(split),
            split.labels,
            data.plan.groups,
            split.attributes,
            data.num_classes,
        )
        protocols[split_name] = {"protocol": names.get(split_name, split_name), "metrics": metrics}
        warn_non_finite(
            metrics["non_finite_samples"],
            len(split.labels),
            f"images of GLT test set {split_name}",
            session.world.is_main,
        )
    return protocols


def finish_run(
    config: RunConfig,
    session: TrainingSession,
    out_dir: Path,
    rule: str,
    best: dict,
    final_epoch_metrics: dict | None = None,
) -> dict:
    """Evaluate the selected model and write ``results.json``, ``report.md`` and the plot.

    ``final_epoch_metrics`` are the final epoch's evaluations when the loop already made them.
    """
    data = session.data
    adaptation = session.adapt_to_unlabelled(data.test)  # None unless the method adapts (TADE)
    if adaptation is not None:  # the loop's evaluations predate it
        final_epoch_metrics = None
    final_epoch_metrics = final_epoch_metrics or _evaluate_splits(session, data)
    final_test = final_epoch_metrics["test"]
    selected_epoch, test_metrics = config.train.epochs, final_test
    if rule != "final":
        selected_path = out_dir / "checkpoints" / f"{rule}.pt"
        selected = load_run_checkpoint(selected_path)
        _load_model_weights(session, selected, selected_path)  # LWS scales belong to the model
        adaptation = session.adapt_to_unlabelled(data.test)  # again, for the selected model
        selected_epoch, test_metrics = selected["epoch"], session.evaluate(data.test)
    results = {
        "name": config.name,
        "method": config.method.name,
        "epochs": config.train.epochs,
        "seed": config.train.seed,
        "selection": {"rule": rule, "epoch": selected_epoch},
        "test": test_metrics,
        "final_epoch_test": final_test if rule != "final" else None,
        "validation": final_epoch_metrics.get("validation"),
        "data": data.plan.summary(),
        "environment": {
            **provenance(str(session.runtime.device), session.runtime.precision),
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            "processes": world().world_size,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    }
    starts = read_starts(out_dir)
    if starts:
        results["environment"]["starts"] = starts
    if adaptation is not None:
        results["test_time_adaptation"] = adaptation
    if data.named_tests:
        results["glt"] = glt_protocols(session, data)
    if world().is_main:
        write_report(out_dir, results)
    return results


def read_starts(out_dir: Path) -> list[dict]:
    """The records of ``starts.jsonl`` (every start and resume of the run); a missing file
    (a run from before it existed) or an unreadable line gives what could be read."""
    path = out_dir / "starts.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _load_model_weights(session: TrainingSession, saved: dict, path: Path) -> None:
    """The model's and the method's saved modules' weights; a mismatch is one clear error."""
    load_weights(session.model, saved["session"]["model"], path)
    modules = saved["session"]["method_modules"]
    for name, module in session.method.modules_to_save().items():
        if name not in modules:
            raise CheckpointError(
                f"checkpoint {path} has no '{name}' weights, which method "
                f"{session.method.name} needs"
            )
        load_weights(module, modules[name], path, f"{session.method.name} '{name}'")


def resolve_checkpoint_argument(path: str | Path) -> Path:
    """A checkpoint file, or a run directory meaning the checkpoint its results report.

    ``eval RUN_DIR`` evaluates the model the run selected (``checkpoints/<rule>.pt`` of its
    ``results.json``, or ``last.pt``).
    """
    path = Path(path)
    if not path.is_dir():
        return path
    checkpoints = path / "checkpoints"
    if not checkpoints.is_dir():
        raise CheckpointError(
            f"{path} is a folder without checkpoints/; pass a checkpoint file or a run directory"
        )
    rule = "final"  # a run without results.json has not finished: its last checkpoint
    if (path / "results.json").exists():
        try:
            results = read_json(path / "results.json", "the run's results")
            rule = results["selection"]["rule"]
        except (TailfuseError, KeyError, TypeError) as error:
            reason = error if isinstance(error, TailfuseError) else "it names no selection rule"
            raise CheckpointError(
                f"cannot tell which checkpoint {path} reported ({reason}); "
                "pass the checkpoint file itself"
            ) from None
    chosen = checkpoints / ("last.pt" if rule == "final" else f"{rule}.pt")
    if not chosen.is_file():
        raise CheckpointError(
            f"{path}'s results report its {rule} model, but {chosen} is missing; "
            "pass a checkpoint file"
        )
    print(f"evaluating {chosen}", file=sys.stderr)  # stdout stays the metrics' JSON
    return chosen


def _check_evaluation_folder(out_dir: Path, checkpoint_path: Path, overwrite: bool) -> None:
    """Refuse to write an evaluation over a training run's files or another checkpoint's report.

    Creates nothing: the folder is made when the report is written, after the data was read.
    """
    check_output_folder(out_dir)
    if overwrite:
        return
    if (out_dir / "config.yaml").exists() or (out_dir / "checkpoints").exists():
        raise TailfuseError(
            f"{out_dir} is a training run's directory; its results.json and "
            "report.md would be replaced. Choose another eval --out (default: "
            "RUN/eval_<checkpoint>), or pass --overwrite"
        )
    results = out_dir / "results.json"
    if results.exists():
        try:
            earlier = json.loads(results.read_text()).get("checkpoint")
        except (OSError, ValueError, AttributeError):
            earlier = None
        if earlier is None or Path(earlier).resolve() != checkpoint_path.resolve():
            raise TailfuseError(
                f"{out_dir} already holds results of {earlier or 'another run'}; "
                "choose another --out or pass --overwrite"
            )


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    out_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    overwrite: bool = False,
) -> dict:
    """Evaluate a saved checkpoint (or a run directory's) on its recipe's test set;
    writes the report to ``out_dir``.

    The report folder may not be a training run's directory, nor hold another
    checkpoint's results, unless ``overwrite``.
    """
    from tailfuse.config import apply_overrides

    checkpoint_path = resolve_checkpoint_argument(checkpoint_path)
    saved = load_run_checkpoint(checkpoint_path)
    config = build_config(
        apply_overrides(saved["config"], list(overrides or [])), str(checkpoint_path)
    )
    config = with_absolute_paths(config)
    out_dir = (
        Path(out_dir) if out_dir else checkpoint_path.parent.parent / f"eval_{checkpoint_path.stem}"
    )
    _check_evaluation_folder(out_dir, checkpoint_path, overwrite)
    runtime = make_runtime(config.train)
    data = load_data(config.data, runtime.device, include_train=False)
    check_same_classes(
        saved["data"]["class_names"], data.plan.class_names, f"cannot evaluate {checkpoint_path}"
    )
    if data.plan.subset_checksum != saved["data"]["subset_checksum"]:
        raise CheckpointError(
            f"the recipe's training subset (checksum {data.plan.subset_checksum}) is not the one "
            f"{checkpoint_path} was trained on ({saved['data']['subset_checksum']})"
        )
    # the checkpoint holds every weight: model.weights need not exist where it is evaluated
    session = TrainingSession(config, data, runtime, pretrained=False)
    _load_model_weights(session, saved, checkpoint_path)
    adaptation = session.adapt_to_unlabelled(data.test)  # None unless the method adapts (TADE)
    results = {
        "name": config.name,
        "method": config.method.name,
        "epochs": config.train.epochs,
        "checkpoint": str(checkpoint_path),
        "selection": {"rule": "checkpoint", "epoch": saved["epoch"]},
        "test": session.evaluate(data.test),
        "final_epoch_test": None,
        "validation": session.evaluate(data.validation) if data.validation is not None else None,
        "data": data.plan.summary(),
        "environment": provenance(str(runtime.device), runtime.precision),
    }
    if adaptation is not None:
        results["test_time_adaptation"] = adaptation
    if data.named_tests:
        results["glt"] = glt_protocols(session, data)
    if world().is_main:
        make_output_folder(out_dir)
        write_report(out_dir, results)
    return results
