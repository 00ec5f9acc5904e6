"""root_net, the cuboid proposal network (DESIGN §2.1).

The root heatmap channel of every view is projected into a voxel grid over the whole capture
space; a V2V net (1 -> 1 channel) turns it into a root likelihood cube, trained by MSE against
Gaussian target cubes (as in VoxelPose: the output is linear, no sigmoid, so a score is
directly comparable with the threshold). 3D NMS (a voxel survives when it equals the max of
its 3x3x3 neighbourhood) and top-K give the proposals.

A proposal row is (x, y, z, score, flag): the root in world mm, the likelihood at the peak,
and flag = 1.0 when score > proposal_threshold (a person), else 0.0. Rows are sorted by score,
so the people of a sample come first. With ``root_refine`` the peak moves by a sub-voxel
offset from a per-axis log-parabola through the peak and its two neighbours (exact for a
Gaussian peak); otherwise the root is the peak voxel's centre.

Shape legend: B samples, V views, J joints, (h, w) heatmap px, (X, Y, Z) root voxels,
K = max_people proposals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfpose3d.models.config import ModelConfig
from selfpose3d.models.v2v import V2VNet
from selfpose3d.models.voxel import CameraBatch, SpaceProjector, voxel_axes
from selfpose3d.skeleton import ROOT_INDEX

PROPOSAL_FIELDS = ("x", "y", "z", "score", "flag")


def nms_topk(cubes: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3x3x3 non-maximum suppression and top-k: cubes (B, X, Y, Z) -> scores (B, K),
    voxel indices (B, K, 3) (ix, iy, iz), sorted by decreasing score. K = min(k, X*Y*Z)."""
    b, nx, ny, nz = cubes.shape
    pooled = F.max_pool3d(cubes[:, None], kernel_size=3, stride=1, padding=1)[:, 0]
    peaks = torch.where(cubes == pooled, cubes, torch.full_like(cubes, -torch.inf))
    scores, flat = peaks.reshape(b, -1).topk(min(k, nx * ny * nz), dim=1)
    # Fewer peaks than k: the remaining rows are arbitrary non-peaks; score 0 never passes
    # the threshold (a proposal needs score > threshold >= 0).
    scores = torch.where(scores == -torch.inf, torch.zeros_like(scores), scores)
    index = torch.stack([flat // (ny * nz), (flat // nz) % ny, flat % nz], dim=-1)
    return scores, index


def subvoxel_offsets(cubes: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-axis log-parabola peak offsets in voxels, in [-0.5, 0.5].

    cubes (B, X, Y, Z), index (B, K, 3) -> (B, K, 3). An axis without both neighbours, or
    where the three values are not a strict maximum, gets offset 0.
    """
    b = index.shape[0]
    shape = torch.tensor(cubes.shape[1:], device=cubes.device)
    flat = cubes.reshape(b, -1)
    strides = torch.tensor(
        [cubes.shape[2] * cubes.shape[3], cubes.shape[3], 1], device=cubes.device
    )
    eye = torch.eye(3, dtype=index.dtype, device=index.device)  # (3 axes, 3)
    lo = index[:, :, None, :] - eye  # (B, K, 3, 3): the lower neighbour along each axis
    hi = index[:, :, None, :] + eye
    inside = (lo.amin(-1) >= 0) & (hi < shape).all(-1)  # (B, K, 3)

    def values(idx: torch.Tensor) -> torch.Tensor:
        i = (idx.clamp(min=0) % shape * strides).sum(-1).reshape(b, -1)
        return flat.gather(1, i).reshape(idx.shape[:-1])

    eps = 1e-6
    f0 = values(index).clamp(min=eps).log()[..., None]  # (B, K, 1)
    fm, fp = values(lo).clamp(min=eps).log(), values(hi).clamp(min=eps).log()  # (B, K, 3)
    curvature = fm - 2 * f0 + fp
    ok = inside & (curvature < -eps)
    offset = 0.5 * (fm - fp) / torch.where(ok, curvature, -torch.ones_like(curvature))
    return torch.where(ok, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))


class RootNet(nn.Module):
    """Root heatmaps of all views -> root likelihood cube -> K proposals."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.space_center = list(cfg.space_center)
        self.space_size = list(cfg.space_size)
        self.bins = list(cfg.root_bins)
        self.max_people = cfg.max_people
        self.threshold = cfg.proposal_threshold
        self.refine = cfg.root_refine
        self.projector = SpaceProjector(
            cfg.space_center, cfg.space_size, cfg.root_bins, cache_size=cfg.projection_cache_size
        )
        self.v2v = V2VNet(1, 1, width=cfg.v2v_width, channels_last=cfg.v2v_channels_last)
        step = [s / (n - 1) for s, n in zip(cfg.space_size, cfg.root_bins, strict=True)]
        origin = [c - s / 2 for c, s in zip(cfg.space_center, cfg.space_size, strict=True)]
        self.register_buffer("voxel_step", torch.tensor(step), persistent=False)  # (3,) mm
        self.register_buffer("origin", torch.tensor(origin), persistent=False)  # voxel 0, mm

    def axes(self) -> tuple[torch.Tensor, ...]:
        """Voxel-centre coordinates of the root space: (X,), (Y,), (Z,) mm."""
        return voxel_axes(
            self.space_center, self.space_size, self.bins, device=self.voxel_step.device
        )

    def root_cube(
        self, root_heatmaps: torch.Tensor, cameras: CameraBatch, affines: torch.Tensor
    ) -> torch.Tensor:
        """root_heatmaps (B, V, 1, h, w), affines (B, V, 2, 3) -> likelihood (B, X, Y, Z).

        Also the entry point of synthetic-root training, whose input is synthetic root maps.
        """
        if root_heatmaps.shape[2] != 1:
            raise ValueError(f"root_cube takes one root channel, got {tuple(root_heatmaps.shape)}")
        return self.v2v(self.projector(root_heatmaps, cameras, affines))[:, 0]

    def propose(self, cubes: torch.Tensor) -> torch.Tensor:
        """cubes (B, X, Y, Z) -> proposals (B, K, 5): x, y, z mm, score, flag (no gradient)."""
        cubes = cubes.detach()
        scores, index = nms_topk(cubes, self.max_people)
        position = index.to(cubes.dtype)
        if self.refine:
            position = position + subvoxel_offsets(cubes, index)
        xyz = self.origin.to(cubes.dtype) + position * self.voxel_step.to(cubes.dtype)
        flag = (scores > self.threshold).to(cubes.dtype)
        return torch.cat([xyz, scores[..., None], flag[..., None]], dim=-1)

    def forward(
        self, heatmaps: torch.Tensor, cameras: CameraBatch, affines: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """heatmaps (B, V, J, h, w) (all joints; only the root channel is used) ->
        (root cube (B, X, Y, Z), proposals (B, K, 5))."""
        cubes = self.root_cube(heatmaps[:, :, ROOT_INDEX : ROOT_INDEX + 1], cameras, affines)
        return cubes, self.propose(cubes)


def build_root_net(cfg: ModelConfig) -> RootNet:
    return RootNet(cfg)
