"""``tailfuse predict``: top-k classes of new images, through the method's own prediction.

A :class:`Predictor` rebuilds a checkpoint's model and method exactly as evaluation does
(so τ-norm, LWS scales, post-hoc logit adjustment, FFN's fused cosines and cosine-head
scales all apply) and preprocesses image files as the recipe's evaluation does: resize
to ``data.image_size`` squares and normalise (``augment.kind: cifar``), or resize the
short side to ``augment.resize`` and centre-crop ``augment.crop_size`` (``imagenet``).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

from tailfuse.config import RunConfig, build_config
from tailfuse.data.pipeline import BatchAugmenter, streamed_transforms
from tailfuse.data.sources import decode_image_files
from tailfuse.engine.checkpoint import load_run_checkpoint, load_weights
from tailfuse.engine.runtime import resolve_device
from tailfuse.errors import CheckpointError, DataError, TailfuseError
from tailfuse.methods import Method, build_method
from tailfuse.models import build_model

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def expand_image_paths(arguments: list[str]) -> list[str]:
    """Image files named by files, folders (searched recursively) and glob
    patterns, sorted, once each."""
    found: list[str] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            found += sorted(
                str(p)
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            )
        elif path.is_file():
            found.append(str(path))
        elif any(character in argument for character in "*?["):
            matches = sorted(
                m
                for m in glob.glob(str(path), recursive=True)
                if Path(m).suffix.lower() in IMAGE_EXTENSIONS
            )
            if not matches:
                raise DataError(f"no image matches {argument}")
            found += matches
        else:
            raise DataError(f"{argument} is not an image file, a folder or a glob pattern")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DataError(f"no image files in {' '.join(arguments)}")
    return unique


class Predictor:
    """A checkpoint's model and method in eval mode, with the recipe's evaluation preprocessing."""

    def __init__(
        self,
        config: RunConfig,
        method: Method,
        class_names: list[str],
        device: torch.device,
        source: str = "",
    ):
        self.config = config
        self.method = method
        self.model = method.model
        self.class_names = list(class_names)
        self.device = device
        self.source = source
        augment = config.data.augment
        self.augmenter = BatchAugmenter(augment, device)
        self.streamed = augment.kind == "imagenet"
        self.evaluation_transform = streamed_transforms(augment)[1] if self.streamed else None

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str = "auto") -> Predictor:
        """Load ``checkpoint`` (a run's ``checkpoints/*.pt``) onto ``device``
        (auto, cpu, cuda[:N])."""
        saved = load_run_checkpoint(checkpoint)
        config = build_config(saved["config"], str(checkpoint))
        target = resolve_device(device)
        class_names, class_counts = saved["data"]["class_names"], saved["data"]["class_counts"]
        # the checkpoint holds every weight: model.weights (the training run's pretrained
        # file) is neither read nor needed where the model is deployed
        model = build_model(config.model, len(class_names), pretrained=False)
        # the method first: a stage-2 method may re-initialise the head it is given (cRT)
        method = build_method(config, model, class_counts)
        load_weights(model, saved["session"]["model"], checkpoint)
        modules = method.modules_to_save()
        missing = sorted(set(modules) - set(saved["session"]["method_modules"]))
        if missing:
            raise CheckpointError(f"checkpoint {checkpoint} holds no {', '.join(missing)} weights")
        for name, module in modules.items():
            load_weights(module, saved["session"]["method_modules"][name], checkpoint, name)
            module.to(target).eval()
        model.to(target).eval()
        if method.prediction_uses_batch_statistics:
            print(
                f"warning: {config.method.name} evaluates with train-mode BatchNorm (the recipe's "
                "choice): a prediction depends on the other images of its batch",
                file=sys.stderr,
            )
        return cls(config, method, class_names, target, str(checkpoint))

    @property
    def input_size(self) -> int:
        """The side of the square images the model takes."""
        augment = self.config.data.augment
        return augment.crop_size if self.streamed else self.config.data.image_size

    def preprocessing(self) -> dict:
        """What is done to an RGB image before the model: recorded beside exported models."""
        augment = self.config.data.augment
        steps = (
            f"resize the short side to {augment.resize} (antialiased), "
            f"centre-crop {augment.crop_size}"
            if self.streamed
            else f"resize to {self.input_size}x{self.input_size} "
            "(antialiased, aspect ratio not kept)"
        )
        return {
            "input": f"float32 [N, 3, {self.input_size}, {self.input_size}], RGB",
            "steps": f"{steps}; scale to [0, 1]; subtract mean, divide by std (per channel)",
            "image_size": self.input_size,
            "resize": augment.resize if self.streamed else self.input_size,
            "mean": list(augment.mean),
            "std": list(augment.std),
        }

    def load_images(self, paths: list[str]) -> torch.Tensor:
        """Decoded and normalised images, float32 (N, 3, S, S) on the predictor's device."""
        if self.streamed:
            from torchvision.io import ImageReadMode, decode_image, read_file

            images = []
            for path in paths:
                try:
                    image = decode_image(read_file(path), mode=ImageReadMode.RGB)
                except (RuntimeError, ValueError) as error:
                    raise DataError(f"cannot decode image {path}: {error}") from None
                images.append(self.evaluation_transform(image))
            return torch.stack(images).to(self.device)
        decoded = decode_image_files(paths, self.input_size, warn=False)
        uint8 = torch.from_numpy(np.ascontiguousarray(decoded)).permute(0, 3, 1, 2).to(self.device)
        return self.augmenter.evaluate(uint8)

    @property
    def probability_scale(self) -> float:
        """The factor on the logits before the softmax: the training loss's scale s for models
        that predict raw cosines (LDAM, KPS, FFN; 1 otherwise), as for ECE and NLL."""
        return self.method.calibration_scale

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The method's evaluation logits (float32) for normalised images."""
        self.model.eval()
        return self.method.predict(images.to(self.device)).float()

    def predict_files(self, paths: list[str], top_k: int = 5, batch_size: int = 64) -> list[dict]:
        """For each file: its ``top_k`` classes with names and softmax probabilities, best first."""
        if top_k < 1 or batch_size < 1:
            raise TailfuseError("--top-k and --batch-size must be at least 1")
        top_k = min(top_k, len(self.class_names))
        rows = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            logits = self.logits(self.load_images(chunk)).double()
            probabilities = torch.softmax(self.probability_scale * logits, dim=1).cpu()
            values, indices = probabilities.topk(top_k, dim=1)
            for path, row_values, row_indices in zip(
                chunk, values.tolist(), indices.tolist(), strict=True
            ):
                rows.append(
                    {
                        "path": path,
                        "predictions": [
                            {"class": self.class_names[index], "index": index, "probability": value}
                            for value, index in zip(row_values, row_indices, strict=True)
                        ],
                    }
                )
        return rows


def predictions_text(rows: list[dict], output_format: str) -> str:
    """Predictions as CSV (``path, class_1, probability_1, ...``) or as a JSON list."""
    if output_format == "json":
        return json.dumps(rows, indent=2) + "\n"
    top_k = max(len(row["predictions"]) for row in rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "path",
            *(
                f"{kind}_{rank}"
                for rank in range(1, top_k + 1)
                for kind in ("class", "probability")
            ),
        ]
    )
    for row in rows:
        writer.writerow(
            [
                row["path"],
                *(
                    item
                    for p in row["predictions"]
                    for item in (p["class"], f"{p['probability']:.6f}")
                ),
            ]
        )
    return buffer.getvalue()
