"""Multi-view frames -> batches of tensors for training and evaluation.

A batch holds up to three *versions* of every view of every sample:

- ``a3``: the image resized to the network input (aspect kept, padded), never augmented;
- ``a1``, ``a2``: two independent random affine augmentations of every view (the paper's
  distribution, ``geometry.affine.random_augmentation_matrix``) plus appearance augmentation
  (``data.augment``). Both come from one function, :func:`make_views`, called twice.

Per version the batch stores each view's affine from *original image px* to *heatmap px* (what
the models take) and, when images are decoded, the warped, normalised images. Cameras and
pseudo 2D poses stay in original image px; the affine carries them into a version.
Pixels follow OpenCV's convention (the centre of the top-left pixel is (0, 0)).

3D ground truth travels in a separate field that :meth:`Batch.without_gt` replaces with a
guard raising on any access: the self-supervised stages receive only such batches.

Shape legend: B samples, V views, P pseudo people (padded), G GT people (padded), J joints,
(H, W) network input px, (h, w) heatmap px.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import torch

from selfpose3d.data.augment import AppearanceAugment, normalize_images
from selfpose3d.data.panoptic import MultiViewFrame
from selfpose3d.geometry.affine import (
    compose_affine,
    get_resize_matrix,
    random_augmentation_matrix,
    scale_affine,
    warp_image,
)
from selfpose3d.geometry.camera import stack_cameras
from selfpose3d.models.config import ModelConfig
from selfpose3d.models.voxel import CameraBatch
from selfpose3d.skeleton import NUM_JOINTS
from selfpose3d.training.config import AugmentConfig

VersionName = Literal["a1", "a2", "a3"]
Labels = Literal["soft", "hard"]
Array = np.ndarray | torch.Tensor
GT_MIN_VISIBILITY = 0.1  # a GT joint counts when its visibility exceeds this (DESIGN §3.1)


@dataclass
class Views:
    """One version of every view of a batch."""

    affines: torch.Tensor  # (B, V, 2, 3) original image px -> heatmap px
    images: torch.Tensor | None  # (B, V, 3, H, W) ImageNet-normalised; None when not decoded

    def select_views(self, index: torch.Tensor) -> Views:
        images = None if self.images is None else self.images[:, index]
        return Views(affines=self.affines[:, index], images=images)

    def to(self, device: torch.device | str) -> Views:
        images = None if self.images is None else self.images.to(device)
        return Views(affines=self.affines.to(device), images=images)


@dataclass
class PseudoPoses:
    """The pseudo 2D poses of every view, padded to P people."""

    joints: torch.Tensor  # (B, V, P, J, 2) original image px
    confidence: torch.Tensor  # (B, V, P, J) detector confidence; 0 = not detected / padding

    def weights(self, labels: Labels, hard_threshold: float) -> torch.Tensor:
        """(B, V, P, J) binary joint weights: *soft* = every detected joint (conf > 0),
        *hard* = joints with conf >= hard_threshold."""
        if labels == "soft":
            return (self.confidence > 0).to(self.joints.dtype)
        if labels == "hard":
            return (self.confidence >= hard_threshold).to(self.joints.dtype)
        raise ValueError(f"labels must be 'soft' or 'hard', got {labels!r}")

    def select_views(self, index: torch.Tensor) -> PseudoPoses:
        return PseudoPoses(joints=self.joints[:, index], confidence=self.confidence[:, index])

    def to(self, device: torch.device | str) -> PseudoPoses:
        return PseudoPoses(joints=self.joints.to(device), confidence=self.confidence.to(device))


@dataclass
class GroundTruth:
    """3D ground truth, for the supervised baseline and evaluation only."""

    poses: torch.Tensor  # (B, G, J, 3) world mm; padding rows are 0
    visible: torch.Tensor  # (B, G, J) bool

    @property
    def valid(self) -> torch.Tensor:  # (B, G) bool: a real person with a visible joint
        return self.visible.any(-1)

    def to(self, device: torch.device | str) -> GroundTruth:
        return GroundTruth(poses=self.poses.to(device), visible=self.visible.to(device))


class GroundTruthWithheld:
    """Stands in for the GT of batches given to self-supervised steps: any use is an error."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # pickle and copy probe for optional dunders
            raise AttributeError(name)
        raise RuntimeError(
            f"3D ground truth is withheld from self-supervised training (tried to read "
            f"gt.{name}); only the supervised stage and evaluation may use it"
        )

    def to(self, device: torch.device | str) -> GroundTruthWithheld:
        return self


@dataclass
class Batch:
    keys: list[tuple[str, int]]  # (sequence, frame) per sample
    cameras: CameraBatch  # (B, V) original image px, world mm
    versions: dict[str, Views]  # "a1" / "a2" / "a3" -> Views
    pseudo: PseudoPoses
    gt: GroundTruth | GroundTruthWithheld | None = None  # None = the data has no GT

    @property
    def size(self) -> int:
        return len(self.keys)

    def view(self, name: VersionName) -> Views:
        if name not in self.versions:
            raise KeyError(f"this batch has no version {name!r} (built: {sorted(self.versions)})")
        return self.versions[name]

    def without_gt(self) -> Batch:
        return dataclasses.replace(self, gt=GroundTruthWithheld())

    def select_views(self, index: Sequence[int] | torch.Tensor) -> Batch:
        """The same batch with its views reordered / selected (``index`` over V)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return dataclasses.replace(
            self,
            cameras=self.cameras[:, index],
            versions={k: v.select_views(index) for k, v in self.versions.items()},
            pseudo=self.pseudo.select_views(index),
        )

    def to(self, device: torch.device | str) -> Batch:
        return dataclasses.replace(
            self,
            cameras=self.cameras.to(device),
            versions={k: v.to(device) for k, v in self.versions.items()},
            pseudo=self.pseudo.to(device),
            gt=None if self.gt is None else self.gt.to(device),
        )


@dataclass(frozen=True, kw_only=True)
class BatchSpec:
    """What to build: sizes (from the model config), versions, images, augmentation."""

    input_size: tuple[int, int]  # network input (W, H) px
    heatmap_size: tuple[int, int]  # (w, h) px
    versions: tuple[VersionName, ...] = ("a3",)
    images: bool = True  # decode and warp images (not needed for input_mode pseudo_heatmaps)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Pseudo joints within this many px of the image border count as undetected (0 = keep).
    pseudo_border_px: float = 0.0

    @classmethod
    def from_configs(
        cls,
        model: ModelConfig,
        augment: AugmentConfig | None = None,
        versions: Sequence[VersionName] = ("a3",),
        images: bool = True,
    ) -> BatchSpec:
        bad = set(versions) - {"a1", "a2", "a3"}
        if bad:
            raise ValueError(f"unknown batch versions {sorted(bad)} (known: a1, a2, a3)")
        return cls(
            input_size=(int(model.image_size[0]), int(model.image_size[1])),
            heatmap_size=(int(model.heatmap_size[0]), int(model.heatmap_size[1])),
            versions=tuple(versions),
            images=images,
            augment=augment or AugmentConfig(),
            pseudo_border_px=float(model.pseudo_border_px),
        )


class ImageCache:
    """LRU of decoded images (uint8 arrays / tensors) under a byte budget, shared by epochs."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple, Any] = OrderedDict()

    @staticmethod
    def _nbytes(value: Any) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        return sum(a.nbytes for a in value)

    def get(self, key: tuple) -> Any | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: tuple, value: Any) -> None:
        size = self._nbytes(value)
        if size > self.max_bytes or key in self._items:
            return
        self._items[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= self._nbytes(old)


def decode_views(frame: MultiViewFrame) -> list[np.ndarray]:
    """The V images of a frame as RGB uint8 (h, w, 3) arrays; ValueError names a bad one."""
    if frame.images is None:
        raise ValueError(f"{frame.sequence}/{frame.frame}: the frame has no images (ingested "
                         f"without them); use model.input_mode 'pseudo_heatmaps'")  # fmt: skip
    out = []
    for cam, data in zip(frame.cameras, frame.images, strict=True):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{frame.sequence}/{frame.frame}: image of camera {cam.name} "
                             f"does not decode")  # fmt: skip
        if image.shape[:2] != (cam.height, cam.width):
            raise ValueError(f"{frame.sequence}/{frame.frame}: image of camera {cam.name} is "
                             f"{image.shape[1]}x{image.shape[0]} px, its calibration "
                             f"{cam.width}x{cam.height}")  # fmt: skip
        out.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return out


def _originals(frame: MultiViewFrame, cache: ImageCache | None) -> list[np.ndarray]:
    key = ("decoded", frame.sequence, frame.frame)
    images = cache.get(key) if cache is not None else None
    if images is None:
        images = decode_views(frame)
        if cache is not None:
            cache.put(key, images)
    return images


def _warp_views(images: Sequence[np.ndarray], affines_in: np.ndarray, size: tuple[int, int]
                ) -> torch.Tensor:  # fmt: skip
    """V images and (V, 2, 3) original -> input px transforms -> (V, 3, H, W) uint8."""
    warped = [warp_image(im, a, size) for im, a in zip(images, affines_in, strict=True)]
    return torch.from_numpy(np.stack(warped)).permute(0, 3, 1, 2).contiguous()


def make_views(
    frames: Sequence[MultiViewFrame],
    spec: BatchSpec,
    rng: np.random.Generator | None,
    cache: ImageCache | None = None,
) -> Views:
    """One version of every view: ``rng=None`` gives A3 (resize only); with an ``rng`` each
    view gets its own random affine and, on images, appearance augmentation (A1, A2)."""
    aug = spec.augment
    sizes = [[(c.width, c.height) for c in f.cameras] for f in frames]
    if rng is None:
        mats = [[get_resize_matrix(s, spec.input_size) for s in per] for per in sizes]
    else:
        mats = [
            [random_augmentation_matrix(rng, s, spec.input_size, aug.max_rotation_deg,
                                        tuple(aug.scale_range), aug.rotation_prob)
             for s in per]
            for per in sizes
        ]  # fmt: skip
    affines_in = np.asarray(mats)  # (B, V, 2, 3) original -> input px
    (W, H), (w, h) = spec.input_size, spec.heatmap_size
    to_heatmap = scale_affine(w / W, h / H)
    affines = torch.from_numpy(compose_affine(to_heatmap, affines_in)).to(torch.float32)
    if not spec.images:
        return Views(affines=affines, images=None)

    per_frame = []
    for f, a in zip(frames, affines_in, strict=True):
        key = ("a3", f.sequence, f.frame, spec.input_size)
        warped = cache.get(key) if cache is not None and rng is None else None
        if warped is None:
            warped = _warp_views(_originals(f, cache), a, spec.input_size)
            if cache is not None and rng is None:
                cache.put(key, warped)
        per_frame.append(warped)
    images = torch.stack(per_frame)  # (B, V, 3, H, W) uint8
    if rng is not None and aug.appearance:
        appearance = AppearanceAugment(aug.randaugment_ops, aug.randaugment_magnitude,
                                       aug.cutout_prob, aug.cutout_area)  # fmt: skip
        images = appearance(images.flatten(0, 1), rng).reshape(images.shape)
    return Views(affines=affines, images=normalize_images(images))


def off_border(xy: Array, size: Array, border_px: float) -> Array:
    """xy (..., 2) px, image sizes (..., 2) (w, h) that broadcast against it -> (...) bool: at
    least ``border_px`` from every edge (pixel centres run from 0 to size - 1). NumPy arrays
    or torch tensors."""
    return ((xy >= border_px) & (xy <= size - 1.0 - border_px)).all(-1)


def _pseudo_poses(frames: Sequence[MultiViewFrame], border_px: float = 0.0) -> PseudoPoses:
    """The frames' pseudo poses padded to (B, V, P, J); with ``border_px`` > 0 the joints
    that lie within that many px of their image's border count as undetected."""
    views = [f.pseudo_poses if f.pseudo_poses is not None else [None] * len(f.cameras)
             for f in frames]  # fmt: skip
    p_max = max([1] + [len(p) for per in views for p in per if p is not None])
    B, V = len(frames), len(frames[0].cameras)
    arr = np.zeros((B, V, p_max, NUM_JOINTS, 3), dtype=np.float32)
    for b, per in enumerate(views):
        for v, poses in enumerate(per):
            if poses is not None and len(poses):
                arr[b, v, : len(poses)] = poses
    ok = np.isfinite(arr).all(-1) & (arr[..., 2] > 0)  # NaN joints count as undetected
    if border_px > 0:
        # A heatmap detector answers inside the image: a joint it cannot see there (out of
        # frame) is put on the border, where its position says nothing of the person.
        size = np.array([[[c.width, c.height] for c in f.cameras] for f in frames], np.float32)
        ok &= off_border(arr[..., :2], size[:, :, None, None], border_px)  # (B, V, P, J)
    arr = np.where(ok[..., None], arr, 0.0)
    return PseudoPoses(joints=torch.from_numpy(arr[..., :2]).contiguous(),
                       confidence=torch.from_numpy(arr[..., 2]).contiguous())  # fmt: skip


def _ground_truth(frames: Sequence[MultiViewFrame]) -> GroundTruth | None:
    if any(f.gt_poses is None for f in frames):
        return None
    g_max = max([1] + [len(f.gt_poses) for f in frames])
    arr = np.zeros((len(frames), g_max, NUM_JOINTS, 4), dtype=np.float32)
    for b, f in enumerate(frames):
        arr[b, : len(f.gt_poses)] = f.gt_poses
    visible = arr[..., 3] > GT_MIN_VISIBILITY
    return GroundTruth(poses=torch.from_numpy(arr[..., :3]).contiguous(),
                       visible=torch.from_numpy(visible))  # fmt: skip


def make_batch(
    frames: Sequence[MultiViewFrame],
    spec: BatchSpec,
    rng: np.random.Generator | None = None,
    cache: ImageCache | None = None,
) -> Batch:
    """Collate frames (same number of views) into a :class:`Batch` with ``spec.versions``.

    ``rng`` drives the A1/A2 augmentations (required when they are requested).
    """
    if not frames:
        raise ValueError("make_batch needs at least one frame")
    n_views = {len(f.cameras) for f in frames}
    if len(n_views) != 1:
        raise ValueError(
            f"frames of one batch must have the same number of views, got "
            f"{sorted(n_views)} ({[f'{f.sequence}/{f.frame}' for f in frames]})"
        )
    if rng is None and any(v != "a3" for v in spec.versions):
        raise ValueError("augmented versions a1/a2 need an rng")
    cams = [stack_cameras(f.cameras) for f in frames]
    cameras = CameraBatch.from_mapping({k: np.stack([c[k] for c in cams]) for k in cams[0]})
    # A1 and A2 come from the same call with the same generator: independent draws.
    versions = {name: make_views(frames, spec, None if name == "a3" else rng, cache)
                for name in spec.versions}  # fmt: skip
    return Batch(keys=[(f.sequence, f.frame) for f in frames], cameras=cameras,
                 versions=versions, pseudo=_pseudo_poses(frames, spec.pseudo_border_px),
                 gt=_ground_truth(frames))  # fmt: skip


def iterate_batches(
    frames: Sequence[MultiViewFrame],
    batch_size: int,
    rng: np.random.Generator,
    spec: BatchSpec,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    skip: int = 0,
    limit: int = 0,
    cache: ImageCache | None = None,
) -> Iterator[Batch]:
    """Batches over ``frames`` in a random (``shuffle``) or stored order.

    The order and one generator per batch are drawn from ``rng`` up front, so skipping the
    first ``skip`` batches (a resumed epoch) reproduces the rest exactly without building
    them. ``limit`` > 0 stops after that many batches (counted from the start, skipped ones
    included).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = rng.permutation(len(frames)) if shuffle else np.arange(len(frames))
    n = len(frames) // batch_size if drop_last else -(-len(frames) // batch_size)
    if limit:
        n = min(n, limit)
    seeds = rng.integers(0, 2**62, size=n)
    for i in range(skip, n):
        chunk = [frames[j] for j in order[i * batch_size : (i + 1) * batch_size]]
        yield make_batch(chunk, spec, np.random.default_rng(int(seeds[i])), cache)
