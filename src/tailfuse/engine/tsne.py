"""``tailfuse plot tsne RUN``: t-SNE of a run's test features, coloured by
many/medium/few (FFN Fig. 5).

Features are the backbone's pooled feature vectors (the input of the classifier) of up to
``max_images`` test images, taken evenly over the test set; scikit-learn's t-SNE embeds
them in 2-D with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tailfuse.config import build_config
from tailfuse.data.prepare import load_data
from tailfuse.engine.checkpoint import load_run_checkpoint, load_weights
from tailfuse.engine.runtime import make_runtime
from tailfuse.engine.session import TrainingSession
from tailfuse.errors import TailfuseError
from tailfuse.eval.report import save_figure
from tailfuse.files import read_json

GROUP_COLOURS = {"many": "#4C72B0", "medium": "#DD8452", "few": "#C44E52"}


def selected_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a run reported (``results.json`` selection), else ``last.pt``."""
    results_path = run_dir / "results.json"
    if results_path.is_file():
        results = read_json(results_path, "the run's results")
        selection = results.get("selection") if isinstance(results, dict) else None
        rule = selection.get("rule") if isinstance(selection, dict) else None
        if (
            rule in ("best_validation", "best_test")
            and (run_dir / "checkpoints" / f"{rule}.pt").is_file()
        ):
            return run_dir / "checkpoints" / f"{rule}.pt"
    return run_dir / "checkpoints" / "last.pt"


@torch.inference_mode()
def test_features(session: TrainingSession, indices: np.ndarray) -> np.ndarray:
    """Pooled backbone features (N, D) of the chosen test images."""
    split = session.data.test
    session.model.eval()
    features = []
    size = session.config.train.eval_batch_size
    for start in range(0, len(indices), size):
        chosen = torch.as_tensor(indices[start : start + size], device=split.images.device)
        images = session.runtime.prepare_images(session.augmenter.evaluate(split.images[chosen]))
        feature_map = session.model.features(images)
        maps = feature_map if isinstance(feature_map, (list, tuple)) else [feature_map]
        pooled = torch.stack([session.model.head.pool(one).float() for one in maps]).mean(0)
        features.append(pooled.cpu().numpy())
    return np.concatenate(features)


def plot_run_tsne(
    run_dir: str | Path,
    checkpoint: str | Path | None = None,
    max_images: int = 2000,
    out: str | Path | None = None,
    seed: int = 0,
) -> Path:
    """Embed the test features of ``run_dir``'s model with t-SNE and save the scatter plot."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise TailfuseError("plot tsne needs scikit-learn: pip install 'tailfuse[plots]'") from None

    run_dir = Path(run_dir)
    checkpoint = Path(checkpoint) if checkpoint else selected_checkpoint(run_dir)
    saved = load_run_checkpoint(checkpoint)
    config = build_config(saved["config"], str(checkpoint))
    if config.data.storage == "stream":
        raise TailfuseError("plot tsne supports data.storage=device runs")
    runtime = make_runtime(config.train)
    data = load_data(config.data, runtime.device, include_train=False)
    session = TrainingSession(config, data, runtime)
    load_weights(session.model, saved["session"]["model"], checkpoint)
    count = min(max_images, len(data.test))
    if count < 5:
        raise TailfuseError(f"plot tsne needs at least 5 test images, the run has {len(data.test)}")
    indices = np.linspace(0, len(data.test) - 1, count).round().astype(np.int64)
    features = test_features(session, indices)
    perplexity = float(min(30.0, (count - 1) / 3))
    embedded = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed
    ).fit_transform(features)
    labels = data.test.labels.cpu().numpy()[indices]
    group_of = {c: group for group, members in data.plan.groups.items() for c in members}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 6))
    for group, colour in GROUP_COLOURS.items():
        chosen = np.array([group_of.get(int(label)) == group for label in labels])
        if chosen.any():
            axis.scatter(
                embedded[chosen, 0],
                embedded[chosen, 1],
                s=6,
                c=colour,
                label=f"{group} ({chosen.sum()})",
                alpha=0.7,
            )
    axis.legend(title="class group", markerscale=3)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(f"{config.name}: t-SNE of {count} test features ({checkpoint.name})")
    figure.tight_layout()
    path = Path(out) if out else run_dir / "tsne.png"
    save_figure(figure, path)  # atomic: a failed save leaves an older tsne.png whole
    plt.close(figure)
    return path
