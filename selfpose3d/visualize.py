"""Evaluation figures: 3D predicted-vs-GT skeletons and 2D skeletons over camera images.

Units and frames: 3D poses are world mm (z up, DESIGN §3); 2D poses are px of the image they
are drawn on, OpenCV convention (the centre of the top-left pixel is (0, 0)). Skeletons are the
15-joint Panoptic skeleton (:data:`selfpose3d.skeleton.LIMBS15`).

Every figure is written atomically (temporary file + rename); the format follows the file's
suffix (PNG when there is none). matplotlib is imported inside :func:`plot_poses_3d` only and
used through ``matplotlib.figure.Figure`` (rendered by Agg), never through pyplot, so no global
backend is chosen or changed. 2D overlays are drawn with OpenCV.

Shape legend: P predicted people, G ground-truth people, J = 15 joints.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from selfpose3d.geometry.camera import depth
from selfpose3d.io import atomic_write_bytes
from selfpose3d.skeleton import LIMBS15, NUM_JOINTS

if TYPE_CHECKING:
    from selfpose3d.data.panoptic import MultiViewFrame

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]
PRED_COLOUR: RGB = (214, 39, 40)  # red
GT_COLOUR: RGB = (40, 40, 40)  # near black
# One colour per person in 2D overlays (matplotlib's tab10, RGB).
PERSON_COLOURS: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
_SHIFT = 4  # OpenCV sub-pixel drawing: coordinates in 1/16 px


def _poses(x: np.ndarray, channels: int, name: str) -> np.ndarray:
    """``x`` as float64 (N, J, channels), or a ValueError naming the expected shape."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != (NUM_JOINTS, channels):
        raise ValueError(f"{name} must have shape (N, {NUM_JOINTS}, {channels}), got {x.shape}")
    return x


def _suffix_format(path: Path) -> str:
    return path.suffix.lower().lstrip(".") or "png"


def plot_poses_3d(
    pred: np.ndarray,
    gt: np.ndarray | None,
    path: Path | str,
    title: str | None = None,
) -> Path:
    """Predicted (red) and ground-truth (black) skeletons in one 3D plot; returns ``path``.

    pred: (P, J, 3) world mm; joints with NaN/inf are not drawn.
    gt: (G, J, 4) world mm + visibility (0/1), or None; invisible joints are not drawn.
    The axes are equal (a cube around every drawn joint), z up.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    pred = _poses(pred, 3, "pred")
    gt = _poses(np.zeros((0, NUM_JOINTS, 4)) if gt is None else gt, 4, "gt")
    path = Path(path)
    fig = Figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot(projection="3d")
    drawn = []
    people = [(p[:, :3], (p[:, 3] > 0) & np.isfinite(p).all(-1), GT_COLOUR, 1.5) for p in gt]
    people += [(p, np.isfinite(p).all(-1), PRED_COLOUR, 2.0) for p in pred]
    for joints, ok, colour, width in people:
        rgb = np.array(colour) / 255
        segments = [joints[[a, b]] for a, b in LIMBS15 if ok[a] and ok[b]]
        if segments:
            ax.add_collection3d(Line3DCollection(segments, colors=[rgb], linewidths=width))
        if ok.any():
            ax.scatter(*joints[ok].T, color=rgb, s=6, depthshade=False)
            drawn.append(joints[ok])

    points = np.concatenate(drawn) if drawn else np.zeros((1, 3))
    centre = (points.min(0) + points.max(0)) / 2
    half = max(float((points.max(0) - points.min(0)).max()) / 2, 500.0) * 1.05
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(centre[2] - half, centre[2] + half)
    ax.set_box_aspect((1, 1, 1))
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_zlabel("z (mm)")
    ax.view_init(elev=20, azim=-60)
    handles = [
        Line2D([], [], color=np.array(PRED_COLOUR) / 255, label=f"prediction ({len(pred)})"),
        Line2D([], [], color=np.array(GT_COLOUR) / 255, label=f"ground truth ({len(gt)})"),
    ]
    ax.legend(handles=handles, loc="upper left")
    if title:
        ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format=_suffix_format(path))
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_overlay_2d(
    image: np.ndarray,
    poses_2d: np.ndarray,
    path: Path | str,
    visible: np.ndarray | None = None,
    colours: Sequence[RGB] = PERSON_COLOURS,
) -> Path:
    """Skeletons drawn over an image, one colour per person; returns ``path``.

    image: (H, W, 3) uint8 RGB. poses_2d: (P, J, 2) px of this image. visible: (P, J) bool,
    joints to draw (default all); joints with NaN/inf, or more than one image size outside the
    image (e.g. behind the camera), are never drawn. colours: RGB, cycled over people.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    poses = _poses(poses_2d, 2, "poses_2d")
    if visible is None:
        visible = np.ones(poses.shape[:2], dtype=bool)
    visible = np.asarray(visible, dtype=bool)
    if visible.shape != poses.shape[:2]:
        raise ValueError(f"visible must have shape {poses.shape[:2]}, got {visible.shape}")
    if not colours:
        raise ValueError("colours must hold at least one RGB colour")
    path = Path(path)

    h, w = image.shape[:2]
    near = ((poses[..., 0] >= -w) & (poses[..., 0] <= 2 * w)
            & (poses[..., 1] >= -h) & (poses[..., 1] <= 2 * h))  # fmt: skip
    ok = visible & np.isfinite(poses).all(-1) & near
    fixed = np.round(np.where(ok[..., None], poses, 0) * (1 << _SHIFT)).astype(np.int64)
    thickness = max(1, round(max(h, w) / 300))
    radius = (thickness + 1) << _SHIFT
    canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # a copy, in OpenCV's channel order
    for p in range(len(poses)):
        bgr = tuple(int(c) for c in colours[p % len(colours)][::-1])
        pts = [tuple(int(v) for v in xy) for xy in fixed[p]]
        for a, b in LIMBS15:
            if ok[p, a] and ok[p, b]:
                cv2.line(canvas, pts[a], pts[b], bgr, thickness, cv2.LINE_AA, _SHIFT)
        for j in np.flatnonzero(ok[p]):
            cv2.circle(canvas, pts[j], radius, bgr, -1, cv2.LINE_AA, _SHIFT)
    done, encoded = cv2.imencode(f".{_suffix_format(path)}", canvas)
    if not done:
        raise ValueError(f"{path}: OpenCV cannot encode an image of this format")
    atomic_write_bytes(path, encoded.tobytes())
    return path


def _decode_view(frame: MultiViewFrame, view: int) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB image of one view, or None (no images, no such view, undecodable)."""
    if frame.images is None or view >= len(frame.images) or view >= len(frame.cameras):
        return None
    bgr = cv2.imdecode(np.frombuffer(frame.images[view], np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        log.warning("%s frame %d view %d: image cannot be decoded; no overlay", frame.sequence,
                    frame.frame, view)  # fmt: skip
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def write_eval_figures(
    frames: Sequence[MultiViewFrame],
    predictions: Sequence[np.ndarray],
    out_dir: Path | str,
    *,
    max_frames: int = 4,
    view: int = 0,
) -> list[Path]:
    """Figures for the first ``max_frames`` frames; returns the written paths.

    predictions: per frame, (P, J, 3) world mm. Per frame: ``<seq>_<frame>_3d.png``
    (prediction vs GT) and, when the frame carries images, ``<seq>_<frame>_<camera>_2d.png``:
    the predictions projected into view ``view`` (with its lens distortion) over its image.
    Joints behind that camera are not drawn.
    """
    if len(frames) != len(predictions):
        raise ValueError(f"{len(frames)} frames but {len(predictions)} predictions")
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for frame, pred in list(zip(frames, predictions, strict=True))[:max_frames]:
        pred = _poses(pred, 3, f"prediction of {frame.sequence} frame {frame.frame}")
        stem = f"{_safe_name(frame.sequence)}_{frame.frame:08d}"
        n_gt = 0 if frame.gt_poses is None else len(frame.gt_poses)
        title = f"{frame.sequence} frame {frame.frame}: {len(pred)} predicted, {n_gt} GT"
        paths.append(plot_poses_3d(pred, frame.gt_poses, out_dir / f"{stem}_3d.png", title))
        image = _decode_view(frame, view)
        if image is None:
            continue
        camera = frame.cameras[view]
        points = pred.reshape(-1, 3)
        uv = camera.project(points).reshape(len(pred), NUM_JOINTS, 2)
        in_front = (depth(points, camera.R, camera.t) > 0).reshape(len(pred), NUM_JOINTS)
        name = f"{stem}_{_safe_name(camera.name)}_2d.png"
        paths.append(plot_overlay_2d(image, uv, out_dir / name, visible=in_front))
    return paths
