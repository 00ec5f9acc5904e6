"""Affine image transforms: resizing to the network input and random augmentation.

A transform is a (2, 3) matrix ``A`` mapping a *source* pixel ``p`` (the original camera image)
to an *output* pixel ``A[:, :2] @ p + A[:, 2]`` (the network input or the augmented image).
Pixels follow OpenCV's pixel-centre convention: the centre of the top-left pixel is (0, 0) and
an image of width W spans [-0.5, W - 0.5]; this is the convention of ``cv2.warpAffine``, so
:func:`warp_image` and :func:`apply_affine` agree exactly. A pure resize by s therefore maps
``u' = (u + 0.5) * s - 0.5`` (as ``cv2.resize`` and ``Camera.scaled`` do).

Rotation angles are in degrees, positive = the image content turns counter-clockwise as
displayed (``cv2.getRotationMatrix2D``'s sense). Array functions accept NumPy arrays or torch
tensors (batched, differentiable); matrix builders return float64 NumPy.

Shape legend: N points, ``...`` leading batch dimensions (broadcast between arguments).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from selfpose3d.geometry.camera import Array, array_module, project_points


def get_affine_matrix(
    center: Sequence[float] | np.ndarray,
    scale_wh: Sequence[float] | np.ndarray,
    rot_deg: float,
    output_size: Sequence[int],
) -> np.ndarray:
    """The (2, 3) transform that crops a rotated box of the source image into the output.

    center: (2,) box centre, source px. scale_wh: (2,) box width and height, source px (the
    box's extent, not a 200 px unit as in older pose code). rot_deg: the box is rotated by
    -rot_deg, so the content appears turned by +rot_deg. output_size: (W, H) output px.
    The box centre lands on the output centre ((W - 1) / 2, (H - 1) / 2); the box fills the
    output exactly (isotropic when ``scale_wh`` has the output's aspect ratio).
    """
    cx, cy = np.asarray(center, dtype=np.float64)
    sw, sh = np.asarray(scale_wh, dtype=np.float64)
    W, H = output_size
    if sw <= 0 or sh <= 0:
        raise ValueError(f"box size must be positive, got {(sw, sh)}")
    a = np.deg2rad(rot_deg)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    L = np.diag([W / sw, H / sh]) @ rot
    b = np.array([(W - 1) / 2, (H - 1) / 2]) - L @ np.array([cx, cy])
    return np.concatenate([L, b[:, None]], axis=1)


def scale_affine(sx: float, sy: float) -> np.ndarray:
    """(2, 3) transform of a resize by (sx, sy): ``u' = (u + 0.5) * sx - 0.5`` (and v).

    E.g. network input -> heatmap at 1/4 resolution is ``scale_affine(0.25, 0.25)``.
    """
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def fit_box(image_size: Sequence[int], input_size: Sequence[int]) -> np.ndarray:
    """(2,) smallest box (w, h) px with the aspect of ``input_size`` that contains the image.

    The image is padded (never cropped) along the dimension that is too short, as VoxelPose
    does for 1920x1080 -> 960x512.
    """
    w, h = map(float, image_size)
    W, H = map(float, input_size)
    if w / W < h / H:
        return np.array([h / H * W, h])
    return np.array([w, w / W * H])


def get_resize_matrix(image_size: Sequence[int], input_size: Sequence[int]) -> np.ndarray:
    """(2, 3) transform original image (w, h) -> network input (W, H), keeping the aspect ratio.

    Centre = image centre ((w - 1) / 2, (h - 1) / 2); box = :func:`fit_box`; no rotation.
    """
    w, h = image_size
    return get_affine_matrix(((w - 1) / 2, (h - 1) / 2), fit_box(image_size, input_size), 0.0,
                             input_size)  # fmt: skip


def sample_augmentation(
    rng: np.random.Generator,
    max_rot_deg: float = 45.0,
    scale_range: tuple[float, float] = (0.1, 0.35),
    p_rot: float = 0.5,
) -> tuple[float, float]:
    """Draw (rot_deg, box_scale) from the paper's augmentation distribution.

    With probability ``p_rot`` the rotation is U(-max_rot_deg, max_rot_deg), else 0. The crop
    box is scaled by 1 + U(lo, hi) (zoom out) or by 1 - U(lo, hi) / 2 (zoom in), each with
    probability 0.5, as in the SelfPose3d data loader.
    """
    rot = float(rng.uniform(-max_rot_deg, max_rot_deg)) if rng.random() < p_rot else 0.0
    u = float(rng.uniform(*scale_range))
    scale = 1.0 + u if rng.random() < 0.5 else 1.0 - u / 2.0
    return rot, scale


def augmentation_matrix(
    image_size: Sequence[int], input_size: Sequence[int], rot_deg: float, box_scale: float
) -> np.ndarray:
    """(2, 3) transform original image -> augmented network input.

    The resize box of :func:`get_resize_matrix` scaled by ``box_scale`` (> 1 shows more of the
    scene, smaller) and rotated by ``rot_deg`` about the image centre.
    """
    w, h = image_size
    box = fit_box(image_size, input_size) * box_scale
    return get_affine_matrix(((w - 1) / 2, (h - 1) / 2), box, rot_deg, input_size)


def random_augmentation_matrix(
    rng: np.random.Generator,
    image_size: Sequence[int],
    input_size: Sequence[int],
    max_rot_deg: float = 45.0,
    scale_range: tuple[float, float] = (0.1, 0.35),
    p_rot: float = 0.5,
) -> np.ndarray:
    """Random (2, 3) transform original image -> augmented input (:func:`sample_augmentation`)."""
    rot, scale = sample_augmentation(rng, max_rot_deg, scale_range, p_rot)
    return augmentation_matrix(image_size, input_size, rot, scale)


def apply_affine(points: Array, A: Array) -> Array:
    """Transform points (..., N, 2) source px by A (..., 2, 3) -> (..., N, 2) output px."""
    return points @ array_module(points).swapaxes(A[..., :2], -1, -2) + A[..., None, :, 2]


def invert_affine(A: Array) -> Array:
    """(..., 2, 3) -> (..., 2, 3) inverse transform (output px -> source px)."""
    xp = array_module(A)
    L_inv = xp.linalg.inv(A[..., :2])
    b = -(L_inv @ A[..., :, 2:])
    return xp.concatenate([L_inv, b], -1)


def compose_affine(outer: Array, inner: Array) -> Array:
    """(..., 2, 3) transform applying ``inner`` first, then ``outer``."""
    xp = array_module(outer)
    L = outer[..., :2] @ inner[..., :2]
    b = outer[..., :2] @ inner[..., :, 2:] + outer[..., :, 2:]
    return xp.concatenate([L, b], -1)


def warp_image(
    image: np.ndarray,
    A: np.ndarray,
    output_size: Sequence[int],
    interpolation: int = cv2.INTER_LINEAR,
    border_value: Any = 0,
) -> np.ndarray:
    """Warp an (h, w[, C]) image with the (2, 3) transform A into an (H, W[, C]) image.

    Pixels outside the source are filled with ``border_value``.
    """
    W, H = output_size
    return cv2.warpAffine(image, np.asarray(A, dtype=np.float64), (int(W), int(H)),
                          flags=interpolation, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=border_value)  # fmt: skip


def project_to_image(
    points: Array, K: Array, dist: Array, R: Array, t: Array, A: Array, eps: float = 1e-6
) -> Array:
    """Project world points into transformed (resized / augmented) images.

    points (..., N, 3) world mm; camera arrays as in ``project_points``; A (..., 2, 3) the
    transform original image -> output image. Returns (..., N, 2) output-image px.
    """
    return apply_affine(project_points(points, K, dist, R, t, eps), A)
