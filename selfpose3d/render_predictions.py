"""Render the predictions of ``selfpose3d predict`` over the recording they came from.

Inputs: ``PRED/predictions.jsonl`` (one JSON object per frame, in frame order:
``{"sequence", "frame", "people": [{"track_id", "score", "joints": 15 x [x, y, z]}]}``, world
mm, z up, Panoptic-15 joints) and the Panoptic-layout root the frames come from (only its
calibration and images are read: no pseudo labels or GT are needed).

Outputs under ``OUT/``:
- ``overlays/<seq>_<frame:08d>.jpg``: a mosaic of all views with the skeletons drawn in their
  track colours, for a few frames spread over each sequence;
- ``scene_<seq>_<frame:08d>.png``: the 3D scene (cameras and skeletons) for the same frames;
- ``<seq>.mp4``: the mosaic video of the rendered frames of each sequence.

Shape legend: P people, J = 15 joints, V views.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from selfpose3d.data import panoptic_layout as layout
from selfpose3d.geometry.camera import Camera
from selfpose3d.io import atomic_write_bytes
from selfpose3d.skeleton import NUM_JOINTS
from selfpose3d.visualize import _safe_name, draw_overlay, mosaic, plot_scene_3d, write_mosaic_video

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
_MISSING_GREY = 64  # the tile of a view whose image is missing


@dataclass(kw_only=True)
class PredictedFrame:
    """The people predicted in one frame."""

    sequence: str
    frame: int
    poses: np.ndarray  # (P, J, 3) world mm
    track_ids: np.ndarray  # (P,) int64, -1 = untracked
    scores: np.ndarray  # (P,) float64


def _frame_from_json(obj: Any, where: str) -> PredictedFrame:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("sequence", "frame", "people") if k not in obj]
    if missing:
        raise ValueError(f"{where}: missing {missing} (need sequence, frame, people)")
    people = obj["people"]
    if not isinstance(people, list):
        raise ValueError(f"{where}: 'people' must be a list")
    try:
        poses = np.array([p["joints"] for p in people], dtype=np.float64).reshape(-1, NUM_JOINTS, 3)
        ids = np.array([int(p.get("track_id", -1)) for p in people], dtype=np.int64)
        scores = np.array([float(p.get("score", np.nan)) for p in people], dtype=np.float64)
        frame = int(obj["frame"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: malformed people (each needs 'joints': {NUM_JOINTS} x "
                         f"[x, y, z] mm) ({e})") from e  # fmt: skip
    return PredictedFrame(sequence=str(obj["sequence"]), frame=frame, poses=poses,
                          track_ids=ids, scores=scores)  # fmt: skip


def read_predictions(path: Path | str) -> list[PredictedFrame]:
    """Every frame of a ``predictions.jsonl`` (or of ``<path>/predictions.jsonl`` for a
    directory), in file order; a bad line raises ValueError naming the file and line."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".jsonl":
        path = path / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions not found (expected the {PREDICTIONS_FILE} "
                                f"that `selfpose3d predict` writes)")  # fmt: skip
    frames = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from e
            frames.append(_frame_from_json(obj, where))
    return frames


def sequence_cameras(root: Path, sequence: str) -> list[Camera]:
    """The cameras of ``sequence`` that have images: the root's manifest.json ``cameras``
    list when it has one, else every calibrated camera with an image folder."""
    calibration = layout.read_calibration(layout.calibration_path(root, sequence))
    manifest = root / "manifest.json"
    names: list[str] = []
    if manifest.is_file():
        try:
            names = [str(n) for n in json.loads(manifest.read_text()).get("cameras", [])]
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise ValueError(f"{manifest}: manifest is not a valid JSON object ({e})") from e
    image_dir = root / sequence / layout.IMAGE_DIR
    if not names:
        names = [n for n in calibration if (image_dir / n).is_dir()]
    absent = [n for n in names if n not in calibration]
    if absent:
        raise ValueError(f"{layout.calibration_path(root, sequence)}: no camera {absent[0]!r} "
                         f"(listed in {manifest})")  # fmt: skip
    if not names:
        raise FileNotFoundError(f"{image_dir}: no image folder of any calibrated camera")
    return [calibration[n] for n in names]


def _read_view(root: Path, sequence: str, camera: Camera, frame: int
               ) -> tuple[np.ndarray, Camera]:  # fmt: skip
    """(image BGR, the camera at that image's size); a grey tile if the image is missing."""
    path = layout.image_path(root, sequence, camera.name, frame)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if image is None:
        log.warning("%s: image missing or unreadable; drawing a blank view", path)
        return np.full((camera.height, camera.width, 3), _MISSING_GREY, np.uint8), camera
    h, w = image.shape[:2]
    if (w, h) == (camera.width, camera.height):
        return image, camera
    if abs(w / h - camera.width / camera.height) > 0.01:
        raise ValueError(f"{path}: image is {w}x{h} px, its calibration {camera.width}x"
                         f"{camera.height} px (another aspect ratio)")  # fmt: skip
    return image, camera.scaled(w / camera.width, h / camera.height)


def render_frame(root: Path, pred: PredictedFrame, cameras: Sequence[Camera],
                 tile_width: int) -> np.ndarray:  # fmt: skip
    """The mosaic (BGR uint8) of all views of one frame with its predictions drawn."""
    tiles = []
    for camera in cameras:
        image, cam = _read_view(root, pred.sequence, camera, pred.frame)
        tiles.append(draw_overlay(image, cam, pred.poses, pred.track_ids))
    return mosaic(tiles, tile_width=tile_width, names=[c.name for c in cameras])


def _select(frames: list[PredictedFrame], span: tuple[int | None, int | None] | None,
            every: int, max_frames: int | None) -> list[PredictedFrame]:  # fmt: skip
    if span is not None:
        lo, hi = span
        frames = [f for f in frames
                  if (lo is None or f.frame >= lo) and (hi is None or f.frame < hi)]  # fmt: skip
    frames = frames[::every]
    return frames[:max_frames] if max_frames is not None else frames


def _stills(n: int, count: int) -> set[int]:
    """Indices of ``count`` frames spread evenly over ``n`` (first and last included)."""
    if n == 0 or count <= 0:
        return set()
    return {int(i) for i in np.linspace(0, n - 1, min(count, n)).round()}


def parse_frame_span(text: str) -> tuple[int | None, int | None]:
    """``"A:B"`` -> (A, B): frames A <= frame < B; either side may be empty."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise ValueError(f"--frames {text!r}: expected A:B (frame numbers, B excluded; "
                         f"either may be empty)") from None  # fmt: skip
    if lo is not None and hi is not None and hi <= lo:
        raise ValueError(f"--frames {text!r}: the end must be after the start")
    return lo, hi


def _render_sequence(
    root: Path,
    out: Path,
    kept: Sequence[PredictedFrame],
    cameras: Sequence[Camera],
    stills_at: set[int],
    *,
    every_frame: bool,
    tile_width: int,
    space: tuple[Sequence[float], Sequence[float]] | None,
    written: dict[str, list[str]],
) -> Iterator[np.ndarray]:
    """Mosaics of the kept frames (all of them, or with ``every_frame=False`` only the
    stills); the stills' overlay JPEGs and 3D scenes are written on the way and their paths
    appended to ``written``."""
    for i, pred in enumerate(kept):
        if not every_frame and i not in stills_at:
            continue
        image = render_frame(root, pred, cameras, tile_width)
        if i in stills_at:
            stem = f"{_safe_name(pred.sequence)}_{pred.frame:08d}"
            path = out / "overlays" / f"{stem}.jpg"
            atomic_write_bytes(path, cv2.imencode(".jpg", image)[1].tobytes())
            written["overlays"].append(str(path))
            title = f"{pred.sequence} frame {pred.frame}: {len(pred.poses)} people"
            scene = plot_scene_3d(cameras, pred.poses, pred.track_ids, out / f"scene_{stem}.png",
                                  space=space, title=title)  # fmt: skip
            written["scenes"].append(str(scene))
        yield image


def visualize_predictions(
    predictions_dir: Path | str,
    data_root: Path | str,
    out_dir: Path | str,
    *,
    sequence: str | None = None,
    frames: tuple[int | None, int | None] | None = None,
    video: bool = True,
    fps: float = 10.0,
    every: int = 1,
    max_frames: int | None = None,
    stills: int = 3,
    tile_width: int = 480,
    space: tuple[Sequence[float], Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Render predictions over their recording; returns a summary of what was written.

    predictions_dir: the output of ``selfpose3d predict`` (or its predictions.jsonl).
    data_root: the Panoptic-layout root of the predicted frames. sequence: only this one
    (default all in the predictions). frames: (A, B) keeps frames A <= frame < B. every:
    keep every n-th of those; max_frames: at most this many per sequence. stills: frames per
    sequence (spread evenly) that get an overlay mosaic JPEG and a 3D scene PNG. video: write
    ``<seq>.mp4`` of all kept frames at ``fps``. space: (center, size) mm of the capture
    space, drawn in the 3D scenes.

    Returns ``{"frames": int, "sequences": {seq: {"frames", "video", "overlays",
    "scenes"}}}``: the frames kept (the videos' length) and the paths written (strings;
    video None when not written). Raises ValueError when no frame is kept at all.
    """
    root, out = Path(data_root), Path(out_dir)
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root not found")
    predicted = read_predictions(predictions_dir)
    by_sequence: dict[str, list[PredictedFrame]] = {}
    for f in predicted:
        by_sequence.setdefault(f.sequence, []).append(f)
    if sequence is not None:
        if sequence not in by_sequence:
            raise ValueError(f"{predictions_dir}: no predictions of sequence {sequence!r} "
                             f"(there are {sorted(by_sequence)})")  # fmt: skip
        by_sequence = {sequence: by_sequence[sequence]}

    summary: dict[str, Any] = {"frames": 0, "sequences": {}}
    for seq, seq_frames in by_sequence.items():
        kept = _select(seq_frames, frames, every, max_frames)
        if not kept:
            log.warning("%s: no predicted frame in the selection; nothing rendered", seq)
            continue
        cameras = sequence_cameras(root, seq)
        written: dict[str, list[str]] = {"overlays": [], "scenes": []}
        mosaics = _render_sequence(root, out, kept, cameras, _stills(len(kept), stills),
                                   every_frame=video, tile_width=tile_width, space=space,
                                   written=written)  # fmt: skip
        video_path = out / f"{_safe_name(seq)}.mp4" if video else None
        if video_path is not None:
            write_mosaic_video(video_path, mosaics, fps)
        else:
            for _ in mosaics:  # the stills are written on the way
                pass
        summary["frames"] += len(kept)
        summary["sequences"][seq] = {
            "frames": len(kept), **written,
            "video": None if video_path is None else str(video_path),
        }  # fmt: skip
    if not summary["frames"]:
        raise ValueError(f"{predictions_dir}: no predicted frame matches the selection "
                         f"(frames {frames}, sequence {sequence})")  # fmt: skip
    return summary
