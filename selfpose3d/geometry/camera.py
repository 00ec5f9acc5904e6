"""Pinhole cameras with OpenCV lens distortion, and world -> pixel projection.

Conventions (all geometry in this package):
- world frame: millimetres, z up (Panoptic data are converted on read);
- camera frame: ``X_cam = R @ X_world + t`` (R world->camera, t in mm), z forward;
- pixels: OpenCV convention, the centre of the top-left pixel is (0, 0);
- distortion: OpenCV's (k1, k2, p1, p2, k3), the model of ``cv2.projectPoints``.

Every array function here takes NumPy arrays or torch tensors (not mixed) and returns the
same kind; the torch path is differentiable.

Shape legend: V views, N points, ``...`` any leading batch dimensions (broadcast).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:
    import torch

Array: TypeAlias = "np.ndarray | torch.Tensor"


@dataclass(kw_only=True)
class Camera:
    """One calibrated camera. Arrays are float64 NumPy; units mm and px."""

    name: str
    K: np.ndarray  # (3, 3) intrinsics, px
    dist: np.ndarray  # (5,) k1, k2, p1, p2, k3
    R: np.ndarray  # (3, 3) world -> camera rotation
    t: np.ndarray  # (3,) world -> camera translation, mm
    width: int  # image size, px
    height: int
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. Panoptic panel/node

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.dist = np.asarray(self.dist, dtype=np.float64).reshape(-1)
        if self.dist.size < 5:
            self.dist = np.concatenate([self.dist, np.zeros(5 - self.dist.size)])
        elif self.dist.size > 5:
            raise ValueError(f"camera {self.name}: expected <= 5 distortion coefficients")
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)
        self.width, self.height = int(self.width), int(self.height)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on a calibration that cannot be a real camera."""
        arrays = (self.K, self.dist, self.R, self.t)
        if not all(np.isfinite(a).all() for a in arrays):
            raise ValueError(f"camera {self.name}: calibration holds NaN or inf")
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise ValueError(f"camera {self.name}: focal length must be > 0, K = {self.K.tolist()}")
        if not np.allclose(self.K[2], [0.0, 0.0, 1.0]):
            raise ValueError(f"camera {self.name}: K's last row must be [0, 0, 1], got {self.K[2]}")
        if not np.allclose(self.R @ self.R.T, np.eye(3), atol=1e-4) or np.linalg.det(self.R) < 0:
            raise ValueError(f"camera {self.name}: R is not a rotation matrix")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera {self.name}: image size must be positive")

    def __eq__(self, other: object) -> bool:
        # The generated dataclass __eq__ would call bool() on element-wise array comparisons.
        if not isinstance(other, Camera):
            return NotImplemented
        scalars = ("name", "width", "height", "extra")
        arrays = ("K", "dist", "R", "t")
        return all(getattr(self, a) == getattr(other, a) for a in scalars) and all(
            np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays
        )

    __hash__ = None  # mutable and compared by value

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world mm."""
        return -self.R.T @ self.t

    def scaled(self, sx: float, sy: float) -> Camera:
        """The same camera for an image resized by (sx, sy) (e.g. cv2.resize).

        Pixel centres map as ``u' = (u + 0.5) * sx - 0.5``, so the principal point moves
        by that rule and the focal lengths scale.
        """
        S = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
        return Camera(
            name=self.name, K=S @ self.K, dist=self.dist.copy(), R=self.R.copy(), t=self.t.copy(),
            width=round(self.width * sx), height=round(self.height * sy), extra=dict(self.extra),
        )  # fmt: skip

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world mm -> (..., 2) px in this camera's image, with distortion."""
        return project_points(points, self.K, self.dist, self.R, self.t)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "K": self.K.tolist(), "dist": self.dist.tolist(),
            "R": self.R.tolist(), "t": self.t.tolist(), "width": self.width,
            "height": self.height,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Camera:
        return cls(name=d["name"], K=d["K"], dist=d["dist"], R=d["R"], t=d["t"],
                   width=d["width"], height=d["height"])  # fmt: skip


def stack_cameras(cameras: list[Camera]) -> dict[str, np.ndarray]:
    """Stack V cameras into arrays K (V,3,3), dist (V,5), R (V,3,3), t (V,3), size (V,2) [w, h]."""
    return {
        "K": np.stack([c.K for c in cameras]),
        "dist": np.stack([c.dist for c in cameras]),
        "R": np.stack([c.R for c in cameras]),
        "t": np.stack([c.t for c in cameras]),
        "size": np.array([[c.width, c.height] for c in cameras], dtype=np.float64),
    }


def array_module(x: Array) -> Any:
    """The array module of ``x``: ``torch`` for tensors, else ``numpy``."""
    # torch is imported only when a tensor is seen: the NumPy path (readers, ingest
    # workers) should not pay for loading torch.
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


def world_to_camera(points: Array, R: Array, t: Array) -> Array:
    """(..., N, 3) world mm -> (..., N, 3) camera frame mm; R (..., 3, 3), t (..., 3)."""
    return points @ array_module(points).swapaxes(R, -1, -2) + t[..., None, :]


def distort_normalized(xy: Array, dist: Array) -> Array:
    """Apply OpenCV distortion to normalised image coordinates.

    xy: (..., N, 2) = (X/Z, Y/Z) in the camera frame; dist: (..., 5) = k1, k2, p1, p2, k3.
    Returns (..., N, 2) distorted normalised coordinates.
    """
    xp = array_module(xy)
    x, y = xy[..., 0], xy[..., 1]
    k1, k2, p1, p2, k3 = (dist[..., i : i + 1] for i in range(5))
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xp.stack([xd, yd], -1)


def project_points(
    points: Array, K: Array, dist: Array, R: Array, t: Array, eps: float = 1e-6
) -> Array:
    """Project world points to pixels; NumPy or torch (differentiable), batched.

    points: (..., N, 3) world mm, or a single point (3,);
    K (..., 3, 3), dist (..., 5), R (..., 3, 3), t (..., 3): leading dims broadcast with the
    points' leading dims, e.g. points (N, 3) and cameras (V, ...) give (V, N, 2).
    Returns (..., N, 2) px in the camera's image (pixel-centre convention), or (..., 2) for a
    single point. Points behind the camera get their depth clamped to ``eps`` (mm); use
    :func:`depth` to mask them.
    """
    xp = array_module(points)
    single = points.ndim == 1
    if single:
        points = points[None]
    cam = world_to_camera(points, R, t)
    z = cam[..., 2:3]
    z = xp.clip(z, eps, None) if xp is np else z.clamp(min=eps)
    xy = distort_normalized(cam[..., :2] / z, dist)
    uv = xy @ xp.swapaxes(K[..., :2, :2], -1, -2) + K[..., None, :2, 2]
    # Drop the point axis, not a camera batch axis: cameras (V, ...) give (V, 2).
    return uv[..., 0, :] if single else uv


def depth(points: Array, R: Array, t: Array) -> Array:
    """(..., N, 3) world mm -> (..., N) depth along the camera's optical axis, mm (> 0 in front).

    A single point (3,) gives (...) (one depth per camera).
    """
    if points.ndim == 1:
        return world_to_camera(points[None], R, t)[..., 0, 2]
    return world_to_camera(points, R, t)[..., 2]
