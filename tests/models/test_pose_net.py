import pytest
import torch

from selfpose3d.geometry.camera import project_points
from selfpose3d.models.config import ModelConfig
from selfpose3d.models.heatmaps import render_heatmaps
from selfpose3d.models.pose_net import build_pose_net, soft_argmax
from selfpose3d.models.voxel import voxel_axes, voxel_grid
from selfpose3d.skeleton import NUM_JOINTS


def tiny_config(**overrides) -> ModelConfig:
    values = dict(
        image_size=[320, 256],
        heatmap_size=[80, 64],
        pose_cube_size=[1600.0] * 3,
        pose_bins=[8, 8, 8],
        v2v_width=4,
        max_people=3,
    )
    values.update(overrides)
    return ModelConfig(**values)


def test_soft_argmax_of_a_delta_cube_is_the_voxel_exactly():
    cube = ([100.0, -200.0, 900.0], [1600.0] * 3, [8, 8, 8])
    coords = voxel_grid(*cube)
    cubes = torch.zeros(2, 3, coords.shape[0])
    picks = torch.tensor([[0, 77, 511], [300, 5, 128]])
    cubes.scatter_(2, picks[..., None], 1.0)
    out = soft_argmax(cubes.reshape(2, 3, 8, 8, 8), voxel_axes(*cube), beta=100.0)
    assert out.shape == (2, 3, 3)
    torch.testing.assert_close(out, coords[picks], rtol=0, atol=1e-3)


def test_soft_argmax_between_two_equal_voxels_is_their_midpoint():
    cube = ([0.0] * 3, [700.0] * 3, [8, 8, 8])
    coords = voxel_grid(*cube)
    values = torch.zeros(coords.shape[0])
    values[[10, 11]] = 1.0  # neighbours along z
    out = soft_argmax(values.reshape(8, 8, 8), voxel_axes(*cube), 100.0)
    torch.testing.assert_close(out, coords[[10, 11]].mean(0))


def test_soft_argmax_gradient_is_that_of_the_flat_softmax_expectation():
    # An uneven grid (3 x 4 x 5, unequal spacings) so that a mixed-up axis would show.
    cube = ([50.0, -20.0, 900.0], [400.0, 900.0, 300.0], [3, 4, 5])
    axes = voxel_axes(*cube, dtype=torch.float64)
    coords = voxel_grid(*cube, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    cubes = torch.randn(2, 3, 3, 4, 5, dtype=torch.float64, generator=generator)
    torch.autograd.gradcheck(lambda c: soft_argmax(c, axes, 0.5), (cubes.requires_grad_(),))
    reference = torch.softmax(0.5 * cubes.flatten(-3), -1) @ coords
    torch.testing.assert_close(soft_argmax(cubes, axes, 0.5), reference)
    weights = torch.randn(2, 3, 3, dtype=torch.float64)
    (got,) = torch.autograd.grad((soft_argmax(cubes, axes, 0.5) * weights).sum(), cubes)
    (want,) = torch.autograd.grad((reference * weights).sum(), cubes)
    torch.testing.assert_close(got, want)


def _joint_heatmaps(cams, affines, joints: torch.Tensor) -> torch.Tensor:
    """joints (B, P, J, 3) mm -> heatmaps (B, V, J, 60, 80) of those people."""
    b, p, j, _ = joints.shape
    uv = project_points(joints.reshape(b, 1, p * j, 3), cams.K, cams.dist, cams.R, cams.t)
    hm = uv @ affines[..., :2].transpose(-1, -2) + affines[..., None, :, 2]
    hm = hm.reshape(b, -1, p, j, 2)
    return render_heatmaps(hm, torch.ones(hm.shape[:-1]), (80, 60), sigma=2.0)


def test_only_flagged_proposals_are_regressed_in_one_batch(rig):
    cams, affines = rig(3, seed=0, batch=2)
    net = build_pose_net(tiny_config())
    joints = torch.tensor([0.0, 0.0, 900.0]) + 300 * torch.randn(2, 1, NUM_JOINTS, 3)
    heatmaps = _joint_heatmaps(cams, affines, joints).requires_grad_(True)
    proposals = torch.zeros(2, 3, 5)
    proposals[:, :, :3] = torch.tensor([0.0, 0.0, 900.0])
    proposals[0, 0, 4] = proposals[1, 0, 4] = proposals[1, 1, 4] = 1.0  # 3 people in all
    calls = []
    net.v2v.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    poses = net(heatmaps, proposals, cams, affines)
    assert poses.shape == (2, 3, NUM_JOINTS, 3)
    assert calls == [(3, NUM_JOINTS, 8, 8, 8)]  # one V2V call for the 3 flagged proposals
    assert (poses[0, 1:] == 0).all() and (poses[1, 2] == 0).all()
    assert (poses[1, :2] != 0).any(dim=-1).all()
    # Joints stay inside the cube around their root.
    assert ((poses[1, :2] - proposals[1, :2, None, :3]).abs() <= 800.0 + 1e-3).all()
    poses.sum().backward()
    assert heatmaps.grad.abs().sum() > 0
    assert net.v2v.output_layer.weight.grad.abs().sum() > 0


def test_no_flagged_proposal_gives_zeros(rig):
    cams, affines = rig(2, seed=1)
    net = build_pose_net(tiny_config())
    poses = net(torch.rand(1, 2, NUM_JOINTS, 60, 80), torch.zeros(1, 3, 5), cams, affines)
    assert poses.shape == (1, 3, NUM_JOINTS, 3) and (poses == 0).all()


def test_identity_v2v_recovers_joints(rig):
    # With the V2V bypassed, heatmaps -> cube -> soft-argmax must reproduce the joints.
    cams, affines = rig(4, seed=2)
    net = build_pose_net(tiny_config(pose_bins=[16, 16, 16], beta=100.0))
    root = torch.tensor([50.0, -80.0, 950.0])
    joints = root + torch.tensor(
        [
            [(i % 3 - 1) * 300.0, (i // 3 % 3 - 1) * 250.0, (i % 2) * 200.0]
            for i in range(NUM_JOINTS)
        ]
    )
    heatmaps = _joint_heatmaps(cams, affines, joints[None, None])
    proposals = torch.cat([root + 37.0, torch.tensor([1.0, 1.0])])[None, None]
    net.v2v = torch.nn.Identity()
    poses = net(heatmaps, proposals, cams, affines)
    voxel = 1600.0 / 15  # with beta = 100 and coarse voxels the soft-argmax is nearly an argmax
    assert (poses[0, 0] - joints).norm(dim=-1).max() < voxel


def test_stacked_versions_share_proposals_and_equal_separate_calls(rig):
    cams, affines = rig(3, seed=0, batch=2)
    net = build_pose_net(tiny_config()).eval()
    joints = torch.tensor([0.0, 0.0, 900.0]) + 300 * torch.randn(2, 1, NUM_JOINTS, 3)
    heatmaps = _joint_heatmaps(cams, affines, joints)
    # A second version of the same samples: other affines (a shifted, scaled heatmap frame).
    shifted = affines.clone()
    shifted[..., :2] *= 0.9
    shifted[..., 0, 2] += 3.0
    other = _joint_heatmaps(cams, shifted, joints)
    proposals = torch.zeros(2, 3, 5)
    proposals[:, :, :3] = torch.tensor([0.0, 0.0, 900.0])
    proposals[0, 0, 4] = proposals[1, 0, 4] = proposals[1, 2, 4] = 1.0
    with torch.no_grad():
        both = net(torch.cat([heatmaps, other]), proposals, cams, torch.cat([affines, shifted]))
        first = net(heatmaps, proposals, cams, affines)
        second = net(other, proposals, cams, shifted)
    assert both.shape == (4, 3, NUM_JOINTS, 3)
    torch.testing.assert_close(both, torch.cat([first, second]), rtol=1e-5, atol=1e-3)
    assert not torch.equal(first, second)  # the versions really differ
    with pytest.raises(ValueError, match="whole versions"):  # 3 rows for 2 samples
        net(heatmaps[:1].repeat(3, 1, 1, 1, 1), proposals, cams, affines.repeat(2, 1, 1, 1)[:3])


def test_an_offset_cube_reaches_joints_a_centred_cube_cuts_off(rig):
    # A standing person: the feet ~1000 mm below the root, outside a centred 1.6 m cube
    # (800 mm down); shifted 300 mm down the cube holds every joint.
    cams, affines = rig(4, seed=2)
    root = torch.tensor([50.0, -80.0, 1100.0])
    joints = root + torch.tensor(
        [[(i % 3 - 1) * 250.0, (i // 3 % 3 - 1) * 200.0, -1000.0 + (i % 5) * 300.0]
         for i in range(NUM_JOINTS)]
    )  # fmt: skip
    heatmaps = _joint_heatmaps(cams, affines, joints[None, None])
    proposals = torch.cat([root, torch.tensor([1.0, 1.0])])[None, None]
    voxel = 1600.0 / 15
    feet = joints[:, 2] - root[2] < -800.0
    errors = {}
    for offset in ([0.0, 0.0, 0.0], [0.0, 0.0, -300.0]):
        net = build_pose_net(tiny_config(pose_bins=[16, 16, 16], pose_cube_offset=offset))
        net.v2v = torch.nn.Identity()
        errors[offset[2]] = (net(heatmaps, proposals, cams, affines)[0, 0] - joints).norm(dim=-1)
    assert feet.sum() == 3
    assert errors[-300.0].max() < voxel
    assert (errors[0.0][feet] > 150.0).all()  # clamped to the cube's floor, 200 mm up
    assert errors[0.0][~feet].max() < voxel


def test_an_offset_that_leaves_the_root_outside_the_cube_is_refused():
    with pytest.raises(ValueError, match="pose_cube_offset .* keep the root inside the cube"):
        tiny_config(pose_cube_offset=[0.0, 0.0, -800.0])
    with pytest.raises(ValueError, match="pose_cube_offset needs 3 values"):
        tiny_config(pose_cube_offset=[0.0, -100.0])
