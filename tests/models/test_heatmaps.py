import math

import pytest
import torch

from selfpose3d.models.heatmaps import render_cubes, render_heatmaps
from selfpose3d.models.voxel import voxel_axes


def _argmax_xy(heatmap: torch.Tensor) -> tuple[int, int]:
    h, w = heatmap.shape
    i = int(heatmap.argmax())
    return i % w, i // w


@pytest.mark.parametrize("uv", [(10.0, 7.0), (10.4, 6.6), (3.49, 11.51)])
def test_peak_at_the_rounded_pixel(uv):
    points = torch.tensor(uv).reshape(1, 1, 1, 1, 2)
    maps = render_heatmaps(points, torch.ones(1, 1, 1, 1), (20, 16), sigma=2.0)
    assert maps.shape == (1, 1, 1, 16, 20)
    assert _argmax_xy(maps[0, 0, 0]) == (round(uv[0]), round(uv[1]))
    x, y = round(uv[0]), round(uv[1])
    expected = math.exp(-((x - uv[0]) ** 2 + (y - uv[1]) ** 2) / 8)
    assert maps[0, 0, 0, y, x].item() == pytest.approx(expected, rel=1e-5)


def test_every_view_joint_and_person_in_one_call():
    b, v, p, j = 2, 3, 4, 5
    points = torch.rand(b, v, p, j, 2) * torch.tensor([30.0, 20.0])
    weights = (torch.rand(b, v, p, j) > 0.3).float()
    maps = render_heatmaps(points, weights, (32, 24), sigma=1.5)
    assert maps.shape == (b, v, j, 24, 32)
    single = render_heatmaps(points[1:2, 2:3, 3:4, 4:5], weights[1:2, 2:3, 3:4, 4:5], (32, 24), 1.5)
    if weights[1, 2, 3, 4] > 0:  # the max over people is at least each person's own map
        assert (maps[1, 2, 4] >= single[0, 0, 0] - 1e-6).all()


def test_max_versus_sum_clip():
    # Two people 1 px apart: the max stays a single Gaussian's height, the sum saturates at 1.
    points = torch.tensor([[10.0, 8.0], [11.0, 8.0]]).reshape(1, 1, 2, 1, 2)
    weights = torch.ones(1, 1, 2, 1)
    mx = render_heatmaps(points, weights, (24, 16), sigma=3.0, combine="max")
    sc = render_heatmaps(points, weights, (24, 16), sigma=3.0, combine="sum_clip")
    assert mx.max().item() == pytest.approx(1.0)
    assert sc.max().item() == pytest.approx(1.0)
    assert (sc >= mx - 1e-6).all()
    # Between the two the sum is clipped, far away it is the plain sum of two tails.
    far = (0, 0, 0, 8, 20)
    one = math.exp(-(10**2) / 18) + math.exp(-(9**2) / 18)
    assert sc[far].item() == pytest.approx(one, rel=1e-5)
    assert mx[far].item() == pytest.approx(math.exp(-(9**2) / 18), rel=1e-5)


def test_weights_gate_and_nonfinite_points_draw_nothing():
    # Person 0 has weight 0, person 1 a NaN coordinate (weight 1): only person 2 is drawn.
    points = torch.tensor([[5.0, 5.0], [float("nan"), 3.0], [8.0, 2.0]]).reshape(1, 1, 3, 1, 2)
    weights = torch.tensor([0.0, 1.0, 1.0]).reshape(1, 1, 3, 1)
    only = render_heatmaps(points[:, :, 2:], weights[:, :, 2:], (12, 10), sigma=1.0)
    for combine in ("max", "sum_clip"):
        maps = render_heatmaps(points, weights, (12, 10), sigma=1.0, combine=combine)
        assert torch.isfinite(maps).all()
        torch.testing.assert_close(maps, only)
    empty = render_heatmaps(torch.zeros(1, 2, 0, 3, 2), torch.zeros(1, 2, 0, 3), (12, 10), 1.0)
    assert empty.shape == (1, 2, 3, 10, 12) and (empty == 0).all()


@pytest.mark.parametrize("combine", ["max", "sum_clip"])
def test_gradient_reaches_the_points(combine):
    points = torch.tensor([[6.3, 4.2], [9.0, 7.5]]).reshape(1, 1, 2, 1, 2).requires_grad_(True)
    target = render_heatmaps(
        torch.tensor([[7.0, 5.0], [9.0, 7.0]]).reshape(1, 1, 2, 1, 2),
        torch.ones(1, 1, 2, 1),
        (16, 12),
        2.0,
        combine,
    )
    maps = render_heatmaps(points, torch.ones(1, 1, 2, 1), (16, 12), 2.0, combine)
    ((maps - target) ** 2).sum().backward()
    assert torch.isfinite(points.grad).all()
    assert points.grad[0, 0, 0].abs().sum() > 0
    # Moving a point along the negative gradient brings it towards its target.
    assert points.grad[0, 0, 0, 0, 0] < 0 and points.grad[0, 0, 0, 0, 1] < 0


def test_gaussian_cube_peak_and_width():
    axes = voxel_axes([0.0, 0.0, 1000.0], [2000.0, 2000.0, 1000.0], [11, 11, 6])
    points = torch.tensor([[[200.0, -400.0, 900.0], [5000.0, 0.0, 0.0]]])
    cube = render_cubes(points, torch.tensor([[True, False]]), axes, sigma=200.0)
    assert cube.shape == (1, 11, 11, 6)
    ix, iy, iz = (int(i) for i in torch.unravel_index(cube.argmax(), cube.shape[1:]))
    assert (axes[0][ix].item(), axes[1][iy].item(), axes[2][iz].item()) == (200.0, -400.0, 900.0)
    assert cube.max().item() == pytest.approx(1.0)
    assert cube[0, ix + 1, iy, iz].item() == pytest.approx(math.exp(-0.5), rel=1e-5)
    none = render_cubes(points, torch.zeros(1, 2, dtype=torch.bool), axes)
    assert (none == 0).all()
