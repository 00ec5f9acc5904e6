"""Projection of every point of every person into every view in one call, made safe for points
far outside a view.

The OpenCV distortion polynomial is not monotonic: a point well outside the field of view can
fold back into the image. Beyond the radius where the polynomial stops increasing, points are
projected with the radial factor frozen at that radius, which is continuous and monotonic, so
such points land outside the image as they should.

Shape legend: V views, M points, ``...`` leading dimensions (frames, people).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selfpose3d.geometry.camera import Camera, project_points, stack_cameras, world_to_camera

NEAR = 50.0  # mm; points closer to (or behind) the camera plane are not drawn or detected


@dataclass(frozen=True)
class Views:
    """Stacked calibration of V cameras (world mm -> px of the written image)."""

    K: np.ndarray  # (V, 3, 3)
    dist: np.ndarray  # (V, 5)
    R: np.ndarray  # (V, 3, 3)
    t: np.ndarray  # (V, 3)
    size: np.ndarray  # (V, 2) width, height px
    r_max: np.ndarray  # (V,) normalised radius up to which the distortion is monotonic

    @classmethod
    def of(cls, cameras: list[Camera]) -> Views:
        s = stack_cameras(cameras)
        return cls(s["K"], s["dist"], s["R"], s["t"], s["size"],
                   np.array([_monotonic_radius(c.dist) for c in cameras]))  # fmt: skip

    @property
    def focal(self) -> np.ndarray:
        """(V,) mean focal length, px."""
        return (self.K[:, 0, 0] + self.K[:, 1, 1]) / 2

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """points (..., M, 3) world mm -> uv (..., V, M, 2) px, depth (..., V, M) mm."""
        pts = points[..., None, :, :]  # (..., 1, M, 3): broadcast over the views
        cam = world_to_camera(pts, self.R, self.t)
        uv = project_points(pts, self.K, self.dist, self.R, self.t)
        z = cam[..., 2]
        xy = cam[..., :2] / np.maximum(z, 1e-6)[..., None]
        r = np.linalg.norm(xy, axis=-1)
        far = r > self.r_max[:, None]
        if far.any():
            k1, k2, _, _, k3 = (self.dist[:, i, None] for i in range(5))
            r2 = self.r_max[:, None] ** 2
            radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
            lin = (xy * radial[..., None]) @ np.swapaxes(self.K[:, :2, :2], -1, -2) \
                + self.K[:, None, :2, 2]
            uv = np.where(far[..., None], lin, uv)
        return uv, z

    def inside(self, uv: np.ndarray, z: np.ndarray, view_axis: int = -2) -> np.ndarray:
        """Bool mask of the shape of ``z``: in front of the camera and inside the image.

        ``view_axis`` is the axis of ``z`` that indexes the views (-2 for ``project``'s
        output, -3 for (V, P, N) arrays).
        """
        shape = [1] * z.ndim
        shape[view_axis] = len(self.size)
        w, h = self.size[:, 0].reshape(shape), self.size[:, 1].reshape(shape)
        u, v = uv[..., 0], uv[..., 1]
        return (z > NEAR) & (u >= -0.5) & (v >= -0.5) & (u <= w - 0.5) & (v <= h - 0.5)


def _monotonic_radius(dist: np.ndarray, limit: float = 3.0) -> float:
    """Largest normalised radius (<= limit) up to which r * radial(r) increases."""
    k1, k2, _, _, k3 = dist
    r = np.linspace(1e-3, limit, 3000)
    r2 = r * r
    slope = 1 + 3 * k1 * r2 + 5 * k2 * r2**2 + 7 * k3 * r2**3
    bad = np.flatnonzero(slope <= 0.05)
    return float(r[bad[0]] * 0.95) if bad.size else limit
