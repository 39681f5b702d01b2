"""Every registered method predicts from a saved checkpoint exactly what it predicted before
saving: ``tailfuse predict`` and ``export`` build the method as training did and load every
trained weight after it (a method that re-initialises what it is given, as cRT's head, must
not overwrite the checkpoint's weights)."""

from __future__ import annotations

import pytest
import torch

from tailfuse.config import METHOD_OPTIONS, load_recipe
from tailfuse.engine.predict import Predictor
from tailfuse.methods import build_method
from tailfuse.models import build_model

from ..fakes import save_stand_in_checkpoint

COUNTS = [60, 30, 14, 7, 3, 1]
CLASS_NAMES = [f"class{index}" for index in range(len(COUNTS))]
SMALL_RIDE = ["model.backbone=ride_resnet32", "model.backbone_options={num_experts: 3}"]

#: one shipped CIFAR recipe per registered method (ride_stage2's only recipes are ImageNet-
#: and MSCOCO-GLT ones: the same method on the CIFAR RIDE backbone)
RECIPES = {
    "bbn": ("cifar10_lt_quick_bbn", []),
    "cmo": ("cifar10_lt_quick_cmo", []),
    "crt": ("cifar10_lt_quick_crt", []),
    "dr": ("cifar10_lt_quick_dr_h2t", []),
    "erm": ("cifar10_lt_quick_ldam_drw", []),
    "ffn": ("cifar10_lt_quick_ffn", []),
    "gcl": ("cifar10_lt_quick_gcl_h2t", []),
    "ifl": ("cifar10_glt_quick_ifl", []),
    "lws": ("cifar10_lt_quick_lws", []),
    "mislas": ("cifar10_lt_quick_mislas_h2t", []),
    "mislas_lws": ("cifar100_lt_if100_mislas_lws", []),
    "reslt": ("cifar10_lt_quick_reslt", []),
    "reslt_stage2": ("cifar10_lt_quick_reslt_h2t", []),
    "ride": ("cifar10_lt_quick_ride", []),
    "ride_stage2": ("imagenet_glt_ride_stage2", SMALL_RIDE),
    "tade": ("cifar10_lt_quick_tade", []),
    "tau_norm": ("cifar10_lt_quick_tau_norm", []),
}


def test_every_registered_method_has_a_case():
    assert sorted(RECIPES) == sorted(METHOD_OPTIONS)


def _trained_state(model, method):
    """Move every weight and BatchNorm statistic away from its initial value (a trained model)."""
    generator = torch.Generator().manual_seed(3)
    modules = [model, *method.modules_to_save().values()]
    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.is_floating_point():
                    noise = torch.rand(tensor.shape, generator=generator)
                    tensor.add_(0.1 * noise * (tensor.abs().mean() + 0.1))


@pytest.mark.parametrize("method_name", sorted(RECIPES))
def test_a_saved_method_predicts_what_it_predicted(method_name, tmp_path):
    recipe, overrides = RECIPES[method_name]
    config = load_recipe(recipe, overrides)
    assert config.method.name == method_name
    torch.manual_seed(0)
    model = build_model(config.model, len(COUNTS))
    method = build_method(config, model, COUNTS)
    _trained_state(model, method)
    model.eval()
    for module in method.modules_to_save().values():
        module.eval()
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = method.predict(images).float()
    path = tmp_path / "last.pt"
    save_stand_in_checkpoint(path, config, model, method, CLASS_NAMES, COUNTS)
    torch.manual_seed(123)  # another initialisation than the saved model's
    predicted = Predictor.from_checkpoint(path, "cpu").logits(images)
    assert torch.allclose(predicted, expected, rtol=1e-5, atol=1e-5)
