"""Gaussian heatmaps from 2D points, and Gaussian cubes from 3D points; batched, differentiable.

2D: a joint at (u, v) heatmap px puts ``exp(-((x - u)^2 + (y - v)^2) / (2 sigma^2))`` on the
pixel whose centre is (x, y); pixel centres are integers (the centre of the top-left pixel is
(0, 0)), so the maximum lands on pixel (round(u), round(v)). People are combined per joint by
their maximum (2D targets) or by their sum clipped to [0, 1] (the reprojection loss).

Gaussians are separable, so each map is an outer product of a row and a column profile; the
``sum_clip`` path never materialises a per-person map at all.

Shape legend: B samples, V views, P people, J joints, (h, w) heatmap px, N points,
(X, Y, Z) voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

Combine = Literal["max", "sum_clip"]


def _profiles(
    coords: torch.Tensor, visible: torch.Tensor, axes: Sequence[torch.Tensor], sigma: float
) -> list[torch.Tensor]:
    """1D Gaussian profiles of each point along each axis.

    coords (..., D), visible (...,) bool, axes D tensors (S_d,). Returns D tensors
    (..., S_d); invisible or non-finite points get all-zero profiles (and zero gradients).
    """
    ok = visible & torch.isfinite(coords).all(-1)
    safe = torch.where(ok[..., None], coords, torch.zeros_like(coords))
    out = []
    for d, axis in enumerate(axes):  # D = 2 or 3 axes, not people or views
        g = torch.exp(-((axis - safe[..., d : d + 1]) ** 2) / (2 * sigma**2))
        out.append(g * ok[..., None].to(g.dtype))
    return out


def render_heatmaps(
    points: torch.Tensor,
    weights: torch.Tensor,
    heatmap_size: Sequence[int],
    sigma: float,
    combine: Combine = "max",
) -> torch.Tensor:
    """Gaussian heatmaps of every joint of every person in every view, in one call.

    points: (B, V, P, J, 2) heatmap px (u, v). weights: (B, V, P, J) in [0, 1] (binary
    visibility or confidences; a joint with weight 0 or a non-finite coordinate draws nothing).
    heatmap_size: (w, h). sigma: heatmap px. combine: "max" over people (2D targets) or
    "sum_clip" (sum over people, clipped to [0, 1]; the reprojection loss).
    Returns (B, V, J, h, w); differentiable w.r.t. ``points`` and ``weights``.
    """
    if points.shape[-1] != 2 or points.shape[:-1] != weights.shape:
        raise ValueError(
            f"points (..., P, J, 2) and weights (..., P, J) disagree: "
            f"{tuple(points.shape)} vs {tuple(weights.shape)}"
        )
    w, h = int(heatmap_size[0]), int(heatmap_size[1])
    xs = torch.arange(w, device=points.device, dtype=points.dtype)
    ys = torch.arange(h, device=points.device, dtype=points.dtype)
    gx, gy = _profiles(points, weights != 0, (xs, ys), sigma)  # (B,V,P,J,w), (B,V,P,J,h)
    weights = torch.nan_to_num(weights, nan=0.0)
    gy = gy * weights[..., None]
    if combine == "sum_clip":
        return torch.einsum("bvpjy,bvpjx->bvjyx", gy, gx).clamp(max=1.0)
    if combine == "max":
        per_person = gy[..., :, None] * gx[..., None, :]  # (B, V, P, J, h, w)
        if per_person.shape[2] == 0:
            return per_person.new_zeros(*per_person.shape[:2], *per_person.shape[3:])
        return per_person.amax(dim=2)
    raise ValueError(f"combine must be 'max' or 'sum_clip', got {combine!r}")


def render_cubes(
    points: torch.Tensor, valid: torch.Tensor, axes: Sequence[torch.Tensor], sigma: float = 200.0
) -> torch.Tensor:
    """3D Gaussian cubes: the max over points of isotropic Gaussians on a voxel grid.

    points: (B, N, 3) world mm. valid: (B, N) bool. axes: voxel-centre coordinates (X,), (Y,),
    (Z,) mm (``voxel.voxel_axes``). sigma: mm (synthetic root targets: 200 mm).
    Returns (B, X, Y, Z) in [0, 1]; 0 where no valid point is near.
    """
    gx, gy, gz = _profiles(points, valid, axes, sigma)  # (B, N, X), (B, N, Y), (B, N, Z)
    cubes = gx[..., :, None, None] * gy[..., None, :, None] * gz[..., None, None, :]
    if cubes.shape[1] == 0:
        return cubes.new_zeros(cubes.shape[0], *cubes.shape[2:])
    return cubes.amax(dim=1)
