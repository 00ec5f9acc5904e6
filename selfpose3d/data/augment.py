"""Appearance augmentation of the A1/A2 views: RandAugment (colour ops only) and Cutout.

Geometry is never touched here: the geometric augmentation is the per-view affine of
``selfpose3d.data.batches`` (it must stay exact, the cameras and labels follow it), so
RandAugment's shear, translation and rotation ops are removed from its search space.
Cutout is torchvision's RandomErasing filled with the ImageNet mean colour.

Every call is seeded explicitly and runs under a forked torch RNG, so augmentation neither
reads nor advances the global torch generator the training step uses.

Shape legend: N images, (H, W) px.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms import v2

# ImageNet statistics of RGB images in [0, 1] (what the ResNet trunks expect).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GEOMETRIC_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


class ColorRandAugment(v2.RandAugment):
    """RandAugment restricted to photometric ops (identity, brightness, colour, contrast,
    sharpness, posterize, solarize, autocontrast, equalize)."""

    _AUGMENTATION_SPACE = {
        k: v for k, v in v2.RandAugment._AUGMENTATION_SPACE.items() if k not in _GEOMETRIC_OPS
    }


class AppearanceAugment:
    """Seeded photometric augmentation of uint8 RGB images (N, 3, H, W)."""

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: int = 9,
        cutout_prob: float = 0.5,
        cutout_area: Sequence[float] = (0.02, 0.1),
    ) -> None:
        fill = tuple(round(255 * m) for m in IMAGENET_MEAN)
        self.transform = v2.Compose([
            ColorRandAugment(num_ops=num_ops, magnitude=magnitude),
            v2.RandomErasing(p=cutout_prob, scale=tuple(cutout_area), value=fill),
        ])  # fmt: skip

    def __call__(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """images (N, 3, H, W) uint8 -> (N, 3, H, W) uint8; each image draws its own ops."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images (N, 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")  # fmt: skip
        seeds = rng.integers(0, 2**62, size=len(images))
        out = torch.empty_like(images)
        with torch.random.fork_rng(devices=[]):
            # Per image: a batched call would apply the same ops to every view.
            for i, seed in enumerate(seeds):
                torch.manual_seed(int(seed))
                out[i] = self.transform(images[i])
        return out


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (..., 3, H, W) -> float32 ImageNet-normalised (..., 3, H, W)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean) / std
