"""Synthetic 3D roots for training root_net without labels (DESIGN §2.2, stage 2).

Random root points are drawn inside the root space shrunk by margins; their projections
into every view give synthetic 2D root heatmaps (the input), and 3D Gaussians around them
give the target cube. root_net sees only the root heatmap channel, so at test time real
root heatmaps of people take the place of the synthetic ones.

Randomness comes from torch's global generator, which the training loop seeds per step.

Shape legend: B samples, V views, R roots (padded to max_people - 1), (h, w) heatmap px.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from selfpose3d.models.heatmaps import render_heatmaps
from selfpose3d.models.model import apply_affine
from selfpose3d.models.voxel import CameraBatch, project_to_views


def sample_roots(
    batch_size: int,
    max_people: int,
    space_center: Sequence[float],
    space_size: Sequence[float],
    margins: Sequence[float],
    z_jitter: float = 50.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw 1..max_people-1 roots per sample (at least 1).

    margins: fractions of the space size cut at the (x low, x high, y low, y high, z low,
    z high) ends. x and y are uniform in the shrunk space; z is one uniform draw per sample
    plus N(0, z_jitter) mm per root (people of one scene stand on one floor).
    Returns roots (B, R, 3) world mm and valid (B, R) bool, R = max(1, max_people - 1).
    """
    r = max(1, max_people - 1)
    center = torch.tensor(space_center, dtype=torch.float32)
    size = torch.tensor(space_size, dtype=torch.float32)
    m = torch.tensor(margins, dtype=torch.float32).reshape(3, 2)
    lo = center - size / 2 + m[:, 0] * size
    hi = center + size / 2 - m[:, 1] * size
    u = torch.rand(batch_size, r, 3)
    u[..., 2] = u[:, :1, 2].clone()  # one z per sample
    roots = lo + u * (hi - lo)
    roots[..., 2] += z_jitter * torch.randn(batch_size, r)
    count = torch.randint(1, r + 1, (batch_size, 1))
    valid = torch.arange(r)[None] < count
    return roots, valid


def root_heatmaps(
    roots: torch.Tensor,
    valid: torch.Tensor,
    cameras: CameraBatch,
    affines: torch.Tensor,
    heatmap_size: Sequence[int],
    sigma: float,
    noise: float = 0.02,
) -> torch.Tensor:
    """Synthetic 2D root heatmaps of every view.

    roots (B, R, 3) mm, valid (B, R), cameras (B, V), affines (B, V, 2, 3) original px ->
    heatmap px. Gaussians (sigma heatmap px) at the projections that fall inside the
    original image, summed over roots, + N(0, noise) per pixel, clipped to [0, 1].
    Returns (B, V, 1, h, w).
    """
    uv, seen = project_to_views(roots, cameras.to(roots.device, roots.dtype))  # (B, V, R, 2)
    points = apply_affine(uv, affines.to(roots.dtype))[:, :, :, None]  # (B, V, R, 1, 2)
    weights = (seen & valid[:, None]).to(roots.dtype)[..., None]  # (B, V, R, 1)
    maps = render_heatmaps(points, weights, heatmap_size, sigma, combine="sum_clip")
    return (maps + noise * torch.randn_like(maps)).clamp(0.0, 1.0)
