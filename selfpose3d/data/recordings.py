"""A user's multi-camera recording: one folder of images or one video per camera.

The cameras are frame-synchronised by index: frame ``i`` of the recording is frame
``i + offset[c]`` of camera ``c`` (offsets >= 0, in frames, for cameras that started
recording early). The recording has ``min_c(n_c - offset_c)`` frames; ``start``, ``stop`` and
``every`` select the kept ones, which keep their recording index ``i``.

Input layouts (camera names are those of the rig's calibration):
- a directory of image folders, ``<input>/<camera>/*.jpg|jpeg|png``, ordered naturally by the
  numbers in the file names (``img2.png`` before ``img10.png``);
- a directory of videos, ``<input>/<camera>.mp4|avi|mov|mkv``;
- a mapping camera -> folder or video, for anything else.

Video frame counts come from the container and are verified by decoding (containers lie);
reading a chunk of frames seeks once and then decodes sequentially. Images are returned as
OpenCV BGR uint8 arrays (H, W, 3), pixels of the recorded image.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
# Cameras of one synchronised recording whose lengths (after the offsets) differ by more than
# this many frames were probably not cut or offset right.
SYNC_TOLERANCE_FRAMES = 3
_DIGITS = re.compile(r"(\d+)")

RecordingInput = str | Path | Mapping[str, str | Path]


class RecordingError(ValueError):
    """A recording's file cannot be used; the message names the file (and the frame)."""


@dataclass(frozen=True, kw_only=True)
class CameraSource:
    """Where one camera's frames come from."""

    camera: str
    path: Path  # the image folder or the video file
    kind: Literal["images", "video"]
    num_frames: int  # frames the camera holds (decoded, for videos)
    size: tuple[int, int]  # (w, h) px of its frames
    offset: int = 0  # recording frame i is this camera's frame i + offset
    files: tuple[Path, ...] = ()  # the image files in frame order (kind == "images")


@dataclass(frozen=True, kw_only=True)
class Recording:
    """A synchronised multi-camera recording; picklable, so it can be shipped to workers."""

    sources: tuple[CameraSource, ...]  # in the rig's camera order
    num_frames: int  # synchronised frames: min over cameras of (frames - offset)
    frames: list[int] = field(default_factory=list)  # kept recording frame indices, ascending

    @property
    def cameras(self) -> list[str]:
        return [s.camera for s in self.sources]

    def source(self, camera: str) -> CameraSource:
        for s in self.sources:
            if s.camera == camera:
                return s
        raise KeyError(f"camera {camera!r} is not in the recording (it has {self.cameras})")

    def image_sizes(self) -> dict[str, tuple[int, int]]:
        """{camera: (width, height)} in px of the recorded images."""
        return {s.camera: s.size for s in self.sources}

    def read_chunk(self, frames: Sequence[int]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield (recording frame, {camera: BGR uint8 (H, W, 3)}) for ascending ``frames``.

        Each video is opened once for the chunk, sought once to the chunk's first frame and
        then decoded sequentially, so a chunk should be a run of nearby frames. Raises
        RecordingError naming the file and frame when a frame cannot be decoded or has
        another size than the camera's other frames.
        """
        frames = [int(f) for f in frames]
        if any(b <= a for a, b in zip(frames, frames[1:], strict=False)):
            raise ValueError(f"read_chunk: frames must be strictly ascending, got {frames}")
        if frames and not 0 <= frames[0] <= frames[-1] < self.num_frames:
            raise ValueError(f"read_chunk: frames {frames[0]}..{frames[-1]} are outside the "
                             f"recording's {self.num_frames} frames")  # fmt: skip
        with ExitStack() as stack:
            readers = []
            for s in self.sources:
                reader = _VideoReader(s) if s.kind == "video" else _ImageReader(s)
                stack.callback(reader.close)
                readers.append(reader)
            for frame in frames:
                yield frame, {r.source.camera: r.read(frame) for r in readers}


def natural_key(name: str) -> tuple:
    """Sort key that orders the numbers in a name by value: ``f2.png`` < ``f10.png``."""
    parts = _DIGITS.split(name.lower())
    # re.split with a group alternates text and digits, so positions of both kinds align.
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def open_recording(
    input: RecordingInput,
    camera_names: Sequence[str],
    *,
    offsets: Mapping[str, int] | None = None,
    start: int = 0,
    stop: int | None = None,
    every: int = 1,
) -> Recording:
    """Open a recording of the cameras ``camera_names`` (the rig's, in its order).

    ``input``: a directory of per-camera image folders or videos, or a mapping camera ->
    folder or video. ``offsets``: camera -> frames (>= 0; missing cameras 0). The kept frames
    are ``range(start, min(stop, n), every)`` of the n synchronised frames. Raises
    ValueError/FileNotFoundError naming the file on a bad input; warns when the cameras'
    lengths after the offsets differ by more than ``SYNC_TOLERANCE_FRAMES``.
    """
    names = [str(c) for c in camera_names]
    if len(set(names)) != len(names):
        raise ValueError(f"the rig names a camera twice: {names}")
    if start < 0 or every < 1 or (stop is not None and stop <= start):
        raise ValueError(f"frame selection start={start}, stop={stop}, every={every}: need "
                         f"start >= 0, stop > start and every >= 1")  # fmt: skip
    where = "the recording" if isinstance(input, Mapping) else str(input)
    offsets = _check_offsets(offsets or {}, names)
    paths = _camera_paths(input, names)
    counts = {c: _count_frames(c, paths[c]) for c in names}

    available = {c: counts[c][0] - offsets[c] for c in names}
    for c in names:
        if available[c] <= 0:
            raise ValueError(f"{paths[c]}: camera {c} has {counts[c][0]} frames, no more than "
                             f"its offset {offsets[c]}")  # fmt: skip
    num_frames = min(available.values())
    spread = max(available.values()) - num_frames
    if spread > SYNC_TOLERANCE_FRAMES:
        lengths = ", ".join(f"{c}: {n}" for c, n in available.items())
        warnings.warn(f"{where}: the cameras' lengths after the offsets differ by {spread} "
                      f"frames ({lengths}); a synchronised recording's should agree within "
                      f"{SYNC_TOLERANCE_FRAMES}: check the offsets. Using the first "
                      f"{num_frames}.", stacklevel=2)  # fmt: skip
    if start >= num_frames:
        raise ValueError(f"{where}: start {start} is past the end of the recording "
                         f"({num_frames} synchronised frames)")  # fmt: skip
    frames = list(range(start, num_frames if stop is None else min(stop, num_frames), every))

    sources = []
    for c in names:
        n, files, size = counts[c]
        kind: Literal["images", "video"] = "images" if files else "video"
        if size is None:  # image folders: the size of the first frame that is used
            size = _image_size(files[frames[0] + offsets[c]], c, frames[0])
        sources.append(CameraSource(camera=c, path=paths[c], kind=kind, num_frames=n,
                                    size=size, offset=offsets[c], files=files))  # fmt: skip
    return Recording(sources=tuple(sources), num_frames=num_frames, frames=frames)


# -- finding the cameras' files -------------------------------------------------------------


def _check_offsets(offsets: Mapping[str, int], names: list[str]) -> dict[str, int]:
    unknown = sorted(set(offsets) - set(names))
    if unknown:
        raise ValueError(f"offsets name cameras that are not in the rig: {unknown} (rig "
                         f"cameras: {names})")  # fmt: skip
    out = {}
    for c in names:
        value = offsets.get(c, 0)
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"camera {c}: offset must be a whole number of frames, got {value!r}")
        if value < 0:
            raise ValueError(f"camera {c}: offset {value} is negative; offsets must be >= 0 "
                             f"(recording frame i is frame i + offset of each camera): add "
                             f"{-value} to the other cameras' offsets instead")  # fmt: skip
        out[c] = int(value)
    return out


def _camera_paths(input: RecordingInput, names: list[str]) -> dict[str, Path]:
    """camera -> its image folder or video, checked against the rig's camera names."""
    if isinstance(input, Mapping):
        found = {str(c): Path(p) for c, p in input.items()}
        where = "the recording's camera -> path mapping"
    else:
        root = Path(input)
        if not root.exists():
            raise FileNotFoundError(f"{root}: recording directory not found")
        if not root.is_dir():
            raise ValueError(f"{root}: expected a directory holding one image folder or one "
                             f"video per camera")  # fmt: skip
        found = {}
        for p in sorted(root.iterdir()):
            if p.name.startswith("."):
                continue
            if p.is_dir():
                camera = p.name
            elif p.suffix.lower() in VIDEO_SUFFIXES:
                camera = p.stem
            else:
                continue
            if camera in found:
                raise ValueError(f"{root}: camera {camera} has both {found[camera].name} and "
                                 f"{p.name}; keep one")  # fmt: skip
            found[camera] = p
        if not found:
            raise ValueError(f"{root}: no camera folders or videos (expected <camera>/ folders "
                             f"of images or <camera>.mp4|.avi|.mov|.mkv)")  # fmt: skip
        where = str(root)
    missing = [c for c in names if c not in found]
    unexpected = sorted(set(found) - set(names))
    if missing or unexpected:
        raise ValueError(f"{where}: cameras do not match the rig: missing {missing}, not in the "
                         f"rig {unexpected} (rig cameras: {names})")  # fmt: skip
    return {c: found[c] for c in names}


def _count_frames(camera: str, path: Path
                  ) -> tuple[int, tuple[Path, ...], tuple[int, int] | None]:  # fmt: skip
    """(frames, image files (folders only), (w, h) (videos only)) of one camera's source."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: camera {camera}: folder or video not found")
    if path.is_dir():
        files = tuple(sorted((p for p in path.iterdir() if p.is_file()
                              and not p.name.startswith(".")
                              and p.suffix.lower() in IMAGE_SUFFIXES),
                             key=lambda p: natural_key(p.name)))  # fmt: skip
        if not files:
            raise ValueError(f"{path}: camera {camera}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return len(files), files, None
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{path}: camera {camera}: not an image folder or a video "
                         f"({', '.join(VIDEO_SUFFIXES)})")  # fmt: skip
    n, size = probe_video(path)
    return n, (), size


def _decode(path: Path, camera: str, frame: int) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RecordingError(f"{path}: camera {camera}, recording frame {frame}: image cannot "
                             f"be read ({e})") from None  # fmt: skip
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise RecordingError(f"{path}: camera {camera}, recording frame {frame}: image cannot "
                             f"be decoded (corrupt, truncated or not an image)")  # fmt: skip
    return img


def _image_size(path: Path, camera: str, frame: int) -> tuple[int, int]:
    img = _decode(path, camera, frame)
    return img.shape[1], img.shape[0]


# -- videos ---------------------------------------------------------------------------------


def _open_video(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise RecordingError(f"{path}: video cannot be opened (corrupt, or a codec OpenCV "
                             f"cannot decode)")  # fmt: skip
    return cap


def _seek(cap: cv2.VideoCapture, index: int) -> bool:
    """Seek so that the next read returns frame ``index``; False if the backend cannot."""
    if index == 0 and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == 0:
        return True
    return bool(cap.set(cv2.CAP_PROP_POS_FRAMES, index)) and (
        round(cap.get(cv2.CAP_PROP_POS_FRAMES)) == index)


def probe_video(path: Path) -> tuple[int, tuple[int, int]]:
    """(decodable frames, (w, h) px) of a video.

    The container's frame count is trusted only if its last frame decodes and nothing
    follows it; otherwise the frames are counted by decoding the whole video.
    """
    cap = _open_video(path)
    try:
        claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if claimed > 0 and _seek(cap, claimed - 1):
            ok, img = cap.read()
            if ok and not cap.grab():
                return claimed, (img.shape[1], img.shape[0])
        cap.release()
        cap = _open_video(path)
        ok, img = cap.read()
        if not ok:
            raise RecordingError(f"{path}: video has no decodable frame")
        n = 1
        while cap.grab():
            n += 1
        if n != claimed:
            log.warning("%s: the container claims %d frames, %d decode", path, claimed, n)
        return n, (img.shape[1], img.shape[0])
    finally:
        cap.release()


class _VideoReader:
    """Frames of one camera's video for one chunk: one seek, then sequential decoding."""

    def __init__(self, source: CameraSource) -> None:
        self.source = source
        self.cap: cv2.VideoCapture | None = None
        self.next = 0  # the video frame the next decode returns

    def _start(self, index: int) -> None:
        self.close()
        self.cap = _open_video(self.source.path)
        self.next = 0
        if _seek(self.cap, index):
            self.next = index
            return
        # The backend cannot seek this file exactly: decode from the start instead.
        log.warning("%s: cannot seek to frame %d; decoding from the start", self.source.path,
                    index)  # fmt: skip
        self.cap.release()
        self.cap = _open_video(self.source.path)

    def read(self, frame: int) -> np.ndarray:
        s = self.source
        index = frame + s.offset
        if self.cap is None or index < self.next:
            self._start(index)
        assert self.cap is not None
        while self.next < index:
            if not self.cap.grab():
                raise RecordingError(f"{s.path}: camera {s.camera}: video frame {self.next} "
                                     f"cannot be decoded (recording frame {frame})")
            self.next += 1
        ok, img = self.cap.read()
        if not ok:
            raise RecordingError(f"{s.path}: camera {s.camera}: video frame {index} cannot be "
                                 f"decoded (recording frame {frame})")  # fmt: skip
        self.next += 1
        _check_size(img, s, f"{s.path}: camera {s.camera}: video frame {index}")
        return img

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class _ImageReader:
    def __init__(self, source: CameraSource) -> None:
        self.source = source

    def read(self, frame: int) -> np.ndarray:
        s = self.source
        path = s.files[frame + s.offset]
        img = _decode(path, s.camera, frame)
        _check_size(img, s, f"{path}: camera {s.camera}, recording frame {frame}")
        return img

    def close(self) -> None:
        pass


def _check_size(img: np.ndarray, source: CameraSource, what: str) -> None:
    if (img.shape[1], img.shape[0]) != source.size:
        w, h = source.size
        raise RecordingError(f"{what}: image is {img.shape[1]}x{img.shape[0]} px, the camera's "
                             f"other frames are {w}x{h}")  # fmt: skip
