"""Read a Panoptic-layout root (real CMU Panoptic or synthetic) into multi-view frames.

World frame: mm, z up (converted from Panoptic's cm, y down on read; see panoptic_layout.py).
Pixels: OpenCV convention (top-left pixel centre at (0, 0)) of the *stored* image, i.e. after
the optional resize of ``DataConfig.image_width/height``.

Errors come in two sizes. Anything wrong with a whole sequence (missing or malformed
calibration, a selected camera that the calibration lacks, a malformed pseudo-label file) raises
``ValueError``/``FileNotFoundError`` naming the file. Anything wrong with one frame (a missing or
undecodable image, a malformed or NaN pose file, no pseudo labels for the frame) raises
:class:`FrameError`; :meth:`PanopticReader.iter_sequence` turns it into a :class:`Rejection` so
that one bad file is reported, never silently skipped, and never stops the rest.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.config import DataConfig
from selfpose3d.data.pseudo_labels import PseudoLabels, read_pseudo_labels
from selfpose3d.geometry.camera import Camera
from selfpose3d.skeleton import NUM_JOINTS, ROOT_INDEX, panoptic19_to_15

Split = Literal["train", "test"]
CameraKey = str | tuple[int, int]  # a camera name, or (panel, node)
JOINT_VISIBLE_CONF = 0.1  # a GT joint is visible when its confidence exceeds this (DESIGN §3.1)
_PANEL_NODE_RE = re.compile(r"^\(?\s*(\d+)\s*[_:,]\s*(\d+)\s*\)?$")


@dataclass(kw_only=True)
class MultiViewFrame:
    """One time instant of one rig seen by V views (one Parquet row, DESIGN §3.2)."""

    sequence: str
    frame: int
    cameras: list[Camera]  # V cameras, world mm z-up, at the stored image size
    images: list[bytes] | None  # V encoded JPEGs; None when read without images
    image_paths: list[str]  # V source image files
    # V arrays (P_v, 15, 3): x, y in px of the stored image, confidence; None = no labels.
    pseudo_poses: list[np.ndarray] | None
    gt_poses: np.ndarray | None  # (P, 15, 4) float32: x, y, z mm world, visibility 0/1
    gt_ids: np.ndarray | None  # (P,) int64 Panoptic body ids

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]


@dataclass(kw_only=True, frozen=True)
class Rejection:
    """A frame that could not be read: which file, and why. ``kind`` is a short code."""

    sequence: str
    frame: int
    file: str
    kind: str  # missing_image | bad_image | bad_pose_file | missing_pseudo_labels
    reason: str

    def to_dict(self) -> dict[str, str | int]:
        return {"sequence": self.sequence, "frame": self.frame, "file": self.file,
                "kind": self.kind, "reason": self.reason}  # fmt: skip


class FrameError(ValueError):
    """One frame cannot be read; the message names the file."""

    def __init__(self, kind: str, file: Path | str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.kind, self.file, self.reason = kind, str(file), reason


@dataclass(kw_only=True)
class _Sequence:
    """What a sequence's frames share; read once per sequence."""

    name: str
    source_cameras: list[Camera]  # selected, at the calibration's resolution
    cameras: list[Camera]  # at the stored resolution
    frames: list[int]  # every readable frame index, before the split's interval
    has_gt: bool
    label_file: Path | None
    labels: PseudoLabels | None
    label_scale: list[tuple[float, float]]  # per view: label px -> stored px, (sx, sy)


def select_cameras(calibration: dict[str, Camera], keys: Sequence[CameraKey],
                   source: Path | str) -> list[Camera]:  # fmt: skip
    """Pick cameras by name, or by (panel, node) given as a tuple or a "0_3"/"0:3" string."""
    out: list[Camera] = []
    for key in keys:
        if isinstance(key, str) and key in calibration:
            out.append(calibration[key])
            continue
        match = _PANEL_NODE_RE.match(key.strip()) if isinstance(key, str) else None
        if isinstance(key, tuple | list) and len(key) == 2:
            panel_node = (int(key[0]), int(key[1]))
        elif match:
            panel_node = (int(match.group(1)), int(match.group(2)))
        else:
            raise ValueError(f"{source}: camera {key!r} is not in the calibration")
        found = [c for c in calibration.values()
                 if (c.extra.get("panel"), c.extra.get("node")) == panel_node]  # fmt: skip
        if len(found) != 1:
            what = "is not in" if not found else "is ambiguous in"
            if isinstance(key, str):
                raise ValueError(f"{source}: camera {key!r} {what} the calibration (by name, "
                                 f"or as panel {panel_node[0]} node {panel_node[1]})")
            raise ValueError(f"{source}: camera (panel, node) = {panel_node} {what} "
                             f"the calibration")
        out.append(found[0])
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: a camera is selected twice: {names}")
    return out


def _pixel_scale(u: np.ndarray, s: float) -> np.ndarray:
    """Pixel coordinate in an image resized by ``s``: centres map as (u + 0.5) s - 0.5."""
    return (u + 0.5) * s - 0.5


def _check_jpeg(data: bytes, path: Path, size: tuple[int, int]) -> None:
    """Raise FrameError unless ``data`` decodes as a JPEG of ``size`` = (w, h) px.

    The 1/8-scale decode still runs the whole entropy stream (so a truncated or corrupt file
    fails) at a fraction of the cost of a full decode.
    """
    if not data.startswith(b"\xff\xd8"):
        raise FrameError("bad_image", path, "not a JPEG file (no start-of-image marker)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if img is None:
        raise FrameError("bad_image", path, "JPEG cannot be decoded (corrupt or truncated)")
    expected = (math.ceil(size[1] / 8), math.ceil(size[0] / 8))
    if img.shape[:2] != expected:
        got = f"about {img.shape[1] * 8}x{img.shape[0] * 8}"
        raise FrameError("bad_image", path, f"image is {got} px, the calibration says "
                         f"{size[0]}x{size[1]}")  # fmt: skip


def _resize_jpeg(data: bytes, path: Path, source: tuple[int, int], target: tuple[int, int],
                 quality: int) -> bytes:  # fmt: skip
    """Decode, check the size (w, h) = ``source``, resize to ``target`` (INTER_AREA), re-encode."""
    if not data.startswith(b"\xff\xd8"):
        raise FrameError("bad_image", path, "not a JPEG file (no start-of-image marker)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise FrameError("bad_image", path, "JPEG cannot be decoded (corrupt or truncated)")
    if (img.shape[1], img.shape[0]) != source:
        raise FrameError("bad_image", path, f"image is {img.shape[1]}x{img.shape[0]} px, "
                         f"the calibration says {source[0]}x{source[1]}")  # fmt: skip
    img = cv2.resize(img, target, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok, "JPEG encoding of a decoded image cannot fail"
    return buf.tobytes()


class PanopticReader:
    """Multi-view frames of a Panoptic-layout root.

    ``cameras`` overrides ``cfg.cameras`` (names or (panel, node) tuples). With
    ``images=False`` no image is opened: frames carry paths only (e.g. to read GT and
    calibration of a recording whose images are elsewhere).
    """

    def __init__(self, root: Path | str, cfg: DataConfig, *, images: bool = True,
                 cameras: Sequence[CameraKey] | None = None) -> None:  # fmt: skip
        self.root = Path(root)
        self.cfg = cfg
        self.images = images
        self._camera_keys: list[CameraKey] = list(cameras if cameras is not None else cfg.cameras)
        self._manifest_cache: dict | None = None
        self._sequences: dict[str, _Sequence] = {}

    # -- splits and sequences --------------------------------------------------------------

    def _manifest(self) -> dict:
        if self._manifest_cache is None:
            path = self.root / "manifest.json"
            try:
                self._manifest_cache = json.loads(path.read_text()) if path.is_file() else {}
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path}: manifest is not valid JSON ({e})") from e
            if not isinstance(self._manifest_cache, dict):
                raise ValueError(f"{path}: manifest must be a JSON object")
        return self._manifest_cache

    def sequences(self, split: Split) -> list[str]:
        """Sequences of a split: the config's lists, else the root's manifest.json."""
        if self.cfg.train_sequences or self.cfg.test_sequences:
            return list(self.cfg.train_sequences if split == "train" else self.cfg.test_sequences)
        splits = self._manifest().get("splits")
        if not isinstance(splits, dict):
            raise ValueError(
                f"{self.root}: no sequences for split {split!r}: set data.train_sequences / "
                f"data.test_sequences, or give the root a manifest.json with a 'splits' entry")
        return [str(s) for s in splits.get(split, [])]

    def frames(self, sequence: str, split: Split) -> list[int]:
        """Frame indices of ``sequence`` kept by the split's frame interval."""
        every = self.cfg.frame_interval if split == "train" else self.cfg.test_frame_interval
        return self.open_sequence(sequence).frames[::every]

    def cameras(self, sequence: str) -> list[Camera]:
        """The selected cameras of ``sequence`` at the stored image size (mm, z up)."""
        return list(self.open_sequence(sequence).cameras)

    def open_sequence(self, sequence: str) -> _Sequence:
        """Read and check what all frames of ``sequence`` share (cached); raises on bad input."""
        if sequence not in self._sequences:
            self._sequences[sequence] = self._load_sequence(sequence)
        return self._sequences[sequence]

    def _load_sequence(self, sequence: str) -> _Sequence:
        calib_file = layout.calibration_path(self.root, sequence)
        calibration = layout.read_calibration(calib_file)
        keys = self._camera_keys or list(self._manifest().get("cameras", [])) or list(calibration)
        source = select_cameras(calibration, keys, calib_file)
        cameras = source
        if self.cfg.image_width:
            cameras = [c.scaled(self.cfg.image_width / c.width, self.cfg.image_height / c.height)
                       for c in source]  # fmt: skip
        frames = layout.list_frames(self.root, sequence)
        has_gt = bool(frames)
        if not has_gt:  # a recording without 3D annotation: its frames are its images
            frames = self._image_frames(sequence, source[0].name)
        label_file, labels, label_scale = self._load_labels(sequence, source, cameras)
        return _Sequence(name=sequence, source_cameras=source, cameras=cameras, frames=frames,
                         has_gt=has_gt, label_file=label_file, labels=labels,
                         label_scale=label_scale)  # fmt: skip

    def _image_frames(self, sequence: str, camera: str) -> list[int]:
        folder = layout.image_path(self.root, sequence, camera, 0).parent
        pattern = re.compile(rf"^{re.escape(camera)}_(\d{{8}})\.jpg$")
        return sorted(int(m.group(1)) for p in folder.glob("*.jpg") if (m := pattern.match(p.name)))

    def _load_labels(self, sequence: str, source: list[Camera], cameras: list[Camera]
                     ) -> tuple[Path | None, PseudoLabels | None, list[tuple[float, float]]]:
        if self.cfg.pseudo_label_dir:
            # An explicit directory is a promise that the labels exist: a missing file raises.
            path = Path(self.cfg.pseudo_label_dir) / f"pseudo2d_{sequence}.json"
        else:
            path = layout.pseudo_label_path(self.root, sequence)
            if not path.is_file():
                return None, None, []
        labels, label_sizes = read_pseudo_labels(path)
        in_file = set(label_sizes).union(*(per_cam.keys() for per_cam in labels.values()))
        absent = [c.name for c in source if c.name not in in_file]
        if labels and absent:
            raise ValueError(f"{path}: pseudo-label file has no camera {absent[0]!r} "
                             f"(it holds {sorted(in_file)})")
        scale = []
        for src, cam in zip(source, cameras, strict=True):
            # Labels may be in another pixel frame than the calibration (e.g. a detector run
            # on downscaled images): the file's image_size says which.
            w, h = label_sizes.get(src.name, (src.width, src.height))
            scale.append((cam.width / w, cam.height / h))
        return path, labels, scale

    # -- frames ----------------------------------------------------------------------------

    def read_frame(self, sequence: str, frame: int) -> MultiViewFrame:
        """Read one frame; raises FrameError (naming the file) if it cannot be used."""
        seq = self.open_sequence(sequence)
        gt_poses, gt_ids = self._read_gt(sequence, frame) if seq.has_gt else (None, None)
        pseudo = self._pseudo_poses(seq, frame)
        paths = [layout.image_path(self.root, sequence, c.name, frame) for c in seq.cameras]
        images = self._read_images(seq, paths) if self.images else None
        return MultiViewFrame(
            sequence=sequence, frame=frame, cameras=list(seq.cameras), images=images,
            image_paths=[str(p) for p in paths], pseudo_poses=pseudo, gt_poses=gt_poses,
            gt_ids=gt_ids,
        )  # fmt: skip

    def iter_sequence(self, sequence: str, split: Split = "train"
                      ) -> Iterator[tuple[int, MultiViewFrame | Rejection]]:  # fmt: skip
        """Yield (frame index, frame or Rejection) for the split's frames of ``sequence``."""
        for frame in self.frames(sequence, split):
            yield frame, self.read_or_reject(sequence, frame)

    def read_or_reject(self, sequence: str, frame: int) -> MultiViewFrame | Rejection:
        try:
            return self.read_frame(sequence, frame)
        except FrameError as e:
            return Rejection(sequence=sequence, frame=frame, file=e.file, kind=e.kind,
                             reason=e.reason)  # fmt: skip

    def _read_gt(self, sequence: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
        path = layout.body_path(self.root, sequence, frame)
        try:
            ids, joints_cm = layout.read_bodies(path)
        except FileNotFoundError:
            raise FrameError("bad_pose_file", path, "pose file not found") from None
        except ValueError as e:
            # read_bodies' message already starts with the path; keep only the reason.
            raise FrameError("bad_pose_file", path, str(e).removeprefix(f"{path}: ")) from None
        joints = panoptic19_to_15(joints_cm)  # (P, 15, 4) cm + confidence
        keep = joints[:, ROOT_INDEX, 3] > self.cfg.min_gt_root_conf
        joints = joints[keep]
        poses = np.empty((len(joints), NUM_JOINTS, 4), dtype=np.float32)
        poses[..., :3] = layout.points_cm_to_mm(joints[..., :3])
        poses[..., 3] = joints[..., 3] > JOINT_VISIBLE_CONF
        return poses, ids[keep]

    def _pseudo_poses(self, seq: _Sequence, frame: int) -> list[np.ndarray] | None:
        if seq.labels is None:
            return None
        per_cam = seq.labels.get(frame)
        if per_cam is None:
            raise FrameError("missing_pseudo_labels", seq.label_file or "",
                             f"no pseudo labels for frame {frame}")  # fmt: skip
        out = []
        for src, (sx, sy) in zip(seq.source_cameras, seq.label_scale, strict=True):
            if src.name not in per_cam:
                raise FrameError("missing_pseudo_labels", seq.label_file or "",
                                 f"no pseudo labels for frame {frame}, camera {src.name}")
            poses = np.array(per_cam[src.name], dtype=np.float32).reshape(-1, NUM_JOINTS, 3)
            if (sx, sy) != (1.0, 1.0):
                poses[..., 0] = _pixel_scale(poses[..., 0].astype(np.float64), sx)
                poses[..., 1] = _pixel_scale(poses[..., 1].astype(np.float64), sy)
            out.append(poses)
        return out

    def _read_images(self, seq: _Sequence, paths: list[Path]) -> list[bytes]:
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise FrameError("missing_image", missing[0],
                             f"image file not found ({len(missing)} of {len(paths)} views "
                             f"missing)")  # fmt: skip
        out = []
        for path, src, cam in zip(paths, seq.source_cameras, seq.cameras, strict=True):
            try:
                data = path.read_bytes()
            except OSError as e:  # e.g. permissions, or a file vanishing under a running job
                raise FrameError("bad_image", path, f"image cannot be read ({e})") from None
            if self.cfg.image_width:
                data = _resize_jpeg(data, path, (src.width, src.height),
                                    (cam.width, cam.height), self.cfg.jpeg_quality)  # fmt: skip
            else:
                _check_jpeg(data, path, (src.width, src.height))
            out.append(data)
        return out
