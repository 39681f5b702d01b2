"""``tailfuse export``: the method's prediction path as ONNX or TorchScript, parity-checked.

What is exported is ``method.predict`` (not the bare ``model.forward``), so τ-norm's
normalised weights, LWS scales, post-hoc logit adjustment, FFN's two-backbone fusion and
``prediction: loss_logits`` are part of the file. Beside it, ``<file>.json`` records the
preprocessing (class names, mean/std, image size) and the parity check: the exported
model (onnxruntime for ONNX, ``torch.jit.load`` for TorchScript) and the eager model score
the same real images; the largest absolute logit difference is printed and must be at
most 1e-4 (float32), or nothing is written. Logits above 100 in magnitude carry less
absolute float32 precision: there the bound is 1e-6 of the largest logit.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

import tailfuse
from tailfuse.data.prepare import plan_subset
from tailfuse.engine.predict import Predictor, expand_image_paths
from tailfuse.errors import DataError, TailfuseError
from tailfuse.files import write_text_atomically

FORMATS = ("onnx", "torchscript")
PARITY_TOLERANCE = 1e-4
#: relative bound for large logits (float32 keeps ~7 significant digits; accumulation costs one)
PARITY_RELATIVE = 1e-6
CHECK_IMAGES = 32


class ExportError(TailfuseError):
    """An export that cannot be made or does not match the eager model."""


class PredictionModule(nn.Module):
    """``forward(images) = method.predict(images)``, with the method's extra modules registered."""

    def __init__(self, predictor: Predictor):
        super().__init__()
        self.model = predictor.model
        self.method_modules = nn.ModuleDict(predictor.method.modules_to_save())
        self._method = predictor.method

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._method.predict(images).float()


def default_check_images(predictor: Predictor) -> list[str]:
    """Up to :data:`CHECK_IMAGES` test images of the checkpoint's own recipe, evenly spread."""
    try:
        plan = plan_subset(predictor.config.data)
    except TailfuseError as error:
        raise DataError(
            f"no images for the parity check ({error}); name some with --check-images"
        ) from None
    source = plan.sources["test"]
    if source.paths is None:
        raise DataError(
            "the recipe's test images are not files (CIFAR pickles); name some with --check-images"
        )
    indices = plan.test_indices
    step = max(1, len(indices) // CHECK_IMAGES)
    return [source.paths[i] for i in indices[::step][:CHECK_IMAGES]]


def _write_onnx(module: nn.Module, example: torch.Tensor, path: Path, metadata: dict) -> None:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))


def _run_onnx(path: Path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])


def _write_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path))


def _run_torchscript(path: Path, images: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")(images).float()


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    output_format: str = "onnx",
    check_images: list[str] | None = None,
) -> dict:
    """Export ``checkpoint`` to ``out`` (+ ``out.json``); returns the metadata
    with the parity result."""
    if output_format not in FORMATS:
        raise ExportError(f"unknown export format '{output_format}' (onnx or torchscript)")
    if output_format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ExportError(
                "ONNX export needs onnx and onnxruntime: pip install 'tailfuse[export]'"
            ) from None
    out = Path(out)
    predictor = Predictor.from_checkpoint(checkpoint, "cpu")
    paths = expand_image_paths(check_images) if check_images else default_check_images(predictor)
    images = predictor.load_images(paths)
    eager = predictor.logits(images)
    metadata = {
        "format": output_format,
        "checkpoint": str(checkpoint),
        "name": predictor.config.name,
        "method": predictor.config.method.name,
        "tailfuse": tailfuse.__version__,
        "class_names": predictor.class_names,
        "output": f"float32 logits [N, {len(predictor.class_names)}] of the method's prediction; "
        "probabilities: softmax(probability_scale × logits)",
        "probability_scale": predictor.probability_scale,
        **predictor.preprocessing(),
    }
    module = PredictionModule(predictor).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        example = images[:2]
        if output_format == "onnx":
            _write_onnx(
                module,
                example,
                temporary,
                {
                    k: metadata[k]
                    for k in ("class_names", "mean", "std", "image_size", "probability_scale")
                },
            )
            exported = _run_onnx(temporary, images)
        else:
            _write_torchscript(module, example, temporary)
            exported = _run_torchscript(temporary, images)
        difference = float((exported - eager).abs().max())
        tolerance = max(PARITY_TOLERANCE, PARITY_RELATIVE * float(eager.abs().max()))
        metadata["parity"] = {
            "images": len(paths),
            "max_abs_logit_difference": difference,
            "max_abs_logit": float(eager.abs().max()),
            "tolerance": tolerance,
            "runtime": "onnxruntime (CPU)" if output_format == "onnx" else "torch.jit.load (CPU)",
        }
        if not difference <= tolerance:
            raise ExportError(
                f"the exported model differs from the eager one by up to {difference:.3g} in the "
                f"logits (tolerance {tolerance:.3g}); nothing was written"
            )
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    metadata_path = out.with_name(out.name + ".json")
    write_text_atomically(metadata_path, json.dumps(metadata, indent=2) + "\n")
    metadata["metadata_path"] = str(metadata_path)
    return metadata
