"""pose_net, the pose regression network (DESIGN §2.1).

For every proposal flagged as a person, a cube of ``pose_cube_size`` mm and ``pose_bins``
voxels centred on its root is filled from all J heatmaps of all views (one sampling call for
all proposals and views), a V2V net (J -> J) refines it, and a soft-argmax (softmax of
beta * x over the voxels, times the voxel coordinates) gives each joint in world mm.
Everything is differentiable w.r.t. the heatmaps, so gradients reach the 2D network.

Shape legend: B samples, V views, J joints, (h, w) heatmap px, K proposals, M proposals
flagged as people (over the whole batch), (X, Y, Z) pose voxels, N = X*Y*Z.
"""

from __future__ import annotations

import torch
from torch import nn

from selfpose3d.models.config import ModelConfig
from selfpose3d.models.v2v import V2VNet
from selfpose3d.models.voxel import CameraBatch, sample_points, voxel_grid
from selfpose3d.skeleton import NUM_JOINTS


def soft_argmax(cubes: torch.Tensor, coords: torch.Tensor, beta: float) -> torch.Tensor:
    """Expected voxel coordinate under softmax(beta * cube).

    cubes (..., N) (flattened voxels), coords (N, 3) mm -> (..., 3) mm.
    """
    return torch.softmax(beta * cubes, dim=-1) @ coords


class PoseNet(nn.Module):
    def __init__(self, cfg: ModelConfig, num_joints: int = NUM_JOINTS) -> None:
        super().__init__()
        self.bins = tuple(cfg.pose_bins)
        self.beta = cfg.beta
        # Voxel centres relative to the cube's centre (N, 3) mm; adding the root afterwards
        # keeps the soft-argmax precise far from the world origin.
        self.register_buffer(
            "offsets", voxel_grid([0.0] * 3, cfg.pose_cube_size, cfg.pose_bins), persistent=False
        )
        self.v2v = V2VNet(
            num_joints, num_joints, width=cfg.v2v_width, channels_last=cfg.v2v_channels_last
        )

    def cubes(
        self,
        heatmaps: torch.Tensor,
        roots: torch.Tensor,
        cameras: CameraBatch,
        affines: torch.Tensor,
    ) -> torch.Tensor:
        """Input cubes of M people: heatmaps (M, V, J, h, w) (each person's sample),
        roots (M, 3) mm, cameras of M samples, affines (M, V, 2, 3) -> (M, J, X, Y, Z)."""
        points = roots[:, None, :] + self.offsets  # (M, N, 3)
        cubes = sample_points(heatmaps, points, cameras, affines)  # (M, J, N)
        return cubes.reshape(*cubes.shape[:2], *self.bins)

    def regress(self, cubes: torch.Tensor, roots: torch.Tensor) -> torch.Tensor:
        """Input cubes (M, J, X, Y, Z), roots (M, 3) mm -> joints (M, J, 3) mm."""
        out = self.v2v(cubes)
        return roots[:, None, :] + soft_argmax(
            out.flatten(2), self.offsets.to(out.dtype), self.beta
        )

    def forward(
        self,
        heatmaps: torch.Tensor,
        proposals: torch.Tensor,
        cameras: CameraBatch,
        affines: torch.Tensor,
    ) -> torch.Tensor:
        """heatmaps (B, V, J, h, w), proposals (B, K, 5) (x, y, z mm, score, flag),
        affines (B, V, 2, 3) -> poses (B, K, J, 3) mm.

        Only flagged proposals (flag > 0.5) are regressed, all in one V2V call; the rows of the
        others are 0. With no flagged proposal the result is all 0 and has no gradient.
        """
        b, k = proposals.shape[:2]
        sample, slot = torch.nonzero(proposals[..., 4] > 0.5, as_tuple=True)  # (M,), (M,)
        poses = heatmaps.new_zeros(b, k, heatmaps.shape[2], 3)
        if sample.numel() == 0:
            return poses
        roots = proposals[sample, slot, :3].to(heatmaps.dtype)  # (M, 3)
        cams = cameras.to(heatmaps.device, heatmaps.dtype)[sample]
        cubes = self.cubes(heatmaps[sample], roots, cams, affines[sample].to(heatmaps.dtype))
        return poses.index_put((sample, slot), self.regress(cubes, roots))


def build_pose_net(cfg: ModelConfig) -> PoseNet:
    return PoseNet(cfg)
