"""The full SelfPose3d model: 2D heatmaps -> root proposals -> 3D poses (DESIGN §2.1).

Two input modes (``ModelConfig.input_mode``):
- ``images``: heatmaps come from heatmap_net_2d run on the images of all views;
- ``pseudo_heatmaps``: heatmaps are rendered from the pseudo 2D poses (no 2D network).

Geometry inputs of every call: ``cameras`` (a :class:`CameraBatch` or a mapping with K, dist,
R, t, size, batch dims first; original image px, world mm) and ``affines`` (B, V, 2, 3), per
view the affine map from original image px to heatmap px (resize, crop and augmentation).

Shape legend: B samples, V views, J joints, P people, (H, W) input px, (h, w) heatmap px,
K = max_people proposals, (X, Y, Z) root voxels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from selfpose3d.geometry import affine
from selfpose3d.models.config import ModelConfig
from selfpose3d.models.heatmaps import render_heatmaps
from selfpose3d.models.output import ModelOutput
from selfpose3d.models.pose_net import PoseNet
from selfpose3d.models.pose_resnet import PoseResNet, build_pose_resnet
from selfpose3d.models.root_net import RootNet
from selfpose3d.models.voxel import CameraBatch
from selfpose3d.skeleton import NUM_JOINTS

Cameras = CameraBatch | Mapping[str, Any]


def apply_affine(points: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
    """points (B, V, ..., 2) px, affines (B, V, 2, 3) -> (B, V, ..., 2) transformed px."""
    flat = points.reshape(*points.shape[:2], -1, 2)  # (B, V, Q, 2)
    return affine.apply_affine(flat, affines).reshape(points.shape)


class SelfPose3dModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.heatmap_net_2d: PoseResNet | None = None
        if cfg.input_mode == "images":
            self.heatmap_net_2d = build_pose_resnet(
                cfg.backbone_depth, NUM_JOINTS, cfg.pretrained_path
            )
        self.attn_net_2d: PoseResNet | None = None
        if cfg.use_attention:
            self.attn_net_2d = build_pose_resnet(
                cfg.attention_depth, NUM_JOINTS, cfg.attention_pretrained_path, "sigmoid"
            )
        self.root_net = RootNet(cfg)
        self.pose_net = PoseNet(cfg)

    # -- 2D ------------------------------------------------------------------------------

    def _run_2d(self, net: PoseResNet | None, images: torch.Tensor, what: str) -> torch.Tensor:
        if net is None:
            raise ValueError(
                f"this model has no {what} (input_mode={self.cfg.input_mode!r}, "
                f"use_attention={self.cfg.use_attention})"
            )
        w, h = self.cfg.image_size
        if images.ndim != 5 or tuple(images.shape[2:]) != (3, h, w):
            raise ValueError(f"images: expected (B, V, 3, {h}, {w}), got {tuple(images.shape)}")
        out = net(images.flatten(0, 1))  # all views of all samples in one call
        return out.reshape(*images.shape[:2], *out.shape[1:])

    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, V, 3, H, W) normalised -> heatmaps (B, V, J, h, w) from heatmap_net_2d."""
        return self._run_2d(self.heatmap_net_2d, images, "heatmap_net_2d")

    def attention(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, V, 3, H, W) -> attention maps (B, V, J, h, w) in (0, 1)."""
        return self._run_2d(self.attn_net_2d, images, "attn_net_2d")

    def pseudo_heatmaps(
        self, joints: torch.Tensor, weights: torch.Tensor, affines: torch.Tensor
    ) -> torch.Tensor:
        """Heatmaps rendered from 2D poses: joints (B, V, P, J, 2) original image px,
        weights (B, V, P, J) (visibility), affines (B, V, 2, 3) -> (B, V, J, h, w), max over
        people, sigma = heatmap_sigma."""
        points = apply_affine(joints, affines.to(joints.dtype))
        return render_heatmaps(
            points,
            weights.to(joints.dtype),
            self.cfg.heatmap_size,
            self.cfg.heatmap_sigma,
            combine="max",
        )

    def input_heatmaps(
        self,
        affines: torch.Tensor,
        images: torch.Tensor | None = None,
        pseudo_joints: torch.Tensor | None = None,
        pseudo_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The heatmaps the 3D nets see, according to ``input_mode``: (B, V, J, h, w)."""
        if self.cfg.input_mode == "images":
            if images is None:
                raise ValueError("input_mode 'images' needs images (B, V, 3, H, W)")
            return self.heatmaps(images)
        if pseudo_joints is None or pseudo_weights is None:
            raise ValueError("input_mode 'pseudo_heatmaps' needs pseudo_joints and pseudo_weights")
        return self.pseudo_heatmaps(pseudo_joints, pseudo_weights, affines)

    # -- 3D ------------------------------------------------------------------------------

    def _cameras(self, cameras: Cameras, like: torch.Tensor) -> CameraBatch:
        if not isinstance(cameras, CameraBatch):
            cameras = CameraBatch.from_mapping(cameras)
        return cameras.to(like.device, like.dtype)

    def root_cube(
        self, root_heatmaps: torch.Tensor, cameras: Cameras, affines: torch.Tensor
    ) -> torch.Tensor:
        """root_heatmaps (B, V, 1, h, w) (e.g. synthetic) -> root likelihood (B, X, Y, Z)."""
        cams = self._cameras(cameras, root_heatmaps)
        return self.root_net.root_cube(root_heatmaps, cams, affines.to(root_heatmaps.dtype))

    def proposals(
        self, heatmaps: torch.Tensor, cameras: Cameras, affines: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """heatmaps (B, V, J, h, w) -> (root cubes (B, X, Y, Z), proposals (B, K, 5))."""
        cams = self._cameras(cameras, heatmaps)
        return self.root_net(heatmaps, cams, affines.to(heatmaps.dtype))

    def poses(
        self,
        heatmaps: torch.Tensor,
        proposals: torch.Tensor,
        cameras: Cameras,
        affines: torch.Tensor,
    ) -> torch.Tensor:
        """heatmaps (n B, V, J, h, w), proposals (B, K, 5), cameras of the B samples,
        affines (n B, V, 2, 3) -> poses (n B, K, J, 3) mm: n versions of the same samples
        stacked along the batch axis share their proposals (see :class:`PoseNet`)."""
        cams = self._cameras(cameras, heatmaps)
        return self.pose_net(heatmaps, proposals, cams, affines.to(heatmaps.dtype))

    def forward(
        self,
        cameras: Cameras,
        affines: torch.Tensor,
        images: torch.Tensor | None = None,
        pseudo_joints: torch.Tensor | None = None,
        pseudo_weights: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Views -> heatmaps -> proposals -> poses, differentiable w.r.t. the heatmaps."""
        heatmaps = self.input_heatmaps(affines, images, pseudo_joints, pseudo_weights)
        cams = self._cameras(cameras, heatmaps)
        root_cubes, proposals = self.proposals(heatmaps, cams, affines)
        poses = self.poses(heatmaps, proposals, cams, affines)
        return ModelOutput(
            heatmaps=heatmaps, root_cubes=root_cubes, proposals=proposals, poses=poses
        )

    def predict(
        self,
        cameras: Cameras,
        affines: torch.Tensor,
        images: torch.Tensor | None = None,
        pseudo_joints: torch.Tensor | None = None,
        pseudo_weights: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Inference: ``forward`` in eval mode without gradients (the mode is restored)."""
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return self(cameras, affines, images, pseudo_joints, pseudo_weights)
        finally:
            self.train(was_training)


def build_model(cfg: ModelConfig) -> SelfPose3dModel:
    return SelfPose3dModel(cfg)
