"""Voxel grids and the projection layer: multi-view 2D heatmaps -> 3D feature cubes.

Every voxel centre is projected into every view (pinhole + OpenCV distortion, world mm ->
original image px), moved into heatmap px by the view's 2x3 affine, and the heatmap is
sampled bilinearly there. A voxel's value is the mean over the views that see it, clamped to
[0, 1]. A view sees a voxel when the voxel is in front of the camera, projects inside the
original image, lands inside the heatmap after the affine, and lies inside the radius where the
lens distortion is still monotonic (beyond it, far-away points fold back into the image).

Pixel convention: the centre of the top-left pixel is (0, 0), so an image of width W covers
u in [-0.5, W - 0.5]; ``grid_sample(align_corners=True)`` puts pixel centres 0 and w - 1 at the
normalised coordinates -1 and +1, the same convention.

Grids: ``bins`` voxel centres per axis from ``center - size / 2`` to ``center + size / 2``
inclusive (VoxelPose's convention), flattened x-major: index = (ix * Y + iy) * Z + iz.

Shape legend: B samples, V views, C channels, (h, w) heatmap px, N points (voxels),
K proposals, (X, Y, Z) voxels per axis.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfpose3d.geometry.camera import world_to_camera

# Normalised radius^2 up to which the distortion's monotonicity is checked; points beyond it
# are never used (r = 3 is 72 deg off axis, beyond any camera this lens model describes well).
_MAX_R2 = 9.0
_R2_SAMPLES = 512
# grid_sample coordinate of a point no view sees: beyond every pixel, so "zeros" padding
# samples exactly 0 there.
_UNSEEN = -4.0


@dataclass
class CameraBatch:
    """The calibrated cameras of a batch of multi-view samples; units mm and px.

    ``size`` is each view's original image size (w, h) px, the frame the camera projects into
    (before the per-view affine that maps it to heatmap px).
    """

    K: torch.Tensor  # (B, V, 3, 3) intrinsics, px
    dist: torch.Tensor  # (B, V, 5) k1, k2, p1, p2, k3
    R: torch.Tensor  # (B, V, 3, 3) world -> camera
    t: torch.Tensor  # (B, V, 3) world -> camera, mm
    size: torch.Tensor  # (B, V, 2) original image (w, h), px

    def __post_init__(self) -> None:
        b, v = self.K.shape[:2]
        expected = {
            "K": (b, v, 3, 3),
            "dist": (b, v, 5),
            "R": (b, v, 3, 3),
            "t": (b, v, 3),
            "size": (b, v, 2),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"cameras.{name}: expected shape {shape} (batch, views, ...), "
                    f"got {tuple(getattr(self, name).shape)}"
                )

    @classmethod
    def from_mapping(
        cls,
        cameras: Mapping[str, Any],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> CameraBatch:
        """From a dict with keys K, dist, R, t, size (tensors or arrays, batch dims first)."""
        names = ("K", "dist", "R", "t", "size")
        missing = [k for k in names if k not in cameras]
        if missing:
            raise ValueError(f"cameras: missing {missing} (need {list(names)})")
        return cls(**{k: torch.as_tensor(cameras[k], dtype=dtype, device=device) for k in names})

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> CameraBatch:
        return CameraBatch(
            K=self.K.to(device, dtype),
            dist=self.dist.to(device, dtype),
            R=self.R.to(device, dtype),
            t=self.t.to(device, dtype),
            size=self.size.to(device, dtype),
        )

    def __getitem__(self, index: Any) -> CameraBatch:
        """Select samples (batch axis) or, with ``[:, views]``, views."""
        return CameraBatch(
            K=self.K[index],
            dist=self.dist[index],
            R=self.R[index],
            t=self.t[index],
            size=self.size[index],
        )

    @classmethod
    def cat(cls, batches: Sequence[CameraBatch]) -> CameraBatch:
        """Concatenate along the batch axis (e.g. two augmented versions in one call)."""
        names = ("K", "dist", "R", "t", "size")
        return cls(**{k: torch.cat([getattr(c, k) for c in batches]) for k in names})

    @property
    def batch_size(self) -> int:
        return self.K.shape[0]

    @property
    def num_views(self) -> int:
        return self.K.shape[1]

    def sample_keys(self) -> list[str]:
        """One hash per sample of all its views' calibration (the projection cache's key)."""
        arrays = [
            a.detach().to("cpu", torch.float64).numpy()
            for a in (self.K, self.dist, self.R, self.t, self.size)
        ]
        keys = []
        for b in range(self.batch_size):
            h = hashlib.blake2b(digest_size=16)
            for a in arrays:
                h.update(np.ascontiguousarray(a[b]).tobytes())
            keys.append(h.hexdigest())
        return keys


def voxel_axes(
    center: Sequence[float],
    size: Sequence[float],
    bins: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, ...]:
    """Voxel-centre coordinates along x, y, z: three tensors (X,), (Y,), (Z,) in mm."""
    return tuple(
        torch.linspace(c - s / 2, c + s / 2, n, device=device, dtype=dtype)
        for c, s, n in zip(center, size, bins, strict=True)
    )


def voxel_grid(
    center: Sequence[float],
    size: Sequence[float],
    bins: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(X*Y*Z, 3) voxel centres in mm, x-major (reshape to (X, Y, Z, 3) to index them)."""
    axes = voxel_axes(center, size, bins, device, dtype)
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def _max_monotonic_r2(dist: torch.Tensor) -> torch.Tensor:
    """(..., 5) -> (...,) the r^2 (normalised coordinates) up to which the radial distortion
    r * (1 + k1 r^2 + k2 r^4 + k3 r^6) increases with r; ``_MAX_R2`` if it does so throughout."""
    s = torch.linspace(0, _MAX_R2, _R2_SAMPLES, device=dist.device, dtype=dist.dtype)
    k1, k2, k3 = dist[..., 0:1], dist[..., 1:2], dist[..., 4:5]
    bad = 1 + s * (3 * k1 + s * (5 * k2 + s * 7 * k3)) <= 0  # d r_d / d r <= 0, (..., S)
    return torch.where(bad.any(-1), s[bad.int().argmax(-1)], s.new_tensor(_MAX_R2))


def inside_image(uv: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """uv (B, V, N, 2) px, image sizes (B, V, 2) (w, h) -> (B, V, N) bool: on a pixel.
    Any leading dimensions of uv work with sizes that broadcast against them, e.g. (2,)."""
    w, h = size[..., 0:1], size[..., 1:2]  # (B, V, 1)
    u, v = uv[..., 0], uv[..., 1]
    return (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)


def project_to_views(
    points: torch.Tensor, cameras: CameraBatch, eps: float = 1e-6, within_image: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into every view of their sample.

    points: (B, N, 3) world mm. Returns uv (B, V, N, 2) original image px and a mask
    (B, V, N) bool: in front of the camera, inside the distortion's monotonic radius (where
    the pixel is a faithful projection) and, with ``within_image``, inside the image. Where
    the point is not faithfully projected, uv is no projection (it may be inf); gradients
    stay finite wherever the points are.

    The same projection as :func:`selfpose3d.geometry.camera.project_points` (depth clamped
    to ``eps`` mm), written for the pose and root cubes' millions of points: the camera frame
    is computed once for the pixels and the mask, and x and y stay separate planes, so every
    operation is one pass over (B, V, N) with no (N, 2) x (2, 2) products.
    """
    x, y, z = world_to_camera(points[:, None], cameras.R, cameras.t).unbind(-1)  # (B, V, N)
    return camera_to_image(x, y, z, cameras, eps, within_image)


def grid_camera_frames(
    roots: torch.Tensor, axes: Sequence[torch.Tensor], cameras: CameraBatch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera-frame x, y, z (M, V, N) mm of regular grids of voxel centres around roots.

    roots (M, 3) world mm; axes the grid's (X,), (Y,), (Z,) offsets from its root in mm
    (:func:`voxel_axes`); cameras (M, V) those of each grid's sample. N = X*Y*Z, x-major as
    :func:`voxel_grid`. The grid is regular, so R (root + offset) + t is the camera-frame
    root plus one term per axis: broadcast sums instead of an (N, 3) x (3, 3) product per
    view, and each coordinate in its own plane, as :func:`camera_to_image` reads them.
    """
    R = cameras.R.permute(2, 3, 0, 1)  # (3 camera axes, 3 world axes, M, V)
    root = (cameras.R @ roots[:, None, :, None])[..., 0] + cameras.t  # (M, V, 3)
    ax = R[:, 0, ..., None] * axes[0]  # (3, M, V, X)
    ay = R[:, 1, ..., None] * axes[1]  # (3, M, V, Y)
    az = R[:, 2, ..., None] * axes[2] + root.permute(2, 0, 1)[..., None]  # (3, M, V, Z)
    cam = (ax[..., :, None, None] + ay[..., None, :, None]) + az[..., None, None, :]
    return cam.flatten(-3).unbind(0)  # (3, M, V, X, Y, Z) -> 3 x (M, V, N)


def camera_to_image(
    x: torch.Tensor,
    y: torch.Tensor,
    z: torch.Tensor,
    cameras: CameraBatch,
    eps: float = 1e-6,
    within_image: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The second half of :func:`project_to_views`: camera-frame coordinates x, y, z
    (B, V, N) mm of every view -> uv (B, V, N, 2) px and the mask (B, V, N)."""
    inv_z = z.clamp(min=eps).reciprocal()
    x, y = x * inv_z, y * inv_z
    k1, k2, p1, p2, k3 = cameras.dist[..., None].unbind(-2)  # each (B, V, 1)
    xx, yy = x * x, y * y
    r2 = xx + yy
    valid = (z > 0) & (r2 < _max_monotonic_r2(cameras.dist)[..., None])
    if x.requires_grad:
        # Far outside the faithful radius (a joint near the camera's plane: r^2 ~ 1e18) the
        # distortion polynomial overflows to inf, and a masked-out pixel then still sends
        # 0 * inf = NaN back into the pose. Such points are projected from the optical axis
        # instead; their pixels are not projections either way.
        x, y = torch.where(valid, x, 0.0), torch.where(valid, y, 0.0)
        xx, yy = x * x, y * y
        r2 = xx + yy
    xy = x * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * xy + p2 * (r2 + 2 * xx)
    yd = y * radial + p1 * (r2 + 2 * yy) + 2 * p2 * xy
    K = cameras.K[..., None]  # (B, V, 3, 3, 1)
    u = K[..., 0, 0, :] * xd + K[..., 0, 1, :] * yd + K[..., 0, 2, :]
    v = K[..., 1, 0, :] * xd + K[..., 1, 1, :] * yd + K[..., 1, 2, :]
    uv = torch.stack([u, v], -1)
    if within_image:  # not in place: torch.where above may have saved the mask
        valid = valid & inside_image(uv, cameras.size)
    return uv, valid


def to_heatmap_grid(
    uv: torch.Tensor, valid: torch.Tensor, affines: torch.Tensor, heatmap_size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Original px -> ``grid_sample`` coordinates in [-1, 1] of the heatmaps.

    uv (B, V, N, 2) px, valid (B, V, N), affines (B, V, 2, 3) original px -> heatmap px,
    heatmap_size (w, h). Returns grid (B, V, N, 2) and the mask restricted to points that land
    inside the heatmap. Masked-out points get grid ``_UNSEEN`` (far outside, finite), so no
    inf/NaN reaches the sampler and :func:`sample_views` reads 0 there. Leading dimensions
    broadcast: uv (M, V, N, 2) with affines (n, M, V, 2, 3) gives n versions of M cubes.
    """
    w, h = float(heatmap_size[0]), float(heatmap_size[1])
    # Heatmap px -> [-1, 1] (g = 2 px / (size - 1) - 1) folded into the affine; a heatmap px
    # in [-0.5, size - 0.5] is a g with |g| <= 1 + 1 / (size - 1).
    scale = affines.new_tensor([2.0 / (w - 1), 2.0 / (h - 1)])
    m = (affines * scale[:, None])[..., None]  # (..., 2, 3, 1)
    u, v = uv[..., 0], uv[..., 1]
    gx = m[..., 0, 0, :] * u + m[..., 0, 1, :] * v + (m[..., 0, 2, :] - 1.0)
    gy = m[..., 1, 0, :] * u + m[..., 1, 1, :] * v + (m[..., 1, 2, :] - 1.0)
    valid = valid & (gx.abs() <= 1.0 + 1.0 / (w - 1)) & (gy.abs() <= 1.0 + 1.0 / (h - 1))
    # Clamped to the border pixels' centres (what "border" padding does) where seen; far
    # outside where not, so that a "zeros"-padded sampler returns exactly 0 there. Per plane
    # before the stack: a masked fill of the interleaved (..., 2) grid is slower.
    gx, gy = (torch.where(valid, g.clamp_(-1.0, 1.0), _UNSEEN) for g in (gx, gy))
    return torch.stack([gx, gy], -1), valid


def sample_views(heatmaps: torch.Tensor, grid: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples averaged over the views that see each point, clamped to [0, 1].

    heatmaps (B, V, C, h, w), grid (B, V, N, 2) from :func:`to_heatmap_grid` (in [-1, 1]
    where valid), valid (B, V, N) -> (B, C, N). Points seen by no view get 0.
    Differentiable w.r.t. the heatmaps.
    """
    b, v, c, h, w = heatmaps.shape
    n = grid.shape[2]
    # The grid of :func:`to_heatmap_grid` is clamped to the heatmap where seen and far
    # outside where not: "zeros" padding then gives the border value or exactly 0, so the
    # views sum without a mask multiply over all C channels.
    samples = F.grid_sample(
        heatmaps.reshape(b * v, c, h, w),
        grid.reshape(b * v, 1, n, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    total = samples.reshape(b, v, c, n).sum(1)  # (B, C, N)
    count = valid.sum(1, dtype=heatmaps.dtype).clamp(min=1.0)[:, None]  # (B, 1, N)
    return total.div_(count).clamp_(0.0, 1.0)  # in place: the sum is a fresh tensor


def sample_points(
    heatmaps: torch.Tensor, points: torch.Tensor, cameras: CameraBatch, affines: torch.Tensor
) -> torch.Tensor:
    """heatmaps (B, V, C, h, w), points (B, N, 3) mm, affines (B, V, 2, 3) -> (B, C, N)."""
    uv, valid = project_to_views(points, cameras)
    grid, valid = to_heatmap_grid(uv, valid, affines, (heatmaps.shape[-1], heatmaps.shape[-2]))
    return sample_views(heatmaps, grid, valid)


class SpaceProjector(nn.Module):
    """Fills the whole-space voxel grid from multi-view heatmaps, caching camera projections.

    Projecting every voxel into every camera is the expensive part and depends only on the
    cameras, which are fixed for a recording: the projected pixels and masks are kept in a
    small LRU cache keyed by a hash of each sample's calibration. The affines (augmentation)
    are applied after the cache, so augmented views hit it too.
    """

    def __init__(
        self,
        center: Sequence[float],
        size: Sequence[float],
        bins: Sequence[int],
        cache_size: int = 16,
    ) -> None:
        super().__init__()
        self.bins = tuple(int(b) for b in bins)
        self.register_buffer("points", voxel_grid(center, size, bins), persistent=False)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    def clear_cache(self) -> None:
        self._cache.clear()

    def project(self, cameras: CameraBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """uv (B, V, N, 2) original px and mask (B, V, N) of all voxel centres."""
        cameras = cameras.to(self.points.device, self.points.dtype)
        if self.cache_size == 0:
            return project_to_views(self.points.expand(cameras.batch_size, -1, -1), cameras)
        keys = [(k, str(self.points.device), self.points.dtype) for k in cameras.sample_keys()]
        missing = [b for b, k in enumerate(keys) if k not in self._cache]
        self.cache_hits += cameras.batch_size - len(missing)
        self.cache_misses += len(missing)
        fresh: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        if missing:  # one batched projection for every sample not in the cache
            idx = torch.tensor(missing, device=self.points.device)
            uv, valid = project_to_views(self.points.expand(len(missing), -1, -1), cameras[idx])
            fresh = {keys[b]: (uv[i], valid[i]) for i, b in enumerate(missing)}
        entries = [fresh.get(k) or self._cache[k] for k in keys]
        for k in keys:  # refresh recency, insert new entries, evict the oldest
            if k in fresh:
                self._cache[k] = fresh[k]
            self._cache.move_to_end(k)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return torch.stack([e[0] for e in entries]), torch.stack([e[1] for e in entries])

    def forward(
        self, heatmaps: torch.Tensor, cameras: CameraBatch, affines: torch.Tensor
    ) -> torch.Tensor:
        """heatmaps (B, V, C, h, w), affines (B, V, 2, 3) -> cube (B, C, X, Y, Z) in [0, 1]."""
        uv, valid = self.project(cameras)
        size = (heatmaps.shape[-1], heatmaps.shape[-2])
        grid, valid = to_heatmap_grid(uv, valid, affines.to(uv.dtype), size)
        cube = sample_views(heatmaps, grid, valid)
        return cube.reshape(*cube.shape[:2], *self.bins)
