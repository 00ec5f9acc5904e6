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

from collections.abc import Sequence

import torch
from torch import nn

from selfpose3d.models.config import ModelConfig
from selfpose3d.models.v2v import V2VNet
from selfpose3d.models.voxel import (
    CameraBatch,
    camera_to_image,
    grid_camera_frames,
    sample_views,
    to_heatmap_grid,
    voxel_axes,
)
from selfpose3d.skeleton import NUM_JOINTS


class _SoftArgmax(torch.autograd.Function):
    """softmax(beta * cube) over a regular grid and its expected voxel coordinate.

    The grid is separable, so the expectation needs only the softmax's marginals along x, y
    and z, and the gradient only three axis vectors broadcast over the cube: no (N, 3)
    coordinate product either way, and the softmax's own backward folds into one multiply
    (d out / d x_n = beta p_n (coords_n - out)).
    """

    @staticmethod
    def forward(ctx, cubes: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor,
                az: torch.Tensor, beta: float) -> torch.Tensor:  # fmt: skip
        p = torch.softmax(cubes.flatten(-3) * beta, dim=-1).view_as(cubes)
        pxy = p.sum(-1)
        out = torch.stack([pxy.sum(-1) @ ax, pxy.sum(-2) @ ay, p.sum((-3, -2)) @ az], dim=-1)
        ctx.save_for_backward(p, out, ax, ay, az)
        ctx.beta = beta
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        p, out, ax, ay, az = ctx.saved_tensors
        g = grad * ctx.beta  # (..., 3)
        # g . (coords_n - out), split per axis; the constant g . out rides on the x term.
        gx = g[..., 0:1] * ax - (g * out).sum(-1, keepdim=True)  # (..., X)
        gy, gz = g[..., 1:2] * ay, g[..., 2:3] * az  # (..., Y), (..., Z)
        dots = (gx[..., :, None, None] + gy[..., None, :, None]) + gz[..., None, None, :]
        return dots.mul_(p), None, None, None, None


def soft_argmax(cubes: torch.Tensor, axes: Sequence[torch.Tensor], beta: float) -> torch.Tensor:
    """Expected voxel coordinate under softmax(beta * cube) over all voxels of each cube.

    cubes (..., X, Y, Z), axes the voxel centres along x (X,), y (Y,), z (Z,) mm (as from
    :func:`~selfpose3d.models.voxel.voxel_axes`) -> (..., 3) mm.
    """
    ax, ay, az = (a.to(cubes.dtype) for a in axes)
    return _SoftArgmax.apply(cubes, ax, ay, az, beta)


def pose_cubes(
    heatmaps: torch.Tensor,
    roots: torch.Tensor,
    axes: Sequence[torch.Tensor],
    cameras: CameraBatch,
    affines: torch.Tensor,
) -> torch.Tensor:
    """Input cubes of M people seen in n versions of their views (e.g. two augmentations):
    heatmaps (n, M, V, J, h, w), roots (M, 3) mm, axes the grid's voxel centres relative to
    the root along x (X,), y (Y,), z (Z,) mm, cameras of the M people's samples, affines
    (n, M, V, 2, 3) -> (n, M, J, X, Y, Z).

    The versions differ only by their affines (original px -> heatmap px), so every cube is
    projected into the cameras once, whatever n is.
    """
    n, m = heatmaps.shape[:2]
    frames = grid_camera_frames(roots, axes, cameras)
    uv, seen = camera_to_image(*frames, cameras)
    size = (heatmaps.shape[-1], heatmaps.shape[-2])
    grid, valid = to_heatmap_grid(uv, seen, affines, size)  # broadcast over n
    cubes = sample_views(heatmaps.flatten(0, 1), grid.flatten(0, 1), valid.flatten(0, 1))
    return cubes.reshape(n, m, cubes.shape[1], *(len(a) for a in axes))


class PoseNet(nn.Module):
    def __init__(self, cfg: ModelConfig, num_joints: int = NUM_JOINTS) -> None:
        super().__init__()
        self.bins = tuple(cfg.pose_bins)
        self.beta = cfg.beta
        # Voxel centres relative to the root along each axis, mm; adding the root afterwards
        # keeps the soft-argmax precise far from the world origin.
        for name, axis in zip("xyz", voxel_axes(cfg.pose_cube_offset, cfg.pose_cube_size,
                                                cfg.pose_bins), strict=True):  # fmt: skip
            self.register_buffer(f"axis_{name}", axis, persistent=False)
        self.v2v = V2VNet(
            num_joints, num_joints, width=cfg.v2v_width, channels_last=cfg.v2v_channels_last
        )

    @property
    def axes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pose cube's voxel centres relative to the root along x, y, z, mm."""
        return self.axis_x, self.axis_y, self.axis_z

    def regress(self, cubes: torch.Tensor, roots: torch.Tensor) -> torch.Tensor:
        """Input cubes (M, J, X, Y, Z), roots (M, 3) mm -> joints (M, J, 3) mm."""
        out = self.v2v(cubes)
        return roots[:, None, :] + soft_argmax(out, self.axes, self.beta)

    def forward(
        self,
        heatmaps: torch.Tensor,
        proposals: torch.Tensor,
        cameras: CameraBatch,
        affines: torch.Tensor,
    ) -> torch.Tensor:
        """heatmaps (n B, V, J, h, w), proposals (B, K, 5) (x, y, z mm, score, flag), cameras
        of the B samples, affines (n B, V, 2, 3) -> poses (n B, K, J, 3) mm.

        n >= 1 versions of the same B samples may be stacked along the batch axis (version
        after version, as the training steps stack augmentations); they share the samples'
        proposals and cameras. Only flagged proposals (flag > 0.5) are regressed, all
        versions in one V2V call; the rows of the others are 0. With no flagged proposal the
        result is all 0 and has no gradient.
        """
        b, k = proposals.shape[:2]
        n = heatmaps.shape[0] // b
        if n * b != heatmaps.shape[0] or affines.shape[0] != heatmaps.shape[0]:
            raise ValueError(
                f"heatmaps ({heatmaps.shape[0]}) and affines ({affines.shape[0]}) must stack "
                f"whole versions of the proposals' {b} samples"
            )
        sample, slot = torch.nonzero(proposals[..., 4] > 0.5, as_tuple=True)  # (M,), (M,)
        poses = heatmaps.new_zeros(n * b, k, heatmaps.shape[2], 3)
        if sample.numel() == 0:
            return poses
        roots = proposals[sample, slot, :3].to(heatmaps.dtype)  # (M, 3)
        cams = cameras.to(heatmaps.device, heatmaps.dtype)[sample]
        rows = (torch.arange(n, device=sample.device)[:, None] * b + sample).flatten()  # (n M,)
        shape = (n, len(sample))
        # index_select copies whole rows, faster than advanced indexing.
        heatmaps = heatmaps.index_select(0, rows).unflatten(0, shape)
        affines = affines.index_select(0, rows).to(heatmaps.dtype).unflatten(0, shape)
        cubes = pose_cubes(heatmaps, roots, self.axes, cams, affines)
        joints = self.regress(cubes.flatten(0, 1), roots.repeat(n, 1))
        return poses.index_put((rows, slot.repeat(n)), joints)


def build_pose_net(cfg: ModelConfig) -> PoseNet:
    return PoseNet(cfg)
