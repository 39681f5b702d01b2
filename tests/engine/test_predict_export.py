"""predict and export go through the method's own prediction, checked against the formulas by hand.

Checkpoints are built from random weights (no training needed): what matters is that the
logits follow each method's formula (τ-norm, LWS, post-hoc adjustment, cosine scale, FFN
fusion), and that exported files (ONNX via onnxruntime, TorchScript) give the same logits.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tailfuse.cli import main
from tailfuse.config import load_recipe
from tailfuse.engine.export import export_checkpoint
from tailfuse.engine.predict import Predictor, expand_image_paths, predictions_text
from tailfuse.errors import DataError
from tailfuse.methods import build_method
from tailfuse.models import build_model

from ..eval.test_atomic_reports import disk_full_past
from ..fakes import save_stand_in_checkpoint
from ..own_data import FREQUENCY_ORDER, TRAIN_COUNTS, make_new_images

COUNTS = [TRAIN_COUNTS[name] for name in FREQUENCY_ORDER]


def make_checkpoint(path, recipe, overrides=(), edit=None):
    """A checkpoint of ``recipe`` with random weights (seeded), after ``edit(model, method)``."""
    config = load_recipe(recipe, list(overrides))
    torch.manual_seed(7)
    model = build_model(config.model, len(COUNTS))
    method = build_method(config, model, COUNTS)
    calibrate_batchnorm([model.backbone, *method.modules_to_save().values()])
    if edit:
        edit(model, method)
    save_stand_in_checkpoint(path, config, model, method, FREQUENCY_ORDER, COUNTS)
    return model.eval(), method


def calibrate_batchnorm(modules):
    """Running BatchNorm statistics from one random batch, so logits have a
    trained model's scale."""
    for module in modules:
        if isinstance(module, torch.nn.Module) and any(
            isinstance(m, torch.nn.BatchNorm2d) for m in module.modules()
        ):
            for layer in module.modules():
                if isinstance(layer, torch.nn.BatchNorm2d):
                    layer.momentum = None  # a cumulative average: one batch sets the statistics
            module.train()
            with torch.no_grad():
                module(torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
            module.eval()


def pooled(backbone, images):
    return backbone(images).mean(dim=(2, 3))


def _tau_norm(model, method, images):  # w_j / ||w_j||^tau, no bias (tau = 0.5 here)
    weight = model.head.fc.weight
    return pooled(model.backbone, images) @ (weight / weight.norm(dim=1, keepdim=True) ** 0.5).t()


def _lws(model, method, images):  # per-class scales 1, 2, ..., 6 on the logits
    return model(images) * torch.arange(1.0, 7.0)


def _posthoc(model, method, images):  # z - 1 * log(n_c / N)
    total = sum(COUNTS)
    return model(images) - torch.tensor([math.log(count / total) for count in COUNTS])


def _cosine(model, method, images):  # 16 * cos(f, w_j)
    return (
        16.0
        * F.normalize(pooled(model.backbone, images), dim=1)
        @ F.normalize(model.head.weight, dim=0)
    )


def _ffn(model, method, images):  # 0.3 cos(f_kps, W) + 0.7 cos(f_ce, W), raw cosines
    weight = F.normalize(model.head.weight, dim=0)
    kps = F.normalize(pooled(model.backbone, images), dim=1) @ weight
    ce = F.normalize(pooled(method.second_backbone.eval(), images), dim=1) @ weight
    return 0.3 * kps + 0.7 * ce


def _set_bias(model, method):
    model.head.fc.bias.data = torch.linspace(-3, 3, len(COUNTS))  # τ-norm must drop it


def _set_scales(model, method):
    method.scales.scales.data = torch.arange(1.0, 7.0)


def _set_head(model, method):  # cRT re-initialises the head when built: these must survive
    weight = model.head.fc.weight
    weight.data = torch.linspace(-2, 2, weight.numel()).view_as(weight)
    model.head.fc.bias.data = torch.linspace(1, -1, len(COUNTS))


def _plain(model, method, images):
    return model(images)


def _raw_cosine(model, method, images):  # LDAM's cosine head of scale 1: cos(f, w_j)
    return F.normalize(pooled(model.backbone, images), dim=1) @ F.normalize(
        model.head.weight, dim=0
    )


CASES = {
    "crt": ("cifar10_lt_quick_crt", [], _set_head, _plain),
    "ldam": ("cifar10_lt_quick_ldam_drw", [], None, _raw_cosine),
    "tau_norm": ("cifar10_lt_quick_tau_norm", ["method.tau=0.5"], _set_bias, _tau_norm),
    "lws": ("cifar10_lt_quick_lws", [], _set_scales, _lws),
    "posthoc": ("image_folder", ["method.posthoc_tau=1"], None, _posthoc),
    "cosine": ("image_folder", ["model.head=cosine", "model.cosine_scale=16"], None, _cosine),
    "ffn": ("cifar10_lt_quick_ffn", ["method.fusion_weight=0.3"], None, _ffn),
}


@pytest.fixture(scope="module")
def new_images(cifar10_jpeg_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("new_images")
    make_new_images(cifar10_jpeg_root, folder, per_class=1)
    return folder


@pytest.mark.parametrize("case", list(CASES))
def test_predict_follows_the_method_formula(case, new_images, tmp_path):
    recipe, overrides, edit, formula = CASES[case]
    model, method = make_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.pt", recipe, overrides, edit
    )
    predictor = Predictor.from_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", "cpu")
    images = predictor.load_images(expand_image_paths([str(new_images)]))
    with torch.no_grad():
        expected = formula(model, method, images)
    assert torch.allclose(predictor.logits(images), expected, atol=1e-5)
    # probabilities: softmax of the loss's scale times the logits
    scale = 30.0 if case in ("ldam", "ffn") else 1.0  # FFN: LDAM with s = 30 too
    assert predictor.probability_scale == scale
    rows = predictor.predict_files(expand_image_paths([str(new_images)]), top_k=1)
    top = torch.softmax(scale * expected.double(), dim=1).max(dim=1).values
    assert [row["predictions"][0]["probability"] for row in rows] == pytest.approx(
        top.tolist(), abs=1e-5
    )
    if case == "tau_norm":  # the bare model.forward is not what tau-norm predicts
        with torch.no_grad():
            assert (model(images) - expected).abs().max() > 0.5


def test_a_checkpoint_predicts_without_the_pretrained_file_it_started_from(new_images, tmp_path):
    """model.weights (the ImageNet file training started from) is neither read nor needed where
    the trained checkpoint is deployed: the checkpoint holds every weight."""
    import torchvision

    weights = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    overrides = ["model.backbone=resnet50", f"model.weights={weights}"]
    model, _ = make_checkpoint(path, "image_folder", overrides)
    weights.unlink()
    predictor = Predictor.from_checkpoint(path, "cpu")
    images = predictor.load_images(expand_image_paths([str(new_images)]))
    with torch.no_grad():
        assert torch.allclose(predictor.logits(images), model(images), atol=1e-5)


def check_onnx_export(case, new_images, tmp_path):
    recipe, overrides, edit, formula = CASES[case]
    model, method = make_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.pt", recipe, overrides, edit
    )
    metadata = export_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.pt", tmp_path / "m.onnx", "onnx", [str(new_images)]
    )
    assert (
        metadata["parity"]["max_abs_logit_difference"] <= 1e-4 and metadata["parity"]["images"] == 6
    )
    import onnxruntime

    images = Predictor.from_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.pt", "cpu"
    ).load_images(expand_image_paths([str(new_images)]))
    session = onnxruntime.InferenceSession(
        str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]
    )
    exported = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    with torch.no_grad():
        assert torch.allclose(exported, formula(model, method, images), atol=1e-4)
    assert json.loads((tmp_path / "m.onnx.json").read_text())["method"] == method.name


def test_onnx_export_is_the_tau_norm_prediction(new_images, tmp_path):
    check_onnx_export("tau_norm", new_images, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["lws", "posthoc", "cosine", "ffn"])
def test_onnx_export_of_every_prediction_path(case, new_images, tmp_path):
    check_onnx_export(case, new_images, tmp_path)


# torch.jit.load itself warns that TorchScript is deprecated; export hides that, the test does not
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_export_of_lws_and_the_predict_table(new_images, tmp_path):
    recipe, overrides, edit, formula = CASES["lws"]
    model, method = make_checkpoint(tmp_path / "last.pt", recipe, overrides, edit)
    metadata = export_checkpoint(
        tmp_path / "last.pt", tmp_path / "lws.pt", "torchscript", [str(new_images / "*.jpg")]
    )
    assert metadata["parity"]["max_abs_logit_difference"] <= 1e-4
    predictor = Predictor.from_checkpoint(tmp_path / "last.pt", "cpu")
    images = predictor.load_images(expand_image_paths([str(new_images)]))
    with torch.no_grad():
        assert torch.allclose(
            torch.jit.load(str(tmp_path / "lws.pt"))(images),
            formula(model, method, images),
            atol=1e-4,
        )
    rows = predictor.predict_files(expand_image_paths([str(new_images)]), top_k=2, batch_size=4)
    probabilities = torch.softmax(formula(model, method, images).double(), dim=1)
    top = probabilities.topk(2, dim=1)
    for row, values, indices in zip(rows, top.values.tolist(), top.indices.tolist(), strict=True):
        assert [p["index"] for p in row["predictions"]] == indices
        assert [p["class"] for p in row["predictions"]] == [FREQUENCY_ORDER[i] for i in indices]
        assert [p["probability"] for p in row["predictions"]] == pytest.approx(
            values, abs=1e-6
        )  # batches of 4 vs 6: float32 rounding
    text = predictions_text(rows, "csv").splitlines()
    assert text[0] == "path,class_1,probability_1,class_2,probability_2" and len(text) == 7
    assert (
        json.loads(predictions_text(rows, "json"))[0]["predictions"][0]["class"]
        == rows[0]["predictions"][0]["class"]
    )


def test_image_paths_from_files_folders_and_globs(new_images):
    files = sorted(str(p) for p in new_images.iterdir())
    assert expand_image_paths([str(new_images)]) == files
    assert expand_image_paths([str(new_images / "s*.jpg"), files[0]]) == [
        files[4],
        files[0],
    ]  # ship_0, then automobile_0
    with pytest.raises(DataError, match="no image matches"):
        expand_image_paths([str(new_images / "zebra*.jpg")])
    with pytest.raises(DataError, match="not an image file, a folder or a glob"):
        expand_image_paths([str(new_images / "missing.jpg")])


def test_predict_out_replaces_an_earlier_file_whole_or_not_at_all(new_images, tmp_path, capsys):
    recipe, overrides, edit, _ = CASES["lws"]
    make_checkpoint(tmp_path / "last.pt", recipe, overrides, edit)
    out = tmp_path / "predictions.csv"
    arguments = ["predict", str(tmp_path / "last.pt"), str(new_images), "--out", str(out)]
    assert main([*arguments, "--top-k", "1"]) == 0
    earlier = out.read_bytes()
    assert earlier.decode().splitlines()[0] == "path,class_1,probability_1"
    capsys.readouterr()
    # top-3 rows are longer than the top-1 file: the disk fills half-way through the new one
    with disk_full_past(len(earlier) + 10):
        assert main([*arguments, "--top-k", "3"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: cannot write {out}: File too large") and "\n" not in error
    assert out.read_bytes() == earlier
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.pt", "predictions.csv"]


def test_predict_warns_when_a_prediction_depends_on_its_batch(tmp_path, capsys):
    """FFN with the authors' train-mode BatchNorm (ce_batchnorm: train) normalises the CE
    branch by each batch's statistics: said once, on loading; eval-mode BN says nothing."""
    recipe, overrides, edit, _ = CASES["ffn"]
    for setting, warned in [("eval", False), ("train", True)]:
        path = tmp_path / setting / "last.pt"
        make_checkpoint(path, recipe, [*overrides, f"method.ce_batchnorm={setting}"], edit)
        capsys.readouterr()
        Predictor.from_checkpoint(path, "cpu")
        error = capsys.readouterr().err
        assert ("a prediction depends on the other images of its batch" in error) is warned
