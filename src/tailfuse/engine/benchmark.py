"""Throughput benchmark: the end-to-end training step against a model-only loop.

Both loops run in one process on the same model, precision and memory format: the
model-only loop feeds pre-made random float tensors of the training batch's shape
through forward, cross-entropy, backward and the SGD step; the end-to-end loop runs the
trainer's own :meth:`TrainingSession.train_epoch` (sampling, gathering, augmentation,
mixup, the method's loss). Rounds alternate so that drift in machine speed hits both.

Both count the images they put through the model: the model-only loop one batch a step, the
end-to-end loop every image the method's step draws (BBN, H2T stage 2 and other two-branch
methods draw one batch per branch; a short last batch counts what it holds).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from tailfuse.config import RunConfig
from tailfuse.data.prepare import load_data
from tailfuse.engine.runtime import make_runtime
from tailfuse.engine.session import TrainingSession


def _model_only(session: TrainingSession, steps: int) -> float:
    config = session.config
    runtime = session.runtime
    batch_size = config.train.batch_size
    size = (
        config.data.augment.crop_size if config.data.storage == "stream" else config.data.image_size
    )
    generator = torch.Generator(device=runtime.device).manual_seed(0)
    images = runtime.prepare_images(
        torch.randn(batch_size, 3, size, size, generator=generator, device=runtime.device)
    )
    labels = torch.randint(
        session.data.num_classes, (batch_size,), generator=generator, device=runtime.device
    )
    model, optimizer = session.model, session.optimizer
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        with runtime.autocast():
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        session.scaler.scale(loss).backward()
        session.scaler.step(optimizer)
        session.scaler.update()
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def _end_to_end(session: TrainingSession, steps: int, epoch: int) -> float:
    start = time.perf_counter()
    record = session.train_epoch(epoch, max_steps=steps)
    if session.runtime.device.type == "cuda":
        torch.cuda.synchronize()
    # the epoch's own count over all branches (its rate times its seconds)
    images = round(record["images_per_second"] * record["seconds"])
    return images / (time.perf_counter() - start)


def run_benchmark(
    config: RunConfig, steps: int | None = None, rounds: int = 3, warmup_steps: int = 5
) -> dict:
    """Measure images/s of both loops over ``rounds`` alternating rounds;
    returns medians and ratio."""
    runtime = make_runtime(config.train)
    data = load_data(config.data, runtime.device)
    session = TrainingSession(config, data, runtime)
    steps = min(steps or session.steps_per_epoch, session.steps_per_epoch)
    _model_only(session, warmup_steps)
    _end_to_end(session, warmup_steps, 0)
    model_only, end_to_end = [], []
    for round_index in range(rounds):
        model_only.append(_model_only(session, steps))
        end_to_end.append(_end_to_end(session, steps, round_index + 1))
    model_rate, full_rate = statistics.median(model_only), statistics.median(end_to_end)
    return {
        "recipe": config.name,
        "device": str(runtime.device),
        "precision": runtime.precision,
        "channels_last": runtime.channels_last,
        "threads": torch.get_num_threads(),
        "batch_size": config.train.batch_size,
        "steps_per_round": steps,
        "rounds": rounds,
        "model_only_images_per_second": model_only,
        "end_to_end_images_per_second": end_to_end,
        "model_only_median": model_rate,
        "end_to_end_median": full_rate,
        "ratio_model_only_over_end_to_end": model_rate / full_rate,
    }


def format_benchmark(result: dict) -> str:
    """A few lines for the terminal and the README."""
    return (
        f"{result['recipe']} on {result['device']} ({result['precision']}, "
        f"channels_last={result['channels_last']}, {result['threads']} threads, batch "
        f"{result['batch_size']}, {result['steps_per_round']} steps x {result['rounds']} rounds)\n"
        f"  model-only : {result['model_only_median']:.0f} images/s  (rounds: "
        + ", ".join(f"{value:.0f}" for value in result["model_only_images_per_second"])
        + ")\n"
        f"  end-to-end : {result['end_to_end_median']:.0f} images/s  (rounds: "
        + ", ".join(f"{value:.0f}" for value in result["end_to_end_images_per_second"])
        + ")\n"
        f"  ratio model-only / end-to-end: {result['ratio_model_only_over_end_to_end']:.3f}"
    )
