"""Triangulation of world points from calibrated views: weighted DLT, and a robust variant.

Frames and units: world mm (z up); pixels of each view's *original* camera image with the
OpenCV pixel-centre convention (map points from a resized / augmented image back first, with
``apply_affine(points, invert_affine(A))``); normalised coordinates are ``(X/Z, Y/Z)`` in the
camera frame, i.e. undistorted points with K removed.

Every function takes NumPy arrays or torch tensors (not mixed) and returns the same kind; the
torch path is differentiable (the robust variant through its final DLT) and computes in
float64 internally, returning the input's floating dtype.

Usable views: a view takes part when its weight is > 0 and its point and projection matrix are
finite; the others are ignored (NaN there is harmless). Where fewer than 2 views are usable the
result is NaN.

Shape legend: V views, N points, Q view pairs, ``...`` leading batch dimensions (broadcast).
"""

from __future__ import annotations

import contextlib
from itertools import combinations

import cv2
import numpy as np
import torch

from selfpose3d.geometry.camera import (
    Array,
    Camera,
    array_module,
    depth,
    distort_normalized,
    project_points,
)

# cv2.undistortPoints iterates a fixed point 5 times by default, which leaves errors of
# ~0.02 px in the corners of the Panoptic HD lenses; iterate to convergence instead.
_CV_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)


def projection_matrix(camera: Camera) -> np.ndarray:
    """(3, 4) ``P = K [R | t]``: homogeneous world mm -> *undistorted* px of ``camera``."""
    return projection_matrices(camera.K, camera.R, camera.t)


def projection_matrices(K: Array, R: Array, t: Array) -> Array:
    """(..., 3, 4) ``K [R | t]`` from K (..., 3, 3), R (..., 3, 3), t (..., 3) mm.

    Pass an identity K for the normalised-coordinate matrix ``[R | t]``.
    """
    xp = array_module(R)
    return K @ xp.concatenate([R, t[..., :, None]], -1)


def _normalize(points: Array, K: Array) -> Array:
    """(..., N, 2) px -> (..., N, 2) distorted normalised coordinates (inverse of K, skew too)."""
    xp = array_module(points)
    K_inv = xp.linalg.inv(K[..., :2, :2])
    return (points - K[..., None, :2, 2]) @ xp.swapaxes(K_inv, -1, -2)


def _newton_step(xy: Array, xy_distorted: Array, dist: Array) -> Array:
    """One Newton step on ``distort(xy) = xy_distorted`` with the analytic 2x2 Jacobian."""
    xp = array_module(xy)
    x, y = xy[..., 0], xy[..., 1]
    k1, k2, p1, p2, k3 = (dist[..., i : i + 1] for i in range(5))
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    d_radial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
    j_xx = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x
    j_yy = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x
    j_xy = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y  # the Jacobian is symmetric
    f = distort_normalized(xy, dist) - xy_distorted
    det = j_xx * j_yy - j_xy * j_xy
    dx = (j_yy * f[..., 0] - j_xy * f[..., 1]) / det
    dy = (j_xx * f[..., 1] - j_xy * f[..., 0]) / det
    return xy - xp.stack([dx, dy], -1)


def _undistort_numpy(points: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    points, K, dist = (np.asarray(a, dtype=np.float64) for a in (points, K, dist))
    n = points.shape[-2]
    cam_ndim = len(np.broadcast_shapes(K.shape[:-2], dist.shape[:-1]))
    batch = np.broadcast_shapes(points.shape[:-2], K.shape[:-2], dist.shape[:-1])
    # The cameras occupy the trailing batch dims: group the points per camera so that
    # OpenCV is called once per camera, never per point.
    cam_shape = batch[len(batch) - cam_ndim :]
    n_cam, n_pre = int(np.prod(cam_shape)), int(np.prod(batch[: len(batch) - cam_ndim]))
    pts = np.broadcast_to(points, (*batch, n, 2)).reshape(n_pre, n_cam, n, 2)
    pts = np.ascontiguousarray(pts.transpose(1, 0, 2, 3)).reshape(n_cam, n_pre * n, 1, 2)
    Ks = np.broadcast_to(K, (*cam_shape, 3, 3)).reshape(n_cam, 3, 3)
    ds = np.broadcast_to(dist, (*cam_shape, 5)).reshape(n_cam, 5)
    out = np.empty_like(pts)
    if pts.size:
        for c in range(n_cam):
            out[c] = cv2.undistortPoints(pts[c], Ks[c], ds[c], criteria=_CV_CRITERIA)
    out = out.reshape(n_cam, n_pre, n, 2).transpose(1, 0, 2, 3)
    return out.reshape(*batch, n, 2)


def undistort_points(points: Array, K: Array, dist: Array, iterations: int = 10) -> Array:
    """Pixel points -> undistorted normalised camera coordinates; inverse of ``project_points``.

    points (..., N, 2) px in the original image; K (..., 3, 3); dist (..., 5). Returns
    (..., N, 2) = (X/Z, Y/Z) in the camera frame. NumPy uses ``cv2.undistortPoints``; torch
    runs ``iterations`` Newton steps without gradient and one more with it, which gives the
    exact implicit-function gradient at the solution. Points far outside the image, where the
    distortion polynomial folds over, have no well-defined inverse.
    """
    if not isinstance(points, torch.Tensor):
        return _undistort_numpy(points, K, dist)
    xy_distorted = _normalize(points, K)
    with torch.no_grad():
        xy = xy_distorted.detach()
        for _ in range(iterations):
            xy = _newton_step(xy, xy_distorted.detach(), dist.detach())
    return _newton_step(xy, xy_distorted, dist)


def _as_float64(*arrays: Array) -> tuple[Array, ...]:
    if isinstance(arrays[0], torch.Tensor):
        return tuple(a.to(torch.float64) for a in arrays)
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def _result_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float64


def _const(values: object, like: Array) -> Array:
    """A constant array of ``like``'s module, dtype and device."""
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype)


def _norm(x: Array) -> Array:
    """Euclidean norm over the last axis (torch's ``linalg.norm`` has no ``axis``).

    The tiny offset keeps the gradient at 0 finite (sqrt' is infinite there), which matters
    where a masked-out entry would otherwise turn 0 * inf into NaN.
    """
    return ((x * x).sum(-1) + 1e-30) ** 0.5


def triangulate_dlt(points_2d: Array, proj_matrices: Array, weights: Array | None = None) -> Array:
    """Weighted linear (DLT) triangulation, solved by eigen-decomposition of the normal matrix.

    points_2d (..., V, 2): image coordinates in the units of the matrices (undistorted px for
    ``K [R | t]``, normalised coordinates for ``[R | t]``); proj_matrices (..., V, 3, 4);
    weights (..., V) >= 0 (default 1), each view's two DLT rows are scaled to unit norm and
    then by its weight. Returns (..., 3) world mm; NaN with fewer than 2 usable views.
    The world is re-centred and scaled on the usable cameras' centres first, so the system
    stays well conditioned whatever the units.
    """
    xp = array_module(points_2d)
    out_dtype = _result_dtype(points_2d) if xp is torch else np.float64
    if weights is None:
        weights = xp.ones_like(points_2d[..., 0])
    pts, P, w = _as_float64(points_2d, proj_matrices, weights)
    batch = tuple(xp.broadcast_shapes(pts.shape[:-1], P.shape[:-2], w.shape))
    pts = xp.broadcast_to(pts, (*batch, 2))
    P = xp.broadcast_to(P, (*batch, 3, 4))
    w = xp.broadcast_to(w, batch)
    n_views = batch[-1]

    usable = (w > 0) & xp.isfinite(pts).all(-1) & xp.isfinite(P).all(-1).all(-1)
    # Unusable views get harmless stand-ins so that their NaN cannot reach the others.
    P = xp.where(usable[..., None, None], P, _const(np.eye(3, 4), P))
    pts = xp.where(usable[..., None], pts, 0.0)
    w = xp.where(usable, w, 0.0)
    u = xp.where(usable, _const(1.0, w), 0.0)
    n = u.sum(-1)
    enough = n >= 2

    # Conditioning: X = c + s * X' with c, s the centroid and spread of the camera centres.
    M, p4 = P[..., :3], P[..., 3:]
    centres = -xp.linalg.solve(M, p4)[..., 0]  # (..., V, 3)
    n1 = xp.where(n > 0, n, 1.0)
    c = (u[..., None] * centres).sum(-2) / n1[..., None]
    s = (u * _norm(centres - c[..., None, :])).sum(-1) / n1
    s = xp.where(s > 1e-12, s, 1.0)
    P = xp.concatenate([M * s[..., None, None, None], M @ c[..., None, :, None] + p4], -1)

    # DLT rows x P3 - P1 and y P3 - P2 of every view: (..., V, 2, 4).
    rows = pts[..., :, None] * P[..., 2:3, :] - P[..., :2, :]
    norms = _norm(rows)[..., None]
    rows = rows / xp.where(norms > 1e-300, norms, 1.0) * w[..., None, None]
    A = rows.reshape(*batch[:-1], 2 * n_views, 4)
    normal = xp.swapaxes(A, -1, -2) @ A  # (..., 4, 4)
    # A distinct-eigenvalue stand-in where the answer is NaN anyway keeps eigh's gradient finite.
    stand_in = _const(np.diag([4.0, 3.0, 2.0, 1.0]), normal)  # its solution: X = c
    normal = xp.where(enough[..., None, None], normal, stand_in)
    _, vecs = xp.linalg.eigh(normal)
    v = vecs[..., :, 0]  # eigenvector of the smallest eigenvalue
    X = c + s[..., None] * v[..., :3] / v[..., 3:]
    X = xp.where(enough[..., None], X, float("nan"))
    return X.to(out_dtype) if xp is torch else X


def triangulate(
    points_px: Array, K: Array, dist: Array, R: Array, t: Array, weights: Array | None = None
) -> Array:
    """Triangulate from distorted cameras: undistort, then :func:`triangulate_dlt`.

    points_px (..., V, 2) px in each view's original image; K (..., V, 3, 3), dist (..., V, 5),
    R (..., V, 3, 3), t (..., V, 3) mm (the camera arrays keep their V axis); weights
    (..., V) >= 0 (default 1). Returns (..., 3) world mm; NaN with fewer than 2 usable views.
    """
    out_dtype = _result_dtype(points_px) if isinstance(points_px, torch.Tensor) else None
    points_px, K, dist, R, t = _as_float64(points_px, K, dist, R, t)
    xy = undistort_points(points_px[..., None, :], K, dist)[..., 0, :]
    X = triangulate_dlt(xy, array_module(R).concatenate([R, t[..., None]], -1), weights)
    return X if out_dtype is None else X.to(out_dtype)


def reprojection_errors(
    points_3d: Array, points_px: Array, K: Array, dist: Array, R: Array, t: Array
) -> Array:
    """(..., V) px distance between the projection of points_3d (..., 3) world mm and
    points_px (..., V, 2) px; cameras (..., V, ...). Inf where the point is behind a camera.
    """
    xp = array_module(points_3d)
    X = points_3d[..., None, None, :]  # (..., 1, 1, 3): one point seen by every view
    err = _norm(project_points(X, K, dist, R, t)[..., 0, :] - points_px)
    return xp.where(depth(X, R, t)[..., 0] > 0, err, float("inf"))


def triangulate_robust(
    points_px: Array,
    K: Array,
    dist: Array,
    R: Array,
    t: Array,
    weights: Array | None = None,
    threshold_px: float = 20.0,
) -> tuple[Array, Array]:
    """Triangulation that rejects inconsistent views (gross detector errors, swapped people).

    Every pair of usable views proposes a point (exhaustive RANSAC, O(V^2) hypotheses, all in
    one batched DLT); the proposal with the lowest truncated squared reprojection error (MSAC)
    over all usable views wins; views within ``threshold_px`` (original-image px) of it are
    inliers; the point is re-triangulated from the inliers with their weights, the inlier set
    is refreshed once from that point and the point re-triangulated again.
    Arguments as for :func:`triangulate`. Returns (points (..., 3) world mm, inliers (..., V)
    bool); NaN where fewer than 2 views agree.
    """
    xp = array_module(points_px)
    out_dtype = _result_dtype(points_px) if xp is torch else None
    if weights is None:
        weights = xp.ones_like(points_px[..., 0])
    points_px, K, dist, R, t, weights = _as_float64(points_px, K, dist, R, t, weights)
    batch = tuple(xp.broadcast_shapes(points_px.shape[:-1], weights.shape, K.shape[:-2],
                                      R.shape[:-2]))  # fmt: skip
    points_px = xp.broadcast_to(points_px, (*batch, 2))
    weights = xp.broadcast_to(weights, batch)
    usable = (weights > 0) & xp.isfinite(points_px).all(-1)
    n_views = batch[-1]
    xy = undistort_points(points_px[..., None, :], K, dist)[..., 0, :]
    Rt = xp.concatenate([R, t[..., None]], -1)

    def with_inliers(inliers: Array) -> Array:
        return triangulate_dlt(xy, Rt, xp.where(inliers, weights, 0.0))

    if n_views < 2:
        X = with_inliers(xp.zeros_like(usable))
        return (X if out_dtype is None else X.to(out_dtype)), xp.zeros_like(usable)

    # Choosing the inliers is discrete: only the final DLT needs a gradient.
    with torch.no_grad() if xp is torch else contextlib.nullcontext():
        pairs = np.array(list(combinations(range(n_views), 2)))  # (Q, 2)
        select = np.zeros((len(pairs), n_views))
        select[np.arange(len(pairs))[:, None], pairs] = 1.0
        w_q = weights[..., None, :] * _const(select, weights)  # (..., Q, V): one pair each
        X_q = triangulate_dlt(xy[..., None, :, :], Rt[..., None, :, :, :], w_q)  # (..., Q, 3)
        cams = (K[..., None, :, :, :], dist[..., None, :, :], R[..., None, :, :, :],
                t[..., None, :, :])  # fmt: skip
        err = reprojection_errors(X_q, points_px[..., None, :, :], *cams)  # (..., Q, V)
        err = xp.where(xp.isfinite(err), err, float("inf"))
        thr2 = threshold_px**2
        err2 = xp.where(err * err < thr2, err * err, thr2)
        cost = xp.where(usable[..., None, :], err2, 0.0).sum(-1)  # (..., Q)
        best = xp.argmin(cost, -1)[..., None, None]  # (..., 1, 1)
        take = np.take_along_axis if xp is np else torch.take_along_dim
        inliers = take((err < threshold_px) & usable[..., None, :], best, -2)[..., 0, :]

        X = with_inliers(inliers)
        refreshed = (reprojection_errors(X, points_px, K, dist, R, t) < threshold_px) & usable
        keep = refreshed.sum(-1) >= 2
        inliers = xp.where(keep[..., None], refreshed, inliers)  # (..., V)
    X = with_inliers(inliers)
    return (X if out_dtype is None else X.to(out_dtype)), inliers
