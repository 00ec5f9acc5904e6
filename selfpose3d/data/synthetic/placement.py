"""Where people may stand: inside the capture space, or outside it but still in view.

Floor positions are (x, y) in mm, model frame. Samplers draw from a NumPy Generator and return
None when no position satisfies the constraints after a bounded number of tries.
"""

from __future__ import annotations

import numpy as np

from selfpose3d.data.synthetic.rigs import Rig

WALL_MARGIN = 350.0  # mm; nobody stands closer to a wall (half a body width + clearance)
CAMERA_CLEARANCE = 1200.0  # mm; nobody stands this close to a camera's foot point
TRIES = 60


def _clear(xy: np.ndarray, others: np.ndarray, min_dist: float) -> bool:
    others = np.asarray(others, dtype=np.float64).reshape(-1, 2)
    return others.size == 0 or bool(np.min(np.linalg.norm(others - xy, axis=1)) >= min_dist)


def _free_floor(rig: Rig, xy: np.ndarray) -> bool:
    cams = np.array([c.center[:2] for c in rig.cameras])
    return bool(rig.environment.walkable(xy, WALL_MARGIN)) and _clear(xy, cams, CAMERA_CLEARANCE)


def sample_inside(
    rng: np.random.Generator, rig: Rig, margin: float, others: np.ndarray, min_dist: float,
    near: np.ndarray | None = None, max_walk: float = 3500.0,
) -> np.ndarray | None:
    """A floor point inside the capture space shrunk by ``margin`` mm, ``min_dist`` mm from
    every point of ``others`` (N, 2); if ``near`` is given, at most ``max_walk`` mm from it."""
    half = rig.space_size[:2] / 2 - margin
    for _ in range(TRIES):
        xy = rig.space_center[:2] + rng.uniform(-half, half)
        if near is not None and np.linalg.norm(xy - near) > max_walk:
            continue
        if _free_floor(rig, xy) and _clear(xy, others, min_dist):
            return xy
    return None


def sample_outside(
    rng: np.random.Generator, rig: Rig, gap: tuple[float, float], others: np.ndarray,
    min_dist: float,
) -> np.ndarray | None:
    """A floor point outside the capture space, ``gap`` = (min, max) mm beyond its edge, on
    free floor, ``min_dist`` mm from ``others``."""
    half = rig.space_size[:2] / 2
    for _ in range(TRIES):
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        # Distance from the centre to the box edge along ``direction``.
        edge = np.min(half / np.maximum(np.abs(direction), 1e-9))
        xy = rig.space_center[:2] + direction * (edge + rng.uniform(*gap))
        if rig.in_space_xy(xy, -gap[0] + 1.0):
            continue  # a corner direction can land too close to the box
        if _free_floor(rig, xy) and _clear(xy, others, min_dist):
            return xy
    return None


def views_seeing(rig: Rig, points: np.ndarray, min_share: float = 1.0) -> int:
    """How many cameras see at least ``min_share`` of ``points`` (N, 3) mm inside the image."""
    count = 0
    for cam in rig.cameras:
        cam_pts = points @ cam.R.T + cam.t
        uv = cam.project(points)
        inside = (cam_pts[:, 2] > 100) & (uv[:, 0] >= 0) & (uv[:, 1] >= 0) \
            & (uv[:, 0] <= cam.width - 1) & (uv[:, 1] <= cam.height - 1)
        # A point far outside the field of view can fold back into the image through the
        # distortion polynomial: require the undistorted direction to be in view as well.
        xy = cam_pts[:, :2] / np.maximum(cam_pts[:, 2:], 1e-6)
        fov = np.abs(xy) <= np.array([cam.width, cam.height]) / np.diag(cam.K)[:2] * 0.75
        count += bool(np.mean(inside & fov.all(axis=1)) >= min_share)
    return count
