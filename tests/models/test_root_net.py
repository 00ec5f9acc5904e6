import math

import pytest
import torch

from selfpose3d.models.config import ModelConfig
from selfpose3d.models.heatmaps import render_cubes
from selfpose3d.models.root_net import build_root_net, nms_topk, subvoxel_offsets
from selfpose3d.skeleton import NUM_JOINTS, ROOT_INDEX


def tiny_config(**overrides) -> ModelConfig:
    values = dict(
        image_size=[320, 256],
        heatmap_size=[80, 64],
        space_size=[2000.0, 2000.0, 1000.0],
        space_center=[0.0, 0.0, 1000.0],
        root_bins=[11, 11, 6],
        pose_bins=[8, 8, 8],
        v2v_width=4,
        max_people=3,
        proposal_threshold=0.3,
    )
    values.update(overrides)
    return ModelConfig(**values)


def two_peak_cube() -> torch.Tensor:
    cube = torch.zeros(1, 11, 11, 6)
    cube[0, 2, 3, 1] = 0.6  # the weaker person
    cube[0, 2, 4, 1] = 0.5  # its neighbour: suppressed by NMS
    cube[0, 8, 7, 4] = 0.9  # the stronger person
    cube[0, 5, 5, 5] = 0.1  # a weak peak below the threshold
    return cube


def test_nms_topk_returns_both_peaks_in_score_order():
    scores, index = nms_topk(two_peak_cube(), 3)
    assert scores[0].tolist() == pytest.approx([0.9, 0.6, 0.1])
    assert index[0].tolist() == [[8, 7, 4], [2, 3, 1], [5, 5, 5]]


def test_fewer_peaks_than_k_score_zero():
    cube = torch.zeros(1, 4, 4, 4)
    cube[0, 1, 1, 1] = 0.8
    scores, index = nms_topk(cube, 3)
    assert scores[0].tolist() == [pytest.approx(0.8), 0.0, 0.0]
    assert index[0, 0].tolist() == [1, 1, 1]


def test_proposals_are_voxel_centres_with_flags():
    net = build_root_net(tiny_config(root_refine=False))
    proposals = net.propose(two_peak_cube())
    assert proposals.shape == (1, 3, 5)
    # voxel (8, 7, 4) of an 11 x 11 x 6 grid over 2000 x 2000 x 1000 mm centred at (0, 0, 1000)
    assert proposals[0, 0, :3].tolist() == pytest.approx([600.0, 400.0, 1300.0])
    assert proposals[0, 1, :3].tolist() == pytest.approx([-600.0, -400.0, 700.0])
    assert proposals[0, :, 3].tolist() == pytest.approx([0.9, 0.6, 0.1])
    assert proposals[0, :, 4].tolist() == [1.0, 1.0, 0.0]


def test_refinement_finds_a_gaussian_peak_between_voxels():
    net = build_root_net(tiny_config(root_refine=True))
    roots = torch.tensor([[[130.0, -270.0, 960.0], [-410.0, 380.0, 1180.0]]])
    cube = render_cubes(roots, torch.ones(1, 2, dtype=torch.bool), net.axes(), sigma=200.0)
    proposals = net.propose(cube)
    found = proposals[0, :2, :3]
    order = (found[:, None] - roots[0]).norm(dim=-1).argmin(dim=1)
    torch.testing.assert_close(found, roots[0, order], atol=0.5, rtol=0)  # mm
    assert proposals[0, :2, 4].tolist() == [1.0, 1.0]
    # Without refinement the error is up to half a voxel (100 mm) per axis.
    coarse = build_root_net(tiny_config(root_refine=False)).propose(cube)[0, :2, :3]
    assert (coarse - roots[0, order]).abs().max() > 10.0


def test_subvoxel_offsets_are_zero_at_the_border_and_for_flat_cubes():
    cube = torch.zeros(1, 5, 5, 5)
    cube[0, 0, 2, 2] = 1.0
    cube[0, 1, 2, 2] = 0.5
    offsets = subvoxel_offsets(cube, torch.tensor([[[0, 2, 2]]]))
    assert offsets[0, 0, 0].item() == 0.0  # no lower neighbour along x
    flat = subvoxel_offsets(torch.full((1, 5, 5, 5), 0.3), torch.tensor([[[2, 2, 2]]]))
    assert (flat == 0).all()
    g = math.exp(-0.5)
    cube = torch.zeros(1, 5, 5, 5)
    cube[0, 1:4, 2, 2] = torch.tensor([g, 1.0, g * g])  # peak pulled towards the lower side
    assert subvoxel_offsets(cube, torch.tensor([[[2, 2, 2]]]))[0, 0, 0].item() < 0


def test_forward_uses_the_root_channel_and_is_differentiable(rig):
    cams, affines = rig(3, seed=0, batch=2)
    net = build_root_net(tiny_config())
    heatmaps = torch.zeros(2, 3, NUM_JOINTS, 60, 80)
    heatmaps[:, :, ROOT_INDEX] = torch.rand(2, 3, 60, 80)
    heatmaps.requires_grad_(True)
    cubes, proposals = net(heatmaps, cams, affines)
    assert cubes.shape == (2, 11, 11, 6) and proposals.shape == (2, 3, 5)
    assert not proposals.requires_grad
    cubes.square().sum().backward()
    grad = heatmaps.grad.abs().sum(dim=(0, 1, 3, 4))
    assert grad[ROOT_INDEX] > 0 and grad.sum() == grad[ROOT_INDEX]


def test_root_cube_takes_synthetic_root_maps(rig):
    cams, affines = rig(2, seed=1)
    net = build_root_net(tiny_config())
    cube = net.root_cube(torch.rand(1, 2, 1, 60, 80), cams, affines)
    assert cube.shape == (1, 11, 11, 6)
    with pytest.raises(ValueError, match="one root channel"):
        net.root_cube(torch.rand(1, 2, 3, 60, 80), cams, affines)
