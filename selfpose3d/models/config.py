"""Configuration of the networks and the voxel spaces (DESIGN §2.1).

Voxel grids follow VoxelPose's convention: ``bins`` voxel centres per axis spread evenly from
``center - size / 2`` to ``center + size / 2`` inclusive, so the spacing is
``size / (bins - 1)`` mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# The ResNet trunk downsamples by 32 and the three deconvolutions upsample by 8.
BACKBONE_STRIDE = 32
HEATMAP_STRIDE = 4


# Model fields added after checkpoints and exports were first written, with the value a file
# written before them meant.
ADDED_FIELDS: dict[str, object] = {"pose_cube_offset": [0.0, 0.0, 0.0]}


@dataclass(kw_only=True)
class ModelConfig:
    input_mode: Literal["images", "pseudo_heatmaps"] = "images"
    image_size: list[int] = field(default_factory=lambda: [960, 512])  # network input (w, h) px
    heatmap_size: list[int] = field(default_factory=lambda: [240, 128])  # (w, h) px
    backbone_depth: Literal[18, 34, 50] = 50  # ResNet depth of heatmap_net_2d
    attention_depth: Literal[18, 34, 50] = 18  # ResNet depth of attn_net_2d
    use_attention: bool = True  # build attn_net_2d (adaptive supervision attention)
    # Local torchvision ImageNet weights (.pth) of each trunk; empty = random initialisation.
    pretrained_path: str = ""  # heatmap_net_2d, a ResNet-{backbone_depth}
    attention_pretrained_path: str = ""  # attn_net_2d, a ResNet-{attention_depth}
    heatmap_sigma: float = 3.0  # Gaussian std of target heatmaps, heatmap px
    # Pseudo-label joints within this many px of the image border are taken as undetected,
    # in training and inference alike: detectors put out-of-frame joints there. 0 = keep all.
    pseudo_border_px: float = 0.0
    space_size: list[float] = field(default_factory=lambda: [8000.0, 8000.0, 2000.0])  # mm
    space_center: list[float] = field(default_factory=lambda: [0.0, -500.0, 800.0])  # mm
    root_bins: list[int] = field(default_factory=lambda: [80, 80, 20])
    pose_cube_size: list[float] = field(default_factory=lambda: [2000.0, 2000.0, 2000.0])  # mm
    # The pose cube's centre relative to the root proposal (mm, world axes), for people who
    # reach beyond a root-centred cube (raised hands, long limbs) without adding voxels.
    pose_cube_offset: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    pose_bins: list[int] = field(default_factory=lambda: [64, 64, 64])
    beta: float = 100.0  # soft-argmax sharpness
    max_people: int = 10
    proposal_threshold: float = 0.3
    root_refine: bool = True  # sub-voxel root by a log-parabola fit around each NMS peak
    v2v_width: int = 32  # channels of the V2V nets' first level
    v2v_channels_last: bool = True  # channels_last_3d layout in the V2V nets (2x faster on CPU)
    projection_cache_size: int = 16  # cached camera projections of the root space (LRU)

    def __post_init__(self) -> None:
        for name, n in (
            ("image_size", 2),
            ("heatmap_size", 2),
            ("space_size", 3),
            ("space_center", 3),
            ("root_bins", 3),
            ("pose_cube_size", 3),
            ("pose_cube_offset", 3),
            ("pose_bins", 3),
        ):
            if len(getattr(self, name)) != n:
                raise ValueError(f"model.{name} needs {n} values, got {getattr(self, name)}")
        if any(s <= 0 or s % BACKBONE_STRIDE for s in self.image_size):
            raise ValueError(
                f"model.image_size {self.image_size}: width and height must be positive "
                f"multiples of {BACKBONE_STRIDE} (the ResNet trunk's stride)"
            )
        expected = [s // HEATMAP_STRIDE for s in self.image_size]
        if list(self.heatmap_size) != expected:
            raise ValueError(
                f"model.heatmap_size {self.heatmap_size}: must be image_size / "
                f"{HEATMAP_STRIDE} = {expected}"
            )
        for name in ("root_bins", "pose_bins"):
            if any(b < 2 for b in getattr(self, name)):
                raise ValueError(
                    f"model.{name} needs >= 2 bins per axis, got {getattr(self, name)}"
                )
        for name in ("space_size", "pose_cube_size"):
            if any(s <= 0 for s in getattr(self, name)):
                raise ValueError(f"model.{name} must be positive (mm), got {getattr(self, name)}")
        if any(2 * abs(o) >= s for o, s in zip(self.pose_cube_offset, self.pose_cube_size,
                                                strict=True)):  # fmt: skip
            raise ValueError(f"model.pose_cube_offset {self.pose_cube_offset} must keep the root "
                             f"inside the cube: |offset| < pose_cube_size / 2")  # fmt: skip
        if self.heatmap_sigma <= 0:
            raise ValueError("model.heatmap_sigma must be > 0 (heatmap px)")
        if not 0 <= self.pseudo_border_px < 100:
            raise ValueError("model.pseudo_border_px must be in [0, 100) px (0 = keep all)")
        if self.beta <= 0:
            raise ValueError("model.beta must be > 0")
        if self.max_people < 1:
            raise ValueError("model.max_people must be >= 1")
        if not 0.0 <= self.proposal_threshold <= 1.0:
            raise ValueError("model.proposal_threshold must lie in [0, 1]")
        if self.v2v_width < 2 or self.v2v_width % 2:
            raise ValueError("model.v2v_width must be an even number >= 2")
        if self.projection_cache_size < 0:
            raise ValueError("model.projection_cache_size must be >= 0 (0 disables the cache)")
