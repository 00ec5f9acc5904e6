"""Triangulation: exactness with distortion, weights, missing views, robustness, invariances."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from selfpose3d.geometry.camera import Camera, project_points
from selfpose3d.geometry.triangulation import (
    projection_matrix,
    reprojection_errors,
    triangulate,
    triangulate_dlt,
    triangulate_robust,
    undistort_points,
)

CAMERA_KEYS = ("K", "dist", "R", "t")


def observe(rig: dict[str, np.ndarray], X_N3: np.ndarray) -> np.ndarray:
    """(N, V, 2) px projections of world points into every view."""
    return np.swapaxes(project_points(X_N3, *(rig[k] for k in CAMERA_KEYS)), 0, 1)


def as_torch(rig: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(rig[k]) for k in CAMERA_KEYS]


@pytest.mark.parametrize("n_views", [2, 3, 4, 5, 6])
def test_noise_free_points_triangulate_exactly(rng, make_rig, make_visible_points, n_views):
    rig = make_rig(rng, n_views)
    X_N3 = make_visible_points(rng, rig, 64)
    uv_NV2 = observe(rig, X_N3)
    X_np = triangulate(uv_NV2, *(rig[k] for k in CAMERA_KEYS))
    assert X_np.shape == (64, 3)
    assert np.abs(X_np - X_N3).max() < 1e-3
    X_t = triangulate(torch.from_numpy(uv_NV2), *as_torch(rig))
    assert X_t.dtype == torch.float64
    assert np.abs(X_t.numpy() - X_N3).max() < 1e-3


def test_float32_torch_input_keeps_its_dtype(rng, make_rig, make_visible_points):
    rig = make_rig(rng, 4)
    X_N3 = make_visible_points(rng, rig, 16)
    uv = torch.from_numpy(observe(rig, X_N3)).float()
    X = triangulate(uv, *as_torch(rig))
    assert X.dtype == torch.float32
    assert np.abs(X.double().numpy() - X_N3).max() < 0.05  # float32 px resolution, not the solver


def test_batched_rigs_broadcast(rng, make_rig, make_visible_points):
    rigs = [make_rig(rng, 3) for _ in range(2)]
    stacked = {k: np.stack([r[k] for r in rigs]) for k in CAMERA_KEYS}  # (B=2, V, ...)
    X_BN3 = np.stack([make_visible_points(rng, r, 5) for r in rigs])
    uv_BNV2 = np.stack([observe(r, x) for r, x in zip(rigs, X_BN3, strict=True)])
    cams = [stacked[k][:, None] for k in CAMERA_KEYS]  # (B, 1, V, ...) broadcast over N
    np.testing.assert_allclose(triangulate(uv_BNV2, *cams), X_BN3, atol=1e-3)


def test_projection_matrix_and_plain_dlt(rng, make_rig, make_visible_points):
    rig = make_rig(rng, 3)
    rig["dist"][:] = 0.0  # undistorted pixels: K [R | t] is the whole camera
    cams = [Camera(name=f"c{v}", K=rig["K"][v], dist=rig["dist"][v], R=rig["R"][v],
                   t=rig["t"][v], width=1920, height=1080) for v in range(3)]  # fmt: skip
    P_V34 = np.stack([projection_matrix(c) for c in cams])
    np.testing.assert_allclose(P_V34[1], rig["K"][1] @ np.c_[rig["R"][1], rig["t"][1]])
    X_N3 = make_visible_points(rng, rig, 20)
    X = triangulate_dlt(observe(rig, X_N3), P_V34)
    np.testing.assert_allclose(X, X_N3, atol=1e-6)
    X_t = triangulate_dlt(torch.from_numpy(observe(rig, X_N3)), torch.from_numpy(P_V34))
    np.testing.assert_allclose(X_t.numpy(), X_N3, atol=1e-6)


def test_weights_downweight_a_bad_view(rng, make_rig, make_visible_points):
    rig = make_rig(rng, 5)
    X_N3 = make_visible_points(rng, rig, 200)
    uv = observe(rig, X_N3) + rng.normal(0, 0.5, (200, 5, 2))
    uv[:, 2] += rng.normal(0, 25.0, (200, 2))  # view 2 is badly off
    cams = [rig[k] for k in CAMERA_KEYS]
    w = np.array([1.0, 1.0, 0.05, 1.0, 1.0])
    err_plain = np.linalg.norm(triangulate(uv, *cams) - X_N3, axis=-1).mean()
    err_weighted = np.linalg.norm(triangulate(uv, *cams, weights=w) - X_N3, axis=-1).mean()
    assert err_weighted < 0.5 * err_plain
    X_t = triangulate(torch.from_numpy(uv), *as_torch(rig), weights=torch.from_numpy(w))
    err_t = np.linalg.norm(X_t.numpy() - X_N3, axis=-1)
    np.testing.assert_allclose(err_t.mean(), err_weighted, rtol=1e-6)


def test_zero_weight_views_are_ignored_even_when_nan(rng, make_rig, make_visible_points):
    rig = make_rig(rng, 4)
    X_N3 = make_visible_points(rng, rig, 10)
    uv = observe(rig, X_N3) + rng.normal(0, 1.0, (10, 4, 2))
    uv_bad = uv.copy()
    uv_bad[:, 1] = np.nan
    w = np.array([1.0, 0.0, 1.0, 1.0])
    keep = [0, 2, 3]
    expected = triangulate(uv[:, keep], *(rig[k][keep] for k in CAMERA_KEYS))
    np.testing.assert_allclose(triangulate(uv_bad, *(rig[k] for k in CAMERA_KEYS), weights=w),
                               expected, atol=1e-9)  # fmt: skip
    got_t = triangulate(torch.from_numpy(uv_bad), *as_torch(rig), weights=torch.from_numpy(w))
    np.testing.assert_allclose(got_t.numpy(), expected, atol=1e-9)


def test_fewer_than_two_views_give_nan_with_finite_gradients(rng, make_rig, make_visible_points):
    rig = make_rig(rng, 3)
    X_N3 = make_visible_points(rng, rig, 4)
    uv = observe(rig, X_N3)
    w = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 0, 1]], dtype=np.float64)
    X = triangulate(uv, *(rig[k] for k in CAMERA_KEYS), weights=w)
    assert np.isnan(X[1]).all() and np.isnan(X[2]).all()
    assert np.isfinite(X[[0, 3]]).all()
    single = triangulate(uv[:, :1], *(rig[k][:1] for k in CAMERA_KEYS))
    assert single.shape == (4, 3) and np.isnan(single).all()
    # A NaN row in a batch must not poison the gradients of the others (training batches).
    uv_t = torch.from_numpy(uv).requires_grad_()
    X_t = triangulate(uv_t, *as_torch(rig), weights=torch.from_numpy(w))
    X_t[[0, 3]].sum().backward()
    assert torch.isfinite(uv_t.grad).all()
    assert (uv_t.grad[[1, 2]] == 0).all() and (uv_t.grad[0] != 0).any()


def test_triangulation_gradcheck(rng, make_rig, make_visible_points):
    rig = make_rig(rng, 3)
    uv = torch.from_numpy(observe(rig, make_visible_points(rng, rig, 2)))
    uv = (uv + 0.7).requires_grad_()  # off the exact solution: a generic least-squares problem
    w = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    cams = as_torch(rig)
    assert torch.autograd.gradcheck(lambda p, w: triangulate(p, *cams, weights=w), (uv, w),
                                    eps=1e-6, atol=1e-5)  # fmt: skip
    K, dist = (c.clone().requires_grad_() for c in cams[:2])
    assert torch.autograd.gradcheck(lambda p, K, d: undistort_points(p, K, d),
                                    (uv[:, :1].detach().clone().requires_grad_(), K[:1], dist[:1]),
                                    eps=1e-6, atol=1e-5)  # fmt: skip


def test_undistortion_inverts_projection_on_real_lenses(fixtures_dir):
    from selfpose3d.data.panoptic_layout import read_calibration

    calib = fixtures_dir / "panoptic" / "160906_band1" / "calibration_160906_band1.json"
    cams = [c for c in read_calibration(calib).values() if c.extra.get("type") == "hd"]
    K = np.stack([c.K for c in cams])
    dist = np.stack([c.dist for c in cams])
    grid = np.stack(np.meshgrid(np.linspace(0, 1919, 9), np.linspace(0, 1079, 7)), -1)
    grid = grid.reshape(-1, 2)  # includes the image corners, where distortion is strongest
    xy_np = undistort_points(grid, K, dist)
    xy_t = undistort_points(torch.from_numpy(grid), torch.from_numpy(K), torch.from_numpy(dist))
    np.testing.assert_allclose(xy_t.numpy(), xy_np, atol=1e-12)
    rays = np.concatenate([xy_np, np.ones_like(xy_np[..., :1])], -1)
    back = project_points(rays, K, dist, np.eye(3), np.zeros(3))
    np.testing.assert_allclose(back, np.broadcast_to(grid, back.shape), atol=1e-6)
    ref = cv2.undistortPoints(grid[:, None], K[4], dist[4])[:, 0]
    np.testing.assert_allclose(xy_np[4], ref, atol=1e-6)


def test_robust_triangulation_rejects_a_gross_outlier(rng, make_rig, make_visible_points):
    rig = make_rig(rng, 5)
    X_N3 = make_visible_points(rng, rig, 30)
    uv = observe(rig, X_N3) + rng.normal(0, 0.3, (30, 5, 2))
    uv[:, 3] += [180.0, -120.0]  # e.g. the detector picked another person in view 3
    cams = [rig[k] for k in CAMERA_KEYS]
    X, inliers = triangulate_robust(uv, *cams)
    assert inliers.shape == (30, 5) and not inliers[:, 3].any() and inliers[:, [0, 1, 2, 4]].all()
    assert np.linalg.norm(X - X_N3, axis=-1).max() < 5.0
    assert np.linalg.norm(triangulate(uv, *cams) - X_N3, axis=-1).mean() > 20.0
    uv_t = torch.from_numpy(uv).requires_grad_()
    X_t, inliers_t = triangulate_robust(uv_t, *as_torch(rig))
    np.testing.assert_allclose(X_t.detach().numpy(), X, atol=1e-9)
    np.testing.assert_array_equal(inliers_t.numpy(), inliers)
    X_t.sum().backward()  # differentiable through the final DLT; outliers get no gradient
    assert torch.isfinite(uv_t.grad).all() and (uv_t.grad[:, 3] == 0).all()


def test_robust_triangulation_without_enough_views(rng, make_rig, make_visible_points):
    rig = make_rig(rng, 3)
    uv = observe(rig, make_visible_points(rng, rig, 2))
    X, inliers = triangulate_robust(uv, *(rig[k] for k in CAMERA_KEYS),
                                    weights=np.array([1.0, 0.0, 0.0]))  # fmt: skip
    assert np.isnan(X).all() and not inliers.any()
    X1, inliers1 = triangulate_robust(uv[:, :1], *(rig[k][:1] for k in CAMERA_KEYS))
    assert X1.shape == (2, 3) and np.isnan(X1).all() and inliers1.shape == (2, 1)


def test_reprojection_error_is_inf_behind_the_camera(rng, make_rig):
    rig = make_rig(rng, 2)
    centre0 = -rig["R"][0].T @ rig["t"][0]
    behind0 = centre0 - 1000.0 * rig["R"][0][2]
    err = reprojection_errors(behind0, np.zeros((2, 2)), *(rig[k] for k in CAMERA_KEYS))
    assert np.isinf(err[0])


@pytest.mark.parametrize("robust", [False, True])
def test_camera_order_does_not_matter(rng, make_rig, make_visible_points, robust):
    rig = make_rig(rng, 5)
    X_N3 = make_visible_points(rng, rig, 20)
    uv = observe(rig, X_N3) + rng.normal(0, 2.0, (20, 5, 2))
    w = rng.uniform(0.2, 1.0, 5)
    perm = rng.permutation(5)
    fn = (lambda *a, **k: triangulate_robust(*a, **k)[0]) if robust else triangulate
    X = fn(uv, *(rig[k] for k in CAMERA_KEYS), weights=w)
    X_perm = fn(uv[:, perm], *(rig[k][perm] for k in CAMERA_KEYS), weights=w[perm])
    np.testing.assert_allclose(X_perm, X, atol=1e-6)


def test_rigid_motion_of_world_and_cameras_moves_the_result(rng, make_rig, make_visible_points):
    rig = make_rig(rng, 4)
    X_N3 = make_visible_points(rng, rig, 20)
    uv = observe(rig, X_N3) + rng.normal(0, 2.0, (20, 4, 2))
    Q = cv2.Rodrigues(np.array([0.3, -1.1, 2.0]))[0]
    s = np.array([5000.0, -12000.0, 300.0])
    # X' = Q X + s; the same pixels must come from R' = R Q^T, t' = t - R' s.
    moved = dict(rig, R=rig["R"] @ Q.T, t=rig["t"] - np.einsum("vij,j->vi", rig["R"] @ Q.T, s))
    X = triangulate(uv, *(rig[k] for k in CAMERA_KEYS))
    X_moved = triangulate(uv, *(moved[k] for k in CAMERA_KEYS))
    np.testing.assert_allclose(X_moved, X @ Q.T + s, atol=1e-6)
    Xr, _ = triangulate_robust(uv, *(moved[k] for k in CAMERA_KEYS))
    np.testing.assert_allclose(Xr, triangulate_robust(uv, *(rig[k] for k in CAMERA_KEYS))[0]
                               @ Q.T + s, atol=1e-6)  # fmt: skip
