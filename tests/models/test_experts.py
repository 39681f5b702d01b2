"""Multi-expert backbones and heads: one map per expert, shapes, what each head computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tailfuse.config import ModelConfig
from tailfuse.errors import ConfigError
from tailfuse.models import build_model
from tailfuse.models.expert_heads import BBNHead, ResLTChannelSplitHead, ResLTHead
from tailfuse.models.ride import ResltExpertBlock


@pytest.mark.parametrize(
    ("backbone", "head", "options", "maps", "channels"),
    [
        ("ride_resnet32", "expert_cosine", {}, 3, 64),
        ("ride_resnet32", "expert_linear", {"num_experts": 4, "reduce_dimension": True}, 4, 48),
        ("ride_resnet32", "reslt", {}, 3, 64),
        ("bbn_resnet32", "bbn", {}, 2, 64),
    ],
)
def test_cifar_multi_expert_forward_shapes(backbone, head, options, maps, channels):
    model = build_model(ModelConfig(backbone=backbone, head=head, backbone_options=options), 10)
    features = model.features(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape) for f in features] == [(2, channels, 8, 8)] * maps
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_ride_experts_share_the_stem_and_layer1_only():
    model = build_model(ModelConfig(backbone="ride_resnet32", head="expert_cosine"), 10)
    backbone = model.backbone
    assert backbone.experts[0][0][0].conv1.weight.shape == (32, 16, 3, 3)  # layer2 of expert 0
    assert (
        backbone.experts[0][0][0].conv1.weight.data_ptr()
        != backbone.experts[1][0][0].conv1.weight.data_ptr()
    )
    # a change of expert 1's weights changes only expert 1's map
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    before = model.features(images)
    with torch.no_grad():
        backbone.experts[1][1][-1].conv2.weight.add_(1.0)
    after = model.features(images)
    assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])
    assert not torch.equal(before[1], after[1])


def test_ride_resnext50_experts_reduce_to_1536_channels():
    model = build_model(
        ModelConfig(
            backbone="ride_resnext50_32x4d",
            head="expert_cosine",
            backbone_options={"reduce_dimension": True},
        ),
        5,
    )
    features = model.features(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [(1, 1536, 2, 2)] * 3
    assert model.backbone.experts[0][0][0].conv2.groups == 32  # ResNeXt grouped convolutions kept


def test_ride_resnet50_experts_and_the_reslt_imagenet_model():
    plain = build_model(ModelConfig(backbone="ride_resnet50", head="expert_linear"), 5)
    images = torch.randn(2, 3, 64, 64)
    assert [tuple(f.shape) for f in plain.features(images)] == [(2, 2048, 2, 2)] * 3
    reslt = build_model(
        ModelConfig(
            backbone="ride_resnet50",
            head="reslt_channel_split",
            backbone_options={"reslt_block": True},
        ),
        5,
    )
    assert reslt.backbone.out_channels == 3 * 2048
    # each expert: layer3, layer4, then ResLT's 1x1 block (2048 -> 6144) and the pool
    assert [type(stage).__name__ for stage in reslt.backbone.experts[0]][-1] == "ResltExpertBlock"
    assert reslt.backbone.experts[0][2].conv.weight.shape == (6144, 2048, 1, 1)
    assert [tuple(f.shape) for f in reslt.features(images)] == [(2, 6144, 1, 1)] * 3
    assert [tuple(z.shape) for z in reslt.head.branch_logits(reslt.features(images))] == [
        (2, 5)
    ] * 3
    assert reslt.head.eval_weight_power == 0.7  # the authors' ResLT.gamma


def test_reslt_block_pools_after_itself_in_training_and_before_in_evaluation():
    torch.manual_seed(0)
    block = ResltExpertBlock(2)
    maps = torch.randn(4, 2, 3, 3)

    def block_then_pool(x):
        return torch.relu(block.norm(block.conv(x))).mean(dim=(2, 3), keepdim=True)

    block.train()
    trained = block(maps)
    block.eval()  # the statistics of the training call above
    assert trained.shape == (4, 6, 1, 1)
    expected_eval = torch.relu(block.norm(block.conv(maps.mean(dim=(2, 3), keepdim=True))))
    assert torch.allclose(block(maps), expected_eval)
    # the authors' train/test mismatch: pooling before the ReLU is not pooling after it
    assert not torch.allclose(block(maps), block_then_pool(maps), atol=1e-3)
    consistent = ResltExpertBlock(2, pool_first_in_eval=False)
    consistent.load_state_dict(block.state_dict())
    consistent.eval()
    assert torch.allclose(consistent(maps), block_then_pool(maps))


def test_reslt_channel_split_head_by_hand():
    head = ResLTChannelSplitHead(6, 2, num_experts=2, eval_weight_power=1.0)
    with torch.no_grad():
        head.experts[0].weight.copy_(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))  # norms 5, 1
        head.experts[0].bias.copy_(torch.tensor([1.0, -1.0]))
        head.experts[1].weight.copy_(torch.tensor([[0.0, 2.0], [2.0, 0.0]]))  # norms 2, 2
        head.experts[1].bias.zero_()
    # expert 0's chunks: head [1, 2], medium [0, 1], tail [1, 0]; expert 1's: [1, 1], [2, 0], [0, 0]
    maps = [
        torch.tensor([1.0, 2.0, 0.0, 1.0, 1.0, 0.0]).view(1, 6, 1, 1),
        torch.tensor([1.0, 1.0, 2.0, 0.0, 0.0, 0.0]).view(1, 6, 1, 1),
    ]
    head.train()  # W x + b; expert 0: [12, 0] [5, -1] [4, 0]; expert 1: [2, 2] [0, 4] [0, 0]
    branches = [z.squeeze(0).tolist() for z in head.branch_logits(maps)]
    assert branches == [pytest.approx([7.0, 1.0]), pytest.approx([2.5, 1.5]), [2.0, 0.0]]
    assert head(maps).squeeze(0).tolist() == pytest.approx([11.5, 2.5])
    # evaluation: (W / |W|^1) x, no bias;
    # expert 0: [2.2, 1] [0.8, 0] [0.6, 1]; expert 1: [1, 1] [0, 2] [0, 0]
    head.eval()
    branches = [z.squeeze(0).tolist() for z in head.branch_logits(maps)]
    assert branches == [
        pytest.approx([1.6, 1.0]),
        pytest.approx([0.4, 1.0]),
        pytest.approx([0.3, 0.5]),
    ]
    head.eval_weight_power = 2.0  # rows / |w|^2: expert 0 [3, 4] / 25, [1, 0]; expert 1 w / 4
    z_head = head.branch_logits(maps)[0].squeeze(0).tolist()
    assert z_head == pytest.approx([(11 / 25 + 0.5) / 2, (1 + 0.5) / 2])


def test_bbn_resnet50_branches_and_single_branch_forward():
    backbone = build_model(ModelConfig(backbone="bbn_resnet50", head="bbn"), 5).backbone
    assert len(backbone.trunk[-1]) == 2  # layer4 keeps two shared blocks
    backbone.eval()
    images = torch.randn(1, 3, 64, 64)
    both = backbone(images)
    assert [tuple(f.shape) for f in both] == [(1, 2048, 2, 2)] * 2
    assert torch.equal(backbone(images, branch="rebalancing"), both[1])


def test_places_expert_backbone_freezes_its_trunk():
    backbone = build_model(  # the architecture only: no ImageNet file here
        ModelConfig(backbone="ride_places_resnet152", head="expert_linear"), 5, pretrained=False
    ).backbone
    assert len(backbone.trunk[-1]) == 2  # layer4 cut to 2 blocks, as the authors' resnet152_fe
    assert not any(p.requires_grad for p in backbone.trunk.parameters())
    assert all(p.requires_grad for p in backbone.experts.parameters())
    backbone.train()
    assert not backbone.trunk.training and backbone.experts.training


@pytest.mark.parametrize(
    ("backbone", "head"),
    [("ride_places_resnet152", "expert_linear"), ("resnet152_places", "linear")],
)
def test_a_frozen_trunk_backbone_refuses_to_train_without_its_imagenet_weights(backbone, head):
    """Without model.weights the frozen trunk would stay random and only the last blocks train:
    a training run is refused; a checkpoint's model (weights from the checkpoint) builds."""
    with pytest.raises(
        ConfigError,
        match=rf"^model.backbone={backbone} trains only its last block\(s\) on a frozen "
        "ImageNet ResNet-152 and needs model.weights",
    ):
        build_model(ModelConfig(backbone=backbone, head=head), 5)
    build_model(ModelConfig(backbone=backbone, head=head), 5, pretrained=False)


def test_bbn_head_mixes_branches_with_alpha():
    head = BBNHead(1, 1)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 1.0]]))
        head.fc.bias.zero_()
    conventional, rebalancing = torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), 4.0)
    assert head.mixed_logits(conventional, rebalancing, 0.25).item() == pytest.approx(
        2 * (0.25 * 2 + 0.75 * 4)
    )
    assert head([conventional, rebalancing]).item() == pytest.approx(6.0)


def test_reslt_head_branches_and_their_sum():
    head = ResLTHead(2, 3, num_experts=2)
    head.eval()  # running statistics 0 / 1: each BN is the identity (up to eps)
    with torch.no_grad():
        for k, linear in enumerate(head.experts):
            linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]) * (k + 1))
            linear.bias.zero_()
        head.branch_norms[1].weight.fill_(2.0)  # the medium branch doubles the features
    maps = [torch.tensor([[1.0, 2.0]]).view(1, 2, 1, 1)] * 2
    z_head, z_medium, z_tail = head.branch_logits(maps)
    # expert k gives (k + 1) * [1, 2, 3]; mean over experts: 1.5 * [1, 2, 3]
    assert z_head.squeeze().tolist() == pytest.approx([1.5, 3.0, 4.5], rel=1e-4)
    assert z_medium.squeeze().tolist() == pytest.approx([3.0, 6.0, 9.0], rel=1e-4)
    assert head(maps).squeeze().tolist() == pytest.approx([6.0, 12.0, 18.0], rel=1e-4)


def test_heads_must_fit_the_backbone():
    with pytest.raises(ConfigError, match="does not fit"):
        build_model(ModelConfig(backbone="resnet32", head="expert_cosine"), 10)
    with pytest.raises(ConfigError, match="does not fit"):
        build_model(ModelConfig(backbone="ride_resnet32", head="linear"), 10)
    with pytest.raises(ConfigError, match="BBN backbone"):
        build_model(ModelConfig(backbone="ride_resnet32", head="bbn"), 10)
    with pytest.raises(ConfigError, match="backbone_options"):
        build_model(
            ModelConfig(
                backbone="ride_resnet32", head="expert_cosine", backbone_options={"experts": 2}
            ),
            10,
        )
    assert isinstance(
        build_model(ModelConfig(backbone="ride_resnet32", head="reslt"), 10).head, nn.Module
    )
    with pytest.raises(ConfigError, match="reslt_block: true"):  # the ImageNet head needs the block
        build_model(ModelConfig(backbone="ride_resnet32", head="reslt_channel_split"), 10)
    with pytest.raises(ConfigError, match="got head 'reslt' with reslt_block true"):
        build_model(
            ModelConfig(
                backbone="ride_resnet50", head="reslt", backbone_options={"reslt_block": True}
            ),
            10,
        )
