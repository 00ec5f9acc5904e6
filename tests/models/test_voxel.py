import cv2
import pytest
import torch

from selfpose3d.geometry.camera import project_points
from selfpose3d.models.heatmaps import render_heatmaps
from selfpose3d.models.pose_net import soft_argmax
from selfpose3d.models.voxel import (
    _UNSEEN,
    CameraBatch,
    SpaceProjector,
    camera_to_image,
    grid_camera_frames,
    inside_image,
    project_to_views,
    sample_points,
    to_heatmap_grid,
    voxel_axes,
    voxel_grid,
)

HEATMAP_WH = (80, 60)
POINT = torch.tensor([340.0, -180.0, 950.0])  # mm, 40/20/-50 mm off the nearest root voxel
# Small enough for every camera of the rig to see all of it (a voxel seen by a single view
# takes that view's value, so along a ray it would tie with the true point).
SPACE = dict(center=[0.0, 0.0, 1000.0], size=[2000.0, 2000.0, 1000.0], bins=[11, 11, 6])


def heatmaps_of(
    points: torch.Tensor, cams: CameraBatch, affines: torch.Tensor, sigma: float = 2.0
) -> torch.Tensor:
    """(B, N, 3) mm -> one-channel heatmaps (B, V, 1, h, w) with a Gaussian at each point."""
    uv = project_points(points[:, None], cams.K, cams.dist, cams.R, cams.t)  # (B, V, N, 2)
    hm = uv @ affines[..., :2].transpose(-1, -2) + affines[..., None, :, 2]
    weights = torch.ones(hm.shape[:-1])
    return render_heatmaps(hm[:, :, :, None], weights[..., None], HEATMAP_WH, sigma)


def test_grid_convention():
    axes = voxel_axes([0.0, 10.0, 20.0], [100.0, 200.0, 300.0], [3, 5, 4])
    assert axes[0].tolist() == [-50.0, 0.0, 50.0]
    assert axes[1][0].item() == -90.0 and axes[1][-1].item() == 110.0
    grid = voxel_grid([0.0, 10.0, 20.0], [100.0, 200.0, 300.0], [3, 5, 4])
    assert grid.shape == (60, 3)
    ix, iy, iz = 2, 1, 3  # x-major flattening
    assert grid[(ix * 5 + iy) * 4 + iz].tolist() == [axes[0][ix], axes[1][iy], axes[2][iz]]


def test_root_space_argmax_is_the_voxel_nearest_the_point(rig):
    cams, affines = rig(3, seed=1)
    heat = heatmaps_of(POINT[None, None], cams, affines)
    cube = SpaceProjector(**SPACE)(heat, cams, affines)  # (1, 1, X, Y, Z)
    assert cube.shape == (1, 1, 11, 11, 6)
    assert 0 <= cube.min() and cube.max() <= 1
    grid = voxel_grid(**SPACE)
    assert project_to_views(grid[None], cams)[1].all()  # every view sees the whole space
    nearest = (grid - POINT).norm(dim=-1).argmin()
    assert cube.flatten().argmax() == nearest
    assert cube.flatten()[nearest] > 0.8


def test_pose_cube_soft_argmax_recovers_the_point(rig):
    cams, affines = rig(3, seed=2)
    heat = heatmaps_of(POINT[None, None], cams, affines)
    root = POINT + torch.tensor([120.0, -70.0, 45.0])  # a proposal near, not at, the point
    grid = ([0.0] * 3, [1000.0] * 3, [21] * 3)  # 50 mm voxels
    cube = sample_points(heat, (root + voxel_grid(*grid))[None], cams, affines)  # (1, 1, N)
    estimate = root + soft_argmax(cube.reshape(21, 21, 21), voxel_axes(*grid), beta=100.0)
    # Bilinear sampling peaks at pixel centres: expect a bias below half a voxel.
    assert (estimate - POINT).norm() < 0.5 * 50.0


def test_points_seen_by_no_view_are_zero(rig):
    cams, affines = rig(3, seed=3)
    heat = torch.full((1, 3, 2, HEATMAP_WH[1], HEATMAP_WH[0]), 0.5)
    seen = torch.tensor([[[0.0, 0.0, 900.0]]])
    unseen = torch.tensor([[[0.0, 0.0, 50000.0], [90000.0, 0.0, 0.0]]])  # above / far outside
    values = sample_points(heat, torch.cat([seen, unseen], 1), cams, affines)  # (1, 2, 3)
    # The mean over the views that see a point: 0.5 however many they are; 0 for none.
    assert values[0, :, 0].tolist() == [0.5, 0.5]
    assert (values[0, :, 1:] == 0).all()


def test_points_behind_a_camera_are_not_seen(rig):
    cams, _ = rig(1, seed=4)
    centre = -cams.R[0, 0].T @ cams.t[0, 0]
    forward = cams.R[0, 0, 2]
    points = torch.stack([centre + 1000 * forward, centre - 1000 * forward])[None]
    _, valid = project_to_views(points, cams)
    assert valid[0, 0].tolist() == [True, False]


def test_points_beside_the_image_are_faithful_but_not_seen(rig):
    cams, _ = rig(1, seed=4, distortion=False)
    R, t = cams.R[0, 0], cams.t[0, 0]
    # One point on the optical axis, one 50 px past the image's right edge, one behind.
    f, cx = float(cams.K[0, 0, 0, 0]), float(cams.K[0, 0, 0, 2])
    side = (float(cams.size[0, 0, 0]) - cx + 50.0) / f  # normalised x 50 px past the right edge
    cam_points = torch.tensor([[0.0, 0.0, 1000.0], [1000.0 * side, 0.0, 1000.0],
                               [0.0, 0.0, -1000.0]])  # fmt: skip
    world = ((cam_points - t) @ R)[None]
    uv, seen = project_to_views(world, cams)
    _, faithful = project_to_views(world, cams, within_image=False)
    assert uv[0, 0, 1, 0] == pytest.approx(float(cams.size[0, 0, 0]) + 50.0, abs=1e-2)
    assert seen[0, 0].tolist() == [True, False, False]
    assert faithful[0, 0].tolist() == [True, True, False]
    assert torch.equal(seen, faithful & inside_image(uv, cams.size))


def test_distortion_fold_back_is_masked(rig):
    cams, _ = rig(1, seed=5, distortion=False)
    cams.dist[..., 0] = -0.5  # r_d stops increasing at r ~ 0.82
    R, t = cams.R[0, 0], cams.t[0, 0]
    # Camera-frame points at normalised radius 0.3 (seen) and 1.5 (folds back near the centre).
    cam_points = torch.tensor([[300.0, 0.0, 1000.0], [1500.0, 0.0, 1000.0]])
    world = ((cam_points - t) @ R)[None]
    uv, valid = project_to_views(world, cams)
    assert 0 < uv[0, 0, 1, 0] < 320  # the folded point does land inside the image...
    assert valid[0, 0].tolist() == [True, False]  # ...but is not used


def test_gradient_stays_finite_for_points_in_the_camera_plane(rig):
    # A badly regressed joint can sit in (or behind) a camera's plane: its normalised radius
    # is ~1e9 and the k3 r^6 term overflows. The mask drops its pixel, and the gradient of
    # the other points must not turn NaN through it (a training step's update is then lost).
    cams, _ = rig(1, seed=5)
    cams.dist[..., 4] = 0.01  # a k3 like the Panoptic calibrations'
    R, t = cams.R[0, 0], cams.t[0, 0]
    cam_points = torch.tensor([[300.0, -100.0, 1000.0], [1000.0, 0.0, 0.0],
                               [200.0, 50.0, -800.0]])  # fmt: skip
    world = ((cam_points - t) @ R)[None].requires_grad_(True)
    uv, faithful = project_to_views(world, cams, within_image=False)
    assert faithful[0, 0].tolist() == [True, False, False]
    torch.where(faithful[..., None], uv, 0.0).sum().backward()
    assert torch.isfinite(world.grad).all()
    assert world.grad[0, 1:].abs().max() == 0  # the masked points get no gradient
    # The faithful point's gradient and pixel are those of projecting it alone.
    alone = world.detach()[:, :1].requires_grad_(True)
    uv1, _ = project_to_views(alone, cams, within_image=False)
    uv1.sum().backward()
    torch.testing.assert_close(world.grad[:, :1], alone.grad)
    torch.testing.assert_close(uv[:, :, :1], uv1)
    # The same through the mask that also asks for the image.
    world.grad = None
    uv, seen = project_to_views(world, cams)
    torch.where(seen[..., None], uv, 0.0).sum().backward()
    assert torch.isfinite(world.grad).all() and world.grad[0, 0].abs().max() > 0


def test_grid_camera_frames_project_like_the_grid_points(rig):
    # The pose cubes' separable camera frame must give the pixels and masks of projecting
    # every voxel centre (distorted cameras, grids partly outside some views).
    cams, _ = rig(4, seed=8, batch=3)
    roots = torch.tensor([[340.0, -180.0, 950.0], [-1500.0, 900.0, 800.0], [0.0, 0.0, 400.0]])
    cube = ([0.0, 0.0, 100.0], [2000.0, 1600.0, 2200.0], [8, 6, 5])
    offsets, axes = voxel_grid(*cube), voxel_axes(*cube)
    want_uv, want_valid = project_to_views(roots[:, None] + offsets, cams)
    x, y, z = grid_camera_frames(roots, axes, cams)
    assert x.shape == (3, 4, 8 * 6 * 5)
    uv, valid = camera_to_image(x, y, z, cams)
    assert torch.equal(valid, want_valid) and 0 < valid.float().mean() < 1
    torch.testing.assert_close(uv[valid], want_uv[valid], rtol=0, atol=1e-3)


def test_view_order_does_not_matter(rig):
    cams, affines = rig(4, seed=6)
    points = torch.stack([POINT, POINT + torch.tensor([-900.0, 600.0, 100.0])])[None]
    heat = heatmaps_of(points, cams, affines)
    projector = SpaceProjector(**SPACE, cache_size=0)
    cube = projector(heat, cams, affines)
    perm = torch.tensor([2, 0, 3, 1])
    permuted = projector(heat[:, perm], cams[:, perm], affines[:, perm])
    torch.testing.assert_close(permuted, cube, rtol=0, atol=1e-6)


def test_projection_cache_hit_miss_and_invalidation(rig):
    cams, affines = rig(3, seed=7, batch=2)
    heat = torch.rand(2, 3, 1, HEATMAP_WH[1], HEATMAP_WH[0])
    projector = SpaceProjector(**SPACE, cache_size=4)
    first = projector(heat, cams, affines)
    assert (projector.cache_hits, projector.cache_misses) == (0, 2)  # same rig twice: 1 entry
    assert len(projector._cache) == 1
    again = projector(heat, cams, affines)
    assert (projector.cache_hits, projector.cache_misses) == (2, 2)
    assert torch.equal(again, first)
    uncached = SpaceProjector(**SPACE, cache_size=0)(heat, cams, affines)
    assert torch.equal(uncached, first)

    other, _ = rig(3, seed=8, batch=2)  # different cameras: recomputed, different cube
    moved = projector(heat, other, affines)
    assert projector.cache_misses == 4
    assert not torch.allclose(moved, first)
    torch.testing.assert_close(moved, SpaceProjector(**SPACE, cache_size=0)(heat, other, affines))

    # A new affine (augmentation) reuses the cached projection but changes the cube.
    shifted = affines.clone()
    shifted[..., 0, 2] += 3.0
    hits = projector.cache_hits
    aug = projector(heat, cams, shifted)
    assert projector.cache_hits == hits + 2
    torch.testing.assert_close(aug, SpaceProjector(**SPACE, cache_size=0)(heat, cams, shifted))
    assert not torch.allclose(aug, first)


def test_cache_is_bounded(rig):
    projector = SpaceProjector(**SPACE, cache_size=2)
    heat = torch.rand(1, 2, 1, HEATMAP_WH[1], HEATMAP_WH[0])
    for seed in range(4):
        cams, affines = rig(2, seed=seed)
        projector(heat, cams, affines)
    assert len(projector._cache) == 2


def test_gradient_flows_to_the_heatmaps(rig):
    cams, affines = rig(3, seed=9)
    heat = heatmaps_of(POINT[None, None], cams, affines).mul(0.9).requires_grad_(True)
    offsets = voxel_grid([0.0] * 3, [800.0] * 3, [8] * 3)
    cube = sample_points(heat, (POINT + offsets)[None], cams, affines)
    cube.sum().backward()
    assert heat.grad.abs().sum() > 0


def test_camera_batch_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"cameras\.t: expected shape \(1, 2, 3\)"):
        CameraBatch(
            K=torch.zeros(1, 2, 3, 3),
            dist=torch.zeros(1, 2, 5),
            R=torch.zeros(1, 2, 3, 3),
            t=torch.zeros(2, 3),
            size=torch.zeros(1, 2, 2),
        )
    with pytest.raises(ValueError, match="missing"):
        CameraBatch.from_mapping({"K": torch.zeros(1, 1, 3, 3)})


def test_camera_batch_indexing_and_concatenation(rig):
    cams, _ = rig(3, seed=10, batch=2)
    both = CameraBatch.cat([cams, cams[:1]])
    assert both.batch_size == 3 and both.num_views == 3
    assert torch.equal(both.R[2], cams.R[0])
    assert cams[:, [2, 0]].num_views == 2
    assert both.sample_keys()[2] == cams.sample_keys()[0] != cams[:, [1, 0, 2]].sample_keys()[0]


def test_projection_equals_opencv_with_full_distortion(rig):
    cams, _ = rig(4, seed=8)
    cams.dist[..., 2:] = torch.tensor([0.002, -0.003, 0.01])  # tangential and k3 as well
    points = torch.randn(1, 500, 3) * torch.tensor([800.0, 800.0, 500.0]) + torch.tensor(
        [0.0, 0.0, 900.0]
    )
    uv, valid = project_to_views(points, cams)
    for v in range(4):
        rvec, _ = cv2.Rodrigues(cams.R[0, v].double().numpy())
        expected, _ = cv2.projectPoints(points[0].double().numpy(), rvec,
                                        cams.t[0, v].double().numpy(),
                                        cams.K[0, v].double().numpy(),
                                        cams.dist[0, v].double().numpy())  # fmt: skip
        expected = torch.from_numpy(expected[:, 0]).float()
        torch.testing.assert_close(uv[0, v], expected, rtol=0, atol=2e-3)
        inside = ((expected >= -0.5) & (expected <= torch.tensor([319.5, 239.5]))).all(-1)
        assert valid[0, v].tolist() == inside.tolist()  # all in front, inside the radius
    assert 0 < valid.float().mean() < 1
    # OpenCV ignores a skew term; the geometry module's projection does not.
    cams.K[..., 0, 1] = 0.7
    expected = project_points(points[:, None], cams.K, cams.dist, cams.R, cams.t)
    torch.testing.assert_close(project_to_views(points, cams)[0], expected, rtol=0, atol=2e-3)


def test_heatmap_grid_is_the_normalised_affine_image_of_the_pixels():
    affines = torch.tensor([[[[0.25, 0.02, -0.375], [-0.01, 0.26, 1.5]]]])  # (1, 1, 2, 3)
    w, h = 80, 60
    # Heatmap px on the edges of the heatmap, just beyond them, and inside.
    hm = torch.tensor([[-0.498, -0.498], [w - 0.502, h - 0.502], [-0.502, 10.0], [10.0, h - 0.498],
                       [20.25, 33.75], [w - 0.7, 0.0]])  # fmt: skip
    a, b = affines[0, 0, :, :2].double(), affines[0, 0, :, 2].double()
    uv = ((hm.double() - b) @ torch.linalg.inv(a).T).float()[None, None]  # (1, 1, 6, 2)
    seen = torch.tensor([[[True, True, True, True, True, False]]])
    grid, valid = to_heatmap_grid(uv, seen, affines, (w, h))
    assert valid[0, 0].tolist() == [True, True, False, False, True, False]
    # Seen points within half a pixel beyond the border pixels' centres clamp to them.
    expected = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [_UNSEEN] * 2, [_UNSEEN] * 2,
                             [2 * 20.25 / 79 - 1, 2 * 33.75 / 59 - 1], [_UNSEEN] * 2])  # fmt: skip
    torch.testing.assert_close(grid[0, 0], expected, rtol=0, atol=1e-5)
    # n versions of the same points broadcast over a leading axis of the affines.
    two = torch.stack([affines, affines * 2])
    grid2, valid2 = to_heatmap_grid(uv, seen, two, (w, h))
    assert grid2.shape == (2, 1, 1, 6, 2) and torch.equal(grid2[0], grid)
    assert torch.equal(valid2[0], valid) and not torch.equal(valid2[1], valid)
