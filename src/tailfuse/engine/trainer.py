"""The trainer: a run directory, epochs, evaluation, checkpoints, resume, results.

Read top to bottom: :func:`train` prepares the run directory and data, builds a
:class:`TrainingSession`, resumes it when asked, runs the epochs (evaluating and
checkpointing as configured), selects the model to report without looking at the test
set unless the recipe names ``best_test``, and writes the report.

Under torchrun every process runs this function; only rank 0 writes the run directory
(engine/distributed.py), and a run resumes on any number of processes.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from tailfuse.config import RunConfig, build_config, config_to_dict
from tailfuse.data.prepare import load_data
from tailfuse.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from tailfuse.engine.distributed import world
from tailfuse.engine.runtime import make_runtime
from tailfuse.engine.session import TrainingSession
from tailfuse.engine.stages import auxiliary_models, ensure_stage1_checkpoint, initial_model_state
from tailfuse.errors import CheckpointError, TailfuseError
from tailfuse.eval.report import write_report

#: Keys that may differ between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = {
    "train.progress", "train.threads", "train.device", "data.root", "data.cache_dir", "data.download",
    "train.compile", "train.check_finite_every", "data.num_workers",
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


def _is_eval_epoch(config: RunConfig, epoch_number: int) -> bool:
    every = config.train.eval_every
    return epoch_number == config.train.epochs or (every > 0 and epoch_number % every == 0)


def _truncate_log(path: Path, completed_epochs: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["epoch"] <= completed_epochs]
    path.write_text("".join(f"{line}\n" for line in kept))


def train(config: RunConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Train the recipe ``config`` into ``out_dir`` and return its results (``results.json``)."""
    out_dir = Path(out_dir)
    last_path = out_dir / "checkpoints" / "last.pt"
    saved = None
    if resume:
        saved = load_checkpoint(last_path)
        differences = [
            key for key in config_differences(saved["config"], config_to_dict(config)) if key not in RESUMABLE_CHANGES
        ]
        if differences:
            raise CheckpointError(
                f"cannot resume {out_dir}: the recipe differs from the saved run in {', '.join(differences)}"
            )
    elif last_path.exists():
        raise TailfuseError(f"{out_dir} already holds a run; pass --resume to continue it, or choose another --out")

    runtime = make_runtime(config.train)
    data = load_data(config.data, runtime.device)
    summary = data.plan.summary()
    if saved is not None and saved["data"]["subset_checksum"] != summary["subset_checksum"]:
        raise CheckpointError(
            f"cannot resume {out_dir}: the training subset changed (checksum {summary['subset_checksum']} "
            f"vs saved {saved['data']['subset_checksum']}); is data.root the same dataset?"
        )
    initialize, auxiliary = None, None
    if config.init is not None and saved is None:
        stage1_checkpoint = ensure_stage1_checkpoint(config, config.init, out_dir)
        auxiliary = auxiliary_models(config, out_dir, data.class_counts, summary["subset_checksum"])

        def initialize(model):
            state = initial_model_state(
                config, stage1_checkpoint, data.class_counts, summary["subset_checksum"], model.state_dict()
            )
            model.load_state_dict(state)

    torch.manual_seed(config.train.seed)  # model initialisation draws from the global generator
    session = TrainingSession(config, data, runtime, initialize=initialize, auxiliary=auxiliary)
    rule = selection_rule(config, data.validation is not None)
    main = world().is_main  # under torchrun only rank 0 writes

    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
        (out_dir / "data_summary.json").write_text(json.dumps(summary, indent=2))
    log_path = out_dir / "metrics.jsonl"

    start_epoch, best = 0, {"score": float("-inf"), "epoch": 0}
    if saved is not None:
        session.load_state_dict(saved["session"])
        restore_rng_state(saved["rng"])
        start_epoch, best = saved["epoch"], dict(saved["best"])
        if main:
            _truncate_log(log_path, start_epoch)
    elif main:
        log_path.write_text("")

    progress = config.train.progress and main
    evaluated: dict = {}
    for epoch in range(start_epoch, config.train.epochs):
        record = session.train_epoch(epoch, progress=progress)
        if _is_eval_epoch(config, epoch + 1):
            evaluated = _evaluate_splits(session, data)
            record.update(_log_entries(evaluated))
            selection_split = {"best_validation": "validation", "best_test": "test"}.get(rule)
            if selection_split and record[f"{selection_split}_top1"] > best["score"]:
                best = {"score": record[f"{selection_split}_top1"], "epoch": epoch + 1}
                if main:
                    save_checkpoint(_checkpoint(config, session, summary, epoch + 1, best), out_dir / "checkpoints" / f"{rule}.pt")
        if main:
            save_checkpoint(_checkpoint(config, session, summary, epoch + 1, best), last_path)
            with log_path.open("a") as log:
                log.write(json.dumps(record) + "\n")
        world().barrier()  # no process reads a checkpoint before rank 0 has written it
        if progress:
            tqdm.write(_format_record(record))

    final_epoch_metrics = evaluated if start_epoch < config.train.epochs else {}
    return finish_run(config, session, out_dir, rule, best, final_epoch_metrics)


def _evaluate_splits(session: TrainingSession, data) -> dict:
    return {name: session.evaluate(getattr(data, name)) for name in ("validation", "test") if getattr(data, name) is not None}


def _log_entries(evaluated: dict) -> dict:
    entries = {}
    for split_name, metrics in evaluated.items():
        entries[f"{split_name}_top1"] = metrics["top1"]
        entries[f"{split_name}_group_accuracy"] = metrics["group_accuracy"]
    return entries


def _format_record(record: dict) -> str:
    text = f"epoch {record['epoch']}: loss {record['train_loss']:.4f} lr {record['lr']:.5f} ({record['images_per_second']:.0f} img/s)"
    if "validation_top1" in record:
        text += f" val {record['validation_top1']:.2f}"
    if "test_top1" in record:
        groups = record["test_group_accuracy"]
        text += f" test {record['test_top1']:.2f} (" + " / ".join(f"{groups[g]:.1f}" for g in groups) + ")"
    return text


def _checkpoint(config: RunConfig, session: TrainingSession, summary: dict, epoch: int, best: dict) -> dict:
    return {
        "config": config_to_dict(config),
        "epoch": epoch,
        "session": session.state_dict(),
        "rng": capture_rng_state(),
        "best": best,
        "data": {key: summary[key] for key in ("class_names", "class_counts", "subset_checksum", "total")},
    }


def glt_protocols(session: TrainingSession, data) -> dict:
    """Every GLT test set of the run, scored as spec glt_ifl §2 and named by its protocol."""
    from tailfuse.data.glt import PROTOCOL_NAMES
    from tailfuse.eval.glt import glt_metrics

    names = PROTOCOL_NAMES[data.plan.glt_train_set]
    protocols = {}
    for split_name, split in data.named_tests.items():
        metrics = glt_metrics(session.predict(split), split.labels, data.plan.groups, split.attributes, data.num_classes)
        protocols[split_name] = {"protocol": names.get(split_name, split_name), "metrics": metrics}
    return protocols


def finish_run(
    config: RunConfig, session: TrainingSession, out_dir: Path, rule: str, best: dict, final_epoch_metrics: dict | None = None
) -> dict:
    """Evaluate the selected model and write ``results.json``, ``report.md`` and the plot.

    ``final_epoch_metrics`` are the final epoch's evaluations when the loop already made them.
    """
    data = session.data
    final_epoch_metrics = final_epoch_metrics or _evaluate_splits(session, data)
    final_test = final_epoch_metrics["test"]
    selected_epoch, test_metrics = config.train.epochs, final_test
    if rule != "final":
        selected = load_checkpoint(out_dir / "checkpoints" / f"{rule}.pt")
        session.model.load_state_dict(selected["session"]["model"])
        for name, module in session.method.modules_to_save().items():  # LWS scales belong to the model
            module.load_state_dict(selected["session"]["method_modules"][name])
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
            "torch": torch.__version__,
            "device": str(session.runtime.device),
            "precision": session.runtime.precision,
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            "processes": world().world_size,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    }
    if data.named_tests:
        results["glt"] = glt_protocols(session, data)
    if world().is_main:
        write_report(out_dir, results)
    return results


def evaluate_checkpoint(checkpoint_path: str | Path, out_dir: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """Evaluate a saved checkpoint on its recipe's test set; writes the report to ``out_dir``."""
    from tailfuse.config import apply_overrides

    checkpoint_path = Path(checkpoint_path)
    saved = load_checkpoint(checkpoint_path)
    config = build_config(apply_overrides(saved["config"], list(overrides or [])), str(checkpoint_path))
    runtime = make_runtime(config.train)
    data = load_data(config.data, runtime.device, include_train=False)
    if data.plan.subset_checksum != saved["data"]["subset_checksum"]:
        raise CheckpointError(
            f"the recipe's training subset (checksum {data.plan.subset_checksum}) is not the one "
            f"{checkpoint_path} was trained on ({saved['data']['subset_checksum']})"
        )
    session = TrainingSession(config, data, runtime)
    session.model.load_state_dict(saved["session"]["model"])
    for name, module in session.method.modules_to_save().items():
        module.load_state_dict(saved["session"]["method_modules"][name])
    out_dir = Path(out_dir) if out_dir else checkpoint_path.parent.parent / f"eval_{checkpoint_path.stem}"
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
        "environment": {"torch": torch.__version__, "device": str(runtime.device), "precision": runtime.precision},
    }
    if data.named_tests:
        results["glt"] = glt_protocols(session, data)
    if world().is_main:
        write_report(out_dir, results)
    return results
