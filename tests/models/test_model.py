import pytest
import torch
import torchvision

from selfpose3d.geometry.camera import project_points
from selfpose3d.models.config import ModelConfig
from selfpose3d.models.model import apply_affine, build_model
from selfpose3d.skeleton import NUM_JOINTS

# Original 320 x 240 images -> 16 x 16 heatmaps: scale 1/20, centred vertically (2 px bands).
S = 1 / 20
TO_HEATMAP = torch.tensor([[S, 0.0, 0.5 * S - 0.5], [0.0, S, 0.5 * S - 0.5 + 2.0]])


def tiny_config(**overrides) -> ModelConfig:
    values = dict(
        image_size=[64, 64],
        heatmap_size=[16, 16],
        backbone_depth=18,
        attention_depth=18,
        space_size=[2000.0, 2000.0, 1000.0],
        space_center=[0.0, 0.0, 1000.0],
        root_bins=[8, 8, 4],
        pose_bins=[8, 8, 8],
        pose_cube_size=[1600.0] * 3,
        v2v_width=4,
        max_people=2,
        heatmap_sigma=1.0,
    )
    values.update(overrides)
    return ModelConfig(**values)


def setup(rig, batch: int = 2, views: int = 3):
    cams, _ = rig(views, seed=0, batch=batch)
    affines = TO_HEATMAP.expand(batch, views, 2, 3).contiguous()
    return cams, affines


def pseudo_poses(cams, people: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Projections of random people near the space centre: (B, V, P, J, 2) px, (B, V, P, J)."""
    b = cams.batch_size
    joints = torch.tensor([0.0, 0.0, 1000.0]) + 250 * torch.randn(b, people * NUM_JOINTS, 3)
    uv = project_points(joints[:, None], cams.K, cams.dist, cams.R, cams.t)
    uv = uv.reshape(b, cams.num_views, people, NUM_JOINTS, 2)
    return uv, torch.ones(uv.shape[:-1])


def force_people(model) -> None:
    """Make every proposal a person: the untrained root net's scores are ~0."""
    torch.nn.init.constant_(model.root_net.v2v.output_layer.bias, 1.0)


def test_images_mode_end_to_end_gradients_reach_the_2d_net(rig):
    torch.manual_seed(0)
    cams, affines = setup(rig)
    model = build_model(tiny_config())
    force_people(model)
    out = model(cams, affines, images=torch.randn(2, 3, 3, 64, 64))
    assert out.heatmaps.shape == (2, 3, NUM_JOINTS, 16, 16)
    assert out.root_cubes.shape == (2, 8, 8, 4)
    assert out.proposals.shape == (2, 2, 5) and out.is_person.all()
    assert out.poses.shape == (2, 2, NUM_JOINTS, 3)
    assert out.scores.shape == (2, 2)
    out.poses.sum().backward()
    grad = model.heatmap_net_2d.backbone.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.pose_net.v2v.output_layer.weight.grad.abs().sum() > 0


def test_attention_maps_lie_in_zero_one(rig):
    model = build_model(tiny_config())
    attn = model.attention(torch.randn(1, 2, 3, 64, 64))
    assert attn.shape == (1, 2, NUM_JOINTS, 16, 16)
    assert ((attn > 0) & (attn < 1)).all()


def test_pseudo_heatmaps_mode_has_no_2d_net_and_runs_end_to_end(rig):
    torch.manual_seed(1)
    cams, affines = setup(rig)
    model = build_model(tiny_config(input_mode="pseudo_heatmaps", use_attention=False))
    assert model.heatmap_net_2d is None and model.attn_net_2d is None
    force_people(model)
    joints, weights = pseudo_poses(cams)
    out = model(cams, affines, pseudo_joints=joints, pseudo_weights=weights)
    assert out.heatmaps.shape == (2, 3, NUM_JOINTS, 16, 16)
    assert out.poses.shape == (2, 2, NUM_JOINTS, 3) and out.is_person.all()
    out.poses.sum().backward()
    assert model.pose_net.v2v.output_layer.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs pseudo_joints"):
        model(cams, affines)


def test_pseudo_heatmaps_peak_at_the_mapped_joint(rig):
    cams, affines = setup(rig, batch=1, views=2)
    model = build_model(tiny_config(input_mode="pseudo_heatmaps", use_attention=False))
    joints = torch.zeros(1, 2, 1, NUM_JOINTS, 2)
    joints[..., 0], joints[..., 1] = 170.0, 95.0  # original px
    heatmaps = model.pseudo_heatmaps(joints, torch.ones(1, 2, 1, NUM_JOINTS), affines)
    mapped = apply_affine(joints, affines)[0, 0, 0, 0]  # (8.525, 6.725) heatmap px
    peak = int(heatmaps[0, 0, 0].argmax())
    assert (peak % 16, peak // 16) == (round(mapped[0].item()), round(mapped[1].item()))


def test_view_order_does_not_change_the_result(rig):
    torch.manual_seed(2)
    cams, affines = setup(rig, batch=1, views=4)
    model = build_model(
        tiny_config(input_mode="pseudo_heatmaps", use_attention=False, proposal_threshold=0.1)
    ).eval()
    model.root_net.v2v = torch.nn.Identity()  # clear root peaks, no near-ties in the NMS
    joints, weights = pseudo_poses(cams)
    out = model.predict(cams, affines, pseudo_joints=joints, pseudo_weights=weights)
    perm = torch.tensor([3, 1, 0, 2])
    permuted = model.predict(
        cams[:, perm],
        affines[:, perm],
        pseudo_joints=joints[:, perm],
        pseudo_weights=weights[:, perm],
    )
    assert out.is_person.all()
    torch.testing.assert_close(permuted.root_cubes, out.root_cubes, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(permuted.proposals, out.proposals, rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(permuted.poses, out.poses, rtol=1e-4, atol=1e-2)


def test_predict_is_gradient_free_and_restores_the_mode(rig):
    cams, affines = setup(rig, batch=1)
    model = build_model(tiny_config(use_attention=False))
    model.train()
    cam_dict = {"K": cams.K, "dist": cams.dist, "R": cams.R, "t": cams.t, "size": cams.size}
    out = model.predict(cam_dict, affines, images=torch.randn(1, 3, 3, 64, 64))
    assert model.training
    assert not out.poses.requires_grad and not out.heatmaps.requires_grad
    # The projection cached during inference serves a training step too.
    hits = model.root_net.projector.cache_hits
    out = model(cam_dict, affines, images=torch.randn(1, 3, 3, 64, 64))
    out.root_cubes.square().sum().backward()
    assert model.root_net.projector.cache_hits == hits + 1
    assert model.heatmap_net_2d.final_layer.weight.grad.abs().sum() > 0


def test_input_errors_are_clear(rig):
    cams, affines = setup(rig, batch=1)
    model = build_model(tiny_config(use_attention=False))
    with pytest.raises(ValueError, match=r"images: expected \(B, V, 3, 64, 64\)"):
        model(cams, affines, images=torch.randn(1, 3, 3, 48, 64))
    with pytest.raises(ValueError, match="needs images"):
        model(cams, affines)
    with pytest.raises(ValueError, match="no attn_net_2d"):
        model.attention(torch.randn(1, 3, 3, 64, 64))


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"image_size": [64, 48], "heatmap_size": [16, 12]}, "multiples of 32"),
        ({"heatmap_size": [32, 32]}, r"must be image_size / 4 = \[16, 16\]"),
        ({"pose_bins": [8, 1, 8]}, ">= 2 bins"),
        ({"v2v_width": 5}, "even"),
        ({"proposal_threshold": 1.5}, r"\[0, 1\]"),
    ],
)
def test_config_validation(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        tiny_config(**overrides)


def test_each_2d_net_loads_its_own_trunk_weights(tmp_path):
    r18, r34 = torchvision.models.resnet18(weights=None), torchvision.models.resnet34(weights=None)
    torch.save(r18.state_dict(), tmp_path / "r18.pth")
    torch.save(r34.state_dict(), tmp_path / "r34.pth")
    cfg = tiny_config(
        backbone_depth=34,
        pretrained_path=str(tmp_path / "r34.pth"),
        attention_depth=18,
        attention_pretrained_path=str(tmp_path / "r18.pth"),
    )
    model = build_model(cfg)
    torch.testing.assert_close(model.heatmap_net_2d.backbone.conv1.weight, r34.conv1.weight)
    torch.testing.assert_close(model.attn_net_2d.backbone.conv1.weight, r18.conv1.weight)
