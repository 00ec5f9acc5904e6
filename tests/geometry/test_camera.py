"""Camera model and projection: agreement with OpenCV, torch gradients, validation, resizing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from selfpose3d.geometry.camera import (
    Camera,
    depth,
    project_points,
    stack_cameras,
    world_to_camera,
)


def opencv_project(points: np.ndarray, K, dist, R, t) -> np.ndarray:
    rvec, _ = cv2.Rodrigues(R)
    uv, _ = cv2.projectPoints(points.reshape(-1, 1, 3), rvec, t, K, dist)
    return uv.reshape(-1, 2)


def make_camera(rig: dict[str, np.ndarray], v: int = 0, **overrides) -> Camera:
    fields = {"name": f"cam{v}", "K": rig["K"][v], "dist": rig["dist"][v], "R": rig["R"][v],
              "t": rig["t"][v], "width": 1920, "height": 1080}  # fmt: skip
    return Camera(**(fields | overrides))


def test_projection_matches_opencv_numpy_batched(rng, make_rig, make_points):
    rig = make_rig(rng, 4)
    X_N3 = make_points(rng, 200)
    uv_VN2 = project_points(X_N3, rig["K"], rig["dist"], rig["R"], rig["t"])
    assert uv_VN2.shape == (4, 200, 2)
    for v in range(4):
        ref = opencv_project(X_N3, rig["K"][v], rig["dist"][v], rig["R"][v], rig["t"][v])
        np.testing.assert_allclose(uv_VN2[v], ref, atol=1e-4, rtol=0)


def test_projection_matches_opencv_torch_batched(rng, make_rig, make_points):
    rig = make_rig(rng, 3)
    X_VN3 = np.stack([make_points(rng, 50) for _ in range(3)])  # different points per camera
    tens = {k: torch.from_numpy(a) for k, a in rig.items()}
    uv_VN2 = project_points(torch.from_numpy(X_VN3), tens["K"], tens["dist"], tens["R"],
                            tens["t"])  # fmt: skip
    assert isinstance(uv_VN2, torch.Tensor) and uv_VN2.shape == (3, 50, 2)
    for v in range(3):
        ref = opencv_project(X_VN3[v], rig["K"][v], rig["dist"][v], rig["R"][v], rig["t"][v])
        np.testing.assert_allclose(uv_VN2[v].numpy(), ref, atol=1e-4, rtol=0)


def test_projection_of_a_single_point_keeps_the_camera_axis(rng, make_rig):
    rig = make_rig(rng, 3)
    X = np.array([100.0, -200.0, 900.0])
    uv_V2 = project_points(X, rig["K"], rig["dist"], rig["R"], rig["t"])
    assert uv_V2.shape == (3, 2)
    for v in range(3):
        ref = opencv_project(X, rig["K"][v], rig["dist"][v], rig["R"][v], rig["t"][v])
        np.testing.assert_allclose(uv_V2[v], ref[0], atol=1e-9)
    cam = make_camera(rig, 1)
    assert cam.project(X).shape == (2,)
    assert cam.project(np.zeros((2, 5, 3))).shape == (2, 5, 2)


def test_projection_gradcheck_torch(rng, make_rig, make_points):
    rig = make_rig(rng, 2)
    args = [torch.from_numpy(make_points(rng, 3))] + [
        torch.from_numpy(rig[k]) for k in ("K", "dist", "R", "t")
    ]
    args = [a.clone().requires_grad_(True) for a in args]
    assert torch.autograd.gradcheck(project_points, args, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_depth_sign_and_centre(rng, make_rig):
    cam = make_camera(make_rig(rng, 1))
    forward = cam.R[2]  # the optical axis in world coordinates
    ahead = cam.center + 2000.0 * forward
    behind = cam.center - 500.0 * forward
    d = depth(np.stack([ahead, behind]), cam.R, cam.t)
    np.testing.assert_allclose(d, [2000.0, -500.0], atol=1e-9)
    assert depth(ahead, cam.R, cam.t).shape == ()
    np.testing.assert_allclose(world_to_camera(cam.center[None], cam.R, cam.t), 0.0, atol=1e-9)
    # The principal point is where the optical axis lands.
    np.testing.assert_allclose(cam.project(ahead), cam.K[:2, 2], atol=1e-9)


def render_dot(width: int, height: int, uv: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    """A Gaussian blob centred on uv px (pixel centres at integer coordinates), float32."""
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    return np.exp(-((u - uv[0]) ** 2 + (v - uv[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def centroid(image: np.ndarray) -> np.ndarray:
    v, u = np.mgrid[: image.shape[0], : image.shape[1]]
    return np.array([(u * image).sum(), (v * image).sum()]) / image.sum()


@pytest.mark.parametrize(("sx", "sy"), [(0.5, 0.5), (0.25, 0.25), (1.5, 1.25), (0.6, 0.8)])
def test_scaled_camera_follows_cv2_resize(rng, make_rig, sx, sy):
    base = make_camera(make_rig(rng, 1))
    # A small image keeps the rendering cheap; the camera model does not care about the size.
    small = base.scaled(1 / 6, 1 / 6)
    X = small.center + 3000.0 * small.R[2] + small.R[0] * 250.0 + small.R[1] * 120.0
    uv = small.project(X)
    image = render_dot(small.width, small.height, uv, sigma=4.0)
    resized = cv2.resize(image, None, fx=sx, fy=sy, interpolation=cv2.INTER_LINEAR)
    scaled = small.scaled(sx, sy)
    assert (scaled.width, scaled.height) == (resized.shape[1], resized.shape[0])
    np.testing.assert_allclose(scaled.project(X), centroid(resized), atol=0.03)
    # The pixel-centre rule itself, exactly.
    np.testing.assert_allclose(scaled.project(X), (uv + 0.5) * [sx, sy] - 0.5, atol=1e-9)


def test_validation_errors(rng, make_rig):
    rig = make_rig(rng, 1)
    K0 = rig["K"][0].copy()
    K0[0, 0] = 0.0
    with pytest.raises(ValueError, match=r"camera cam0: focal length must be > 0"):
        make_camera(rig, K=K0)
    with pytest.raises(ValueError, match="R is not a rotation matrix"):
        make_camera(rig, R=rig["R"][0] * 1.1)
    with pytest.raises(ValueError, match="R is not a rotation matrix"):
        make_camera(rig, R=-rig["R"][0])  # a reflection: orthonormal, det = -1
    with pytest.raises(ValueError, match="NaN or inf"):
        make_camera(rig, t=[0.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="NaN or inf"):
        make_camera(rig, dist=[np.inf, 0, 0, 0, 0])
    K1 = rig["K"][0].copy()
    K1[2] = [0.0, 1e-3, 1.0]
    with pytest.raises(ValueError, match=r"K's last row must be \[0, 0, 1\]"):
        make_camera(rig, K=K1)
    with pytest.raises(ValueError, match="expected <= 5 distortion coefficients"):
        make_camera(rig, dist=np.zeros(8))
    with pytest.raises(ValueError, match="image size must be positive"):
        make_camera(rig, width=0)


def test_short_distortion_is_zero_padded_and_dict_round_trip(rng, make_rig):
    rig = make_rig(rng, 2)
    cam = make_camera(rig, dist=[-0.2, 0.1])
    np.testing.assert_array_equal(cam.dist, [-0.2, 0.1, 0.0, 0.0, 0.0])
    again = Camera.from_dict(cam.to_dict())
    assert again == cam
    assert again != make_camera(rig, 1)
    stacked = stack_cameras([cam, make_camera(rig, 1)])
    assert {k: v.shape for k, v in stacked.items()} == {
        "K": (2, 3, 3), "dist": (2, 5), "R": (2, 3, 3), "t": (2, 3), "size": (2, 2)
    }  # fmt: skip
    np.testing.assert_array_equal(stacked["size"][0], [1920, 1080])
