"""Figures and videos: evaluation figures (3D predicted-vs-GT skeletons, 2D skeletons over
camera images) and prediction renderings (per-track overlays, view mosaics, a 3D scene with
the cameras, MP4 mosaic videos).

Units and frames: 3D poses are world mm (z up, DESIGN §3); 2D poses are px of the image they
are drawn on, OpenCV convention (the centre of the top-left pixel is (0, 0)). Skeletons are the
15-joint Panoptic skeleton (:data:`selfpose3d.skeleton.LIMBS15`).

Every file is written atomically (temporary file + rename); the format of a figure follows
the file's suffix (PNG when there is none). matplotlib is imported inside the 3D plotting
functions only and used through ``matplotlib.figure.Figure`` (rendered by Agg), never through
pyplot, so no global backend is chosen or changed. 2D drawing is OpenCV's.

Colour order: the evaluation figures take RGB images; :func:`draw_overlay`, :func:`mosaic`
and :func:`write_mosaic_video` work on OpenCV's BGR images (what ``cv2.imread`` returns).

Shape legend: P predicted people, G ground-truth people, J = 15 joints, V views.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from selfpose3d.geometry.camera import Camera, depth
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


# -- prediction renderings: per-track colours, overlays, mosaics, 3D scene, video -------------

# One colour per track id (RGB): matplotlib's tab20 without its two greys, so that no track
# looks like an untracked person (UNTRACKED_COLOUR). Ids wrap around after 18.
TRACK_COLOURS: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232),
    (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
    (247, 182, 210), (219, 219, 141), (158, 218, 229),
)  # fmt: skip
UNTRACKED_COLOUR: RGB = (160, 160, 160)  # track id -1 (tracking off)
HEAD_INDEX = 1  # the nose: track labels are written above it


def track_colours(track_ids: np.ndarray | Sequence[int]) -> np.ndarray:
    """(P,) track ids -> (P, 3) uint8 RGB: a fixed palette indexed by id, grey for id < 0."""
    ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
    palette = np.array(TRACK_COLOURS, dtype=np.uint8)
    colours = palette[np.mod(ids, len(palette))]
    colours[ids < 0] = UNTRACKED_COLOUR
    return colours


def track_colour(track_id: int) -> RGB:
    """The RGB colour of one track id (see :func:`track_colours`)."""
    r, g, b = track_colours([track_id])[0]
    return int(r), int(g), int(b)


def _bgr_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{name} must be (H, W, 3) uint8 BGR, got {image.shape} {image.dtype}")
    return image


def _track_ids(track_ids: np.ndarray | Sequence[int] | None, people: int) -> np.ndarray:
    if track_ids is None:
        return np.full(people, -1, dtype=np.int64)
    ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
    if len(ids) != people:
        raise ValueError(f"track_ids must have one id per person ({people}), got {len(ids)}")
    return ids


def draw_overlay(
    image: np.ndarray,
    camera: Camera,
    poses: np.ndarray,
    track_ids: np.ndarray | Sequence[int] | None = None,
) -> np.ndarray:
    """3D skeletons projected into one camera and drawn over its image; returns a new image.

    image: (H, W, 3) uint8 BGR, the camera's image (its size must be the calibration's:
    use :meth:`Camera.scaled` for resized images). camera: world mm -> px of this image, lens
    distortion included. poses: (P, J, 3) world mm; joints with NaN/inf, behind the camera,
    or more than one image size outside the image are not drawn. track_ids: (P,) ints
    (default all -1): the colour of each person (:func:`track_colours`) and the label written
    above the head (none for -1).
    """
    image = _bgr_image(image)
    poses = _poses(poses, 3, "poses")
    ids = _track_ids(track_ids, len(poses))
    h, w = image.shape[:2]
    if (camera.width, camera.height) != (w, h):
        raise ValueError(f"camera {camera.name} is calibrated for {camera.width}x"
                         f"{camera.height} px but the image is {w}x{h} px")  # fmt: skip
    canvas = image.copy()
    if len(poses) == 0:
        return canvas
    points = poses.reshape(-1, 3)
    finite = np.isfinite(points).all(-1)
    safe = np.where(finite[:, None], points, 0.0)
    uv = camera.project(safe).reshape(len(poses), NUM_JOINTS, 2)  # all people at once
    in_front = (depth(safe, camera.R, camera.t) > 0).reshape(len(poses), NUM_JOINTS)
    near = ((uv[..., 0] >= -w) & (uv[..., 0] <= 2 * w)
            & (uv[..., 1] >= -h) & (uv[..., 1] <= 2 * h))  # fmt: skip
    ok = finite.reshape(len(poses), NUM_JOINTS) & in_front & near
    fixed = np.round(np.where(ok[..., None], uv, 0) * (1 << _SHIFT)).astype(np.int32)
    limbs = np.array(LIMBS15)
    segments = fixed[:, limbs]  # (P, L, 2, 2)
    limb_ok = ok[:, limbs].all(-1)  # (P, L)
    thickness = max(1, round(max(h, w) / 400))
    radius = (thickness + 1) << _SHIFT
    scale = max(0.4, max(h, w) / 1200)
    colours = track_colours(ids)[:, ::-1]  # BGR
    # One OpenCV call per person and primitive: drawing, not a computation over people.
    for p in range(len(poses)):
        bgr = tuple(int(c) for c in colours[p])
        if limb_ok[p].any():
            cv2.polylines(canvas, list(segments[p][limb_ok[p]]), False, bgr, thickness,
                          cv2.LINE_AA, _SHIFT)  # fmt: skip
        for x, y in fixed[p][ok[p]]:
            cv2.circle(canvas, (int(x), int(y)), radius, bgr, -1, cv2.LINE_AA, _SHIFT)
        if ids[p] >= 0 and ok[p].any():
            anchor = uv[p, HEAD_INDEX] if ok[p, HEAD_INDEX] else uv[p][ok[p]].min(0)
            org = (int(anchor[0]) - 4 * thickness, int(anchor[1]) - 6 * thickness - 2)
            cv2.putText(canvas, str(ids[p]), org, cv2.FONT_HERSHEY_SIMPLEX, scale, bgr,
                        thickness, cv2.LINE_AA)  # fmt: skip
    return canvas


def _even(n: float) -> int:
    # MPEG-4 encoders want even frame sizes.
    return max(2, 2 * math.ceil(n / 2))


def mosaic(
    images: Sequence[np.ndarray],
    cols: int | None = None,
    tile_width: int = 480,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """Views tiled row by row into one (rows * th, cols * tw, 3) uint8 BGR image.

    images: V (H_v, W_v, 3) uint8 BGR. cols: tiles per row (default ceil(sqrt(V))). Each
    image is resized to ``tile_width`` px wide (an even number), keeping its aspect; the tile
    height th is the tallest resized image's, rounded to even, so the mosaic suits
    :func:`write_mosaic_video`. names: V labels (e.g. camera names) written on the tiles.
    """
    if not images:
        raise ValueError("mosaic needs at least one image")
    images = [_bgr_image(im, f"image {i}") for i, im in enumerate(images)]
    if names is not None and len(names) != len(images):
        raise ValueError(f"names must have one label per image ({len(images)}), got "
                         f"{len(names)}")  # fmt: skip
    if tile_width < 2:
        raise ValueError(f"tile_width must be >= 2 px, got {tile_width}")
    cols = cols or math.ceil(math.sqrt(len(images)))
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    rows = math.ceil(len(images) / cols)
    tw = _even(tile_width)
    heights = [max(1, round(tw * im.shape[0] / im.shape[1])) for im in images]
    th = _even(max(heights))
    out = np.zeros((rows * th, cols * tw, 3), np.uint8)
    scale = max(0.4, tw / 800)
    for i, (im, hi) in enumerate(zip(images, heights, strict=True)):
        r, c = divmod(i, cols)
        tile = out[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
        tile[:hi] = cv2.resize(im, (tw, hi), interpolation=cv2.INTER_AREA)
        if names is not None:
            (tx, ty), base = cv2.getTextSize(str(names[i]), cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            cv2.rectangle(tile, (0, 0), (tx + 8, ty + base + 8), (0, 0, 0), -1)
            cv2.putText(tile, str(names[i]), (4, ty + 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
    return out


def _frustum(camera: Camera, length: float) -> np.ndarray:
    """(5, 3) world mm: the camera centre and its image corners back-projected to ``length``
    mm depth (pinhole, distortion ignored: a drawing aid)."""
    w, h = camera.width - 0.5, camera.height - 0.5
    corners = np.array([[-0.5, -0.5, 1], [w, -0.5, 1], [w, h, 1], [-0.5, h, 1]])
    rays = corners @ np.linalg.inv(camera.K).T  # camera frame, z = 1
    cam_points = rays * length
    world = (cam_points - camera.t) @ camera.R  # R^T (X_cam - t), row-wise
    return np.concatenate([camera.center[None], world])


def _box_edges(center: Sequence[float], size: Sequence[float]) -> np.ndarray:
    """(12, 2, 3) world mm: the edges of an axis-aligned box."""
    c, s = np.asarray(center, float), np.asarray(size, float)
    corners = c + (np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, -1).T
                   - 0.5) * s  # fmt: skip
    pairs = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
    return corners[np.array(pairs)]


def plot_scene_3d(
    cameras: Sequence[Camera],
    poses: np.ndarray,
    track_ids: np.ndarray | Sequence[int] | None,
    path: Path | str,
    space: tuple[Sequence[float], Sequence[float]] | None = None,
    title: str | None = None,
) -> Path:
    """The scene in one 3D plot; returns ``path``.

    cameras: world mm (drawn as centre, small frustum along the viewing direction, name).
    poses: (P, J, 3) world mm, coloured by ``track_ids`` (P,) (:func:`track_colours`);
    joints with NaN/inf are not drawn. space: (center (3,), size (3,)) mm of the capture
    space, drawn as a box. The axes share one scale (a cube), z up; the floor z = 0 is drawn
    as a grey rectangle under everything.
    """
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

    poses = _poses(poses, 3, "poses")
    ids = _track_ids(track_ids, len(poses))
    path = Path(path)
    fig = Figure(figsize=(7, 7), dpi=100)
    ax = fig.add_subplot(projection="3d")
    drawn: list[np.ndarray] = [np.zeros((1, 3))]

    centres = np.array([c.center for c in cameras]).reshape(-1, 3)
    if len(cameras):
        spread = np.ptp(np.concatenate([centres, np.zeros((1, 3))]), axis=0).max()
        frusta = np.stack([_frustum(c, max(spread, 1000.0) * 0.08) for c in cameras])  # (V,5,3)
        edges = np.concatenate([
            np.stack([frusta[:, [0, k]] for k in range(1, 5)], 1),
            np.stack([frusta[:, [k, k % 4 + 1]] for k in range(1, 5)], 1),
        ], 1).reshape(-1, 2, 3)  # fmt: skip
        ax.add_collection3d(Line3DCollection(edges, colors="k", linewidths=0.8))
        ax.scatter(*centres.T, color="k", s=10, depthshade=False)
        for c, centre in zip(cameras, centres, strict=True):
            ax.text(*centre, f" {c.name}", fontsize=7)
        drawn += [centres, frusta.reshape(-1, 3)]
    if space is not None:
        box = _box_edges(*space)
        ax.add_collection3d(Line3DCollection(box, colors=[(0.3, 0.5, 0.9)], linewidths=0.8,
                                             linestyles="dashed"))  # fmt: skip
        drawn.append(box.reshape(-1, 3))

    colours = track_colours(ids) / 255.0
    ok = np.isfinite(poses).all(-1)  # (P, J)
    limbs = np.array(LIMBS15)
    limb_ok = ok[:, limbs].all(-1)  # (P, L)
    if limb_ok.any():
        segments = poses[:, limbs][limb_ok]  # (S, 2, 3)
        per_segment = np.repeat(colours, limb_ok.sum(1), axis=0)
        ax.add_collection3d(Line3DCollection(segments, colors=per_segment, linewidths=2.0))
    if ok.any():
        ax.scatter(*poses[ok].T, color=np.repeat(colours, ok.sum(1), axis=0), s=6,
                   depthshade=False)  # fmt: skip
        drawn.append(poses[ok])

    points = np.concatenate(drawn)
    lo, hi = points.min(0), points.max(0)
    half = max(float((hi - lo).max()) / 2, 500.0) * 1.05
    centre = (lo + hi) / 2
    z0 = min(0.0, float(lo[2]))  # the floor sits at the bottom of the plot
    floor = [
        [centre[0] - half, centre[1] - half, 0],
        [centre[0] + half, centre[1] - half, 0],
        [centre[0] + half, centre[1] + half, 0],
        [centre[0] - half, centre[1] + half, 0],
    ]
    ax.add_collection3d(Poly3DCollection([floor], facecolors=[(0.6, 0.6, 0.6, 0.25)],
                                         edgecolors=[(0.5, 0.5, 0.5, 0.5)]))  # fmt: skip
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(z0, z0 + 2 * half)
    ax.set_box_aspect((1, 1, 1))
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_zlabel("z (mm)")
    ax.view_init(elev=25, azim=-60)
    ax.set_title(title or f"{len(poses)} people, {len(cameras)} cameras")
    buf = io.BytesIO()
    fig.savefig(buf, format=_suffix_format(path))
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_mosaic_video(path: Path | str, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write BGR uint8 frames (all (H, W, 3), the first one's size) as an MP4 (OpenCV's
    ``mp4v`` codec); returns the number of frames written.

    The video is written to a temporary file next to ``path`` and renamed when complete; on
    any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix tells OpenCV the container.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.mp4")
    os.close(fd)
    writer = None
    count = 0
    try:
        for i, frame in enumerate(frames):
            frame = _bgr_image(frame, f"video frame {i}")
            h, w = frame.shape[:2]
            if writer is None:
                size = (w, h)
                writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
                if not writer.isOpened():
                    raise ValueError(
                        f"{path}: OpenCV cannot open an mp4v video writer for "
                        f"{w}x{h} px (no MPEG-4 encoder in this OpenCV build?)"
                    )
            elif (w, h) != size:
                raise ValueError(f"{path}: video frame {i} is {w}x{h} px, the first frame "
                                 f"{size[0]}x{size[1]} px")  # fmt: skip
            writer.write(frame)
            count += 1
        if writer is None:
            raise ValueError(f"{path}: no frames to write")
        writer.release()
        writer = None
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.release()
        Path(tmp).unlink(missing_ok=True)
    return count


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
