"""The capture space of a rig: the box of floor positions its cameras see together, and a
model config fitted to it (world mm, z up; see :mod:`selfpose3d.data.rigs` for the cameras)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from selfpose3d.geometry.camera import Camera, project_points, stack_cameras
from selfpose3d.models.config import ModelConfig

_AIM_REACH = 10_000.0  # mm: farthest aim point of a camera in the capture-space footprint
_CHUNK_POINTS = 1_000_000  # camera x point projections per chunk of the capture-space search


def capture_space(
    cameras: Sequence[Camera],
    *,
    floor_z: float = 0.0,
    height: float = 2000.0,
    min_views: int = 2,
    step: float = 100.0,
    margin: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The axis-aligned box (centre (3,), size (3,), world mm) that ``min_views`` cameras see.

    A floor position (x, y) belongs to the capture region when at least ``min_views`` cameras
    see it both on the floor (z = floor_z) and at mid-body height (z = floor_z + height / 2):
    in front of the camera, inside the image (distortion included) and before the lens
    model folds back. The search is bounded by the cameras' footprint (people stand inside a
    ring of cameras, or in front of a wall of them as far as the cameras are behind the point
    they aim at): the convex hull of the camera centres and of their mirror images through
    the mean point where the optical axes cross mid-body height, grown by ``margin`` mm (when
    the footprint is a line, its square bounding box). So rays grazing the floor towards the
    horizon do not stretch the box.
    The box is the region's bounding box rounded outwards to ``step`` mm; in z it spans
    ``height`` from 0.1 * height below the floor (the paper's 2 m at z = 800 mm).
    """
    if not 1 <= min_views <= len(cameras):
        raise ValueError(f"min_views = {min_views}: must be between 1 and the {len(cameras)} "
                         f"cameras")  # fmt: skip
    if step <= 0 or height <= 0 or margin < 0:
        raise ValueError("capture space: step and height must be > 0 mm, margin >= 0 mm")
    footprint = _footprint(cameras, floor_z + height / 2)  # (2V, 2)
    spacing = step / 2
    # A square around the footprint: a line of cameras (two facing each other) has no area.
    mid = (footprint.min(0) + footprint.max(0)) / 2
    half = (footprint.max(0) - footprint.min(0)).max() / 2 + margin
    lo, hi = mid - half, mid + half
    gx, gy = np.meshgrid(np.arange(lo[0], hi[0] + spacing, spacing),
                         np.arange(lo[1], hi[1] + spacing, spacing), indexing="ij")  # fmt: skip
    grid_xy = np.stack([gx.ravel(), gy.ravel()], -1)  # (G, 2)
    grid_xy = grid_xy[_near_hull(grid_xy, footprint, margin)]
    zs = np.array([floor_z, floor_z + height / 2])
    points = np.concatenate(
        [np.broadcast_to(grid_xy[None], (2, len(grid_xy), 2)),
         np.broadcast_to(zs[:, None, None], (2, len(grid_xy), 1))], -1,
    ).reshape(-1, 3)  # fmt: skip  (2G, 3): the floor plane, then mid-body height
    views = _view_counts(points, list(cameras)).reshape(2, -1)  # (2, G)
    seen_xy = grid_xy[(views >= min_views).all(0)]
    if not len(seen_xy):
        raise ValueError(f"no floor position is seen by {min_views} cameras at z = {floor_z:g} "
                         f"and {floor_z + height / 2:g} mm: check the calibration's up axis and "
                         f"translation unit (up, unit)")  # fmt: skip
    lo3 = np.array([*seen_xy.min(0), floor_z - 0.1 * height])
    hi3 = np.array([*seen_xy.max(0), floor_z + 0.9 * height])
    lo3, hi3 = np.floor(lo3 / step + 1e-9) * step, np.ceil(hi3 / step - 1e-9) * step
    return (lo3 + hi3) / 2, hi3 - lo3


def _view_counts(points: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    """(N, 3) world mm -> (N,) how many cameras see each point, in chunks of cameras so that
    a whole Panoptic calibration (500+ cameras) does not hold (V, N, 3) arrays at once."""
    per_chunk = max(1, _CHUNK_POINTS // max(len(points), 1))
    counts = np.zeros(len(points), dtype=np.int64)
    for i in range(0, len(cameras), per_chunk):
        counts += visible(points, stack_cameras(cameras[i : i + per_chunk])).sum(0)
    return counts


def visible(points: np.ndarray, cams: dict[str, np.ndarray]) -> np.ndarray:
    """points (N, 3) world mm, cams from ``stack_cameras`` (V) -> (V, N) bool: in the image.

    A point counts when it is in front of the camera, projects inside the image (pixel
    centres from 0 to size - 1, +-0.5) and lies inside the radius where the radial
    distortion still grows (beyond it the polynomial folds far-away rays back into the image).
    """
    R, t = cams["R"], cams["t"]
    cam = points @ R.swapaxes(-1, -2) + t[:, None, :]  # (V, N, 3)
    z = cam[..., 2]
    front = z > 1.0
    r2 = (cam[..., :2] ** 2).sum(-1) / np.clip(z, 1e-6, None) ** 2  # (V, N)
    uv = project_points(points, cams["K"], cams["dist"], R, t)  # (V, N, 2)
    size = cams["size"][:, None, :]
    inside = ((uv >= -0.5) & (uv <= size - 0.5)).all(-1)
    return front & inside & (r2 < _fold_radius2(cams["dist"])[:, None])


def _fold_radius2(dist: np.ndarray) -> np.ndarray:
    """(V, 5) distortion -> (V,) squared normalised radius where r (1 + k1 r^2 + k2 r^4 + k3 r^6)
    stops increasing (inf if never)."""
    out = np.full(len(dist), np.inf)
    for v, (k1, k2, _, _, k3) in enumerate(dist):  # V small polynomial roots, not a hot loop
        # d/dr of the radial model, as a polynomial in s = r^2.
        roots = np.roots([7 * k3, 5 * k2, 3 * k1, 1.0]) if any((k1, k2, k3)) else []
        real = [r.real for r in roots if abs(r.imag) < 1e-12 and r.real > 0]
        if real:
            out[v] = min(real)
    return out


def _footprint(cameras: Sequence[Camera], aim_z: float) -> np.ndarray:
    """(2V, 2) floor positions, mm: the camera centres and their mirror images through the
    rig's centre of attention, the mean point where the optical axes cross z = aim_z (an
    axis that is level, points up or crosses farther than ``_AIM_REACH`` is clipped there).

    A ring of cameras mirrors onto itself; cameras on one wall add the opposite side of the
    area they look at.
    """
    centres = np.stack([c.center for c in cameras])  # (V, 3)
    axes = np.stack([c.R[2] for c in cameras])  # (V, 3) optical axes in world coordinates
    horizontal = np.linalg.norm(axes[:, :2], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (aim_z - centres[:, 2]) / axes[:, 2]  # distance along the axis to the plane
    reach = np.where(np.isfinite(s) & (s > 0), s * horizontal, np.inf).clip(max=_AIM_REACH)
    aims = centres[:, :2] + reach[:, None] * axes[:, :2] / np.maximum(horizontal, 1e-12)[:, None]
    return np.concatenate([centres[:, :2], 2 * aims.mean(0) - centres[:, :2]])


def _near_hull(xy: np.ndarray, footprint: np.ndarray, margin: float) -> np.ndarray:
    """(G, 2) -> (G,) bool: within ``margin`` mm of the convex hull of ``footprint`` (F, 2)
    (edges pushed out by ``margin``); all True when the points are collinear."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        eq = ConvexHull(footprint).equations  # (F, 3): unit normal n, offset d; n.x + d <= 0
    except (QhullError, ValueError):
        return np.ones(len(xy), dtype=bool)
    return (xy @ eq[:, :2].T + eq[:, 2]).max(1) <= margin


def fit_space(model_cfg: ModelConfig, cameras: Sequence[Camera], **kw: Any) -> ModelConfig:
    """A copy of ``model_cfg`` with its root space set to :func:`capture_space` (``kw``).

    root_bins keep the preset's voxel size: bins = ceil(size / old voxel size) + 1 per axis,
    so voxels are at most as large as the preset's (spacing size / (bins - 1), see
    ``models/config.py``).
    """
    center, size = capture_space(cameras, **kw)
    voxel = np.asarray(model_cfg.space_size) / (np.asarray(model_cfg.root_bins) - 1)
    bins = np.ceil(size / voxel - 1e-6).astype(int) + 1
    return dataclasses.replace(model_cfg, space_center=center.tolist(),
                               space_size=size.tolist(), root_bins=bins.tolist())  # fmt: skip


def up_axis_warning(cameras: Sequence[Camera]) -> str | None:
    """A hint when the cameras' image "down" does not point down (-z) in the world, which is
    what a wrong ``up`` gives for cameras mounted upright; None when it does."""
    down = np.mean([c.R[1] for c in cameras], axis=0)  # image y axis in world coordinates
    if down[2] < -0.3:
        return None
    return (f"the cameras' image 'down' points along {np.round(down, 2).tolist()} in the "
            f"world, not -z: the calibration's up axis may differ (try another up: z, y, -y)")
