"""Import a user's recording (per-camera image folders or videos) as a Panoptic-layout sequence.

Output under ``out_root``: ``<seq>/calibration_<seq>.json`` (the rig), ``<seq>/hdImgs/<cam>/
<cam>_<frame:08d>.jpg`` for every kept recording frame (its own index in the recording, after
the per-camera offsets), and ``manifest.json`` whose ``splits.train`` lists the sequence. No
GT. ``selfpose3d pseudo-label`` then adds ``<seq>/pseudo2d_<seq>.json`` and ``selfpose3d
ingest`` turns the root into Parquet.

Two engines write the same files: ``ray`` runs a Ray Data job over chunks of consecutive
frames (each task decodes its chunk from every camera and writes the JPEGs itself, so no image
crosses the object store); ``plain`` runs the same chunk function in this process. The
sequence appears atomically: it is written into a staging directory next to it and renamed
at the end; an existing sequence is replaced only when asked to.

CLI: ``selfpose3d import-recording --rig RIG --input DIR --out ROOT --sequence NAME ...``
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict

import cv2

from pipelines.ingest import _replace_dir
from pipelines.session import map_tasks
from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.recordings import Recording, RecordingInput, open_recording
from selfpose3d.geometry.camera import Camera
from selfpose3d.io import atomic_write_bytes, atomic_write_json

MANIFEST = "manifest.json"
_SEQUENCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_OFFSET_RE = re.compile(r"^(.+)=([+-]?\d+)$")


class Chunk(TypedDict):
    """One task's work: consecutive kept frames of the recording."""

    index: int
    frames: list[int]


def write_chunk(chunk: Chunk, *, recording: Recording, stage: str, jpeg_quality: int
                ) -> dict[str, Any]:  # fmt: skip
    """Decode one chunk's frames from every camera and write them as JPEGs under ``stage``.

    Returns the counts, and the error message of an undecodable frame instead of raising it:
    the driver reports it as a one-line error whichever engine ran the chunk.
    """
    stage_path = Path(stage)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    n_frames = n_bytes = 0
    try:
        for frame, images in recording.read_chunk(chunk["frames"]):
            for camera, img in images.items():
                ok, buf = cv2.imencode(".jpg", img, params)
                assert ok, "JPEG encoding of a decoded image cannot fail"
                # The staging directory stands in for the sequence directory: same file names.
                path = layout.image_path(stage_path.parent, stage_path.name, camera, frame)
                atomic_write_bytes(path, buf.tobytes())
                n_bytes += buf.nbytes
            n_frames += 1
    except ValueError as e:
        return {"index": chunk["index"], "frames": n_frames, "bytes": n_bytes, "error": str(e)}
    return {"index": chunk["index"], "frames": n_frames, "bytes": n_bytes, "error": ""}


def make_chunks(frames: Sequence[int], chunk_frames: int) -> list[Chunk]:
    return [Chunk(index=i // chunk_frames, frames=list(frames[i : i + chunk_frames]))
            for i in range(0, len(frames), chunk_frames)]  # fmt: skip


# -- engines --------------------------------------------------------------------------------


def _run_plain(chunks: list[Chunk], kwargs: dict[str, Any], progress: bool
               ) -> list[dict[str, Any]]:  # fmt: skip
    from tqdm import tqdm

    results = []
    for chunk in tqdm(chunks, desc="import", unit="chunk", disable=not progress):
        results.append(write_chunk(chunk, **kwargs))
        if results[-1]["error"]:
            break  # nothing will be kept: stop at the first bad frame
    return results


# -- checks ---------------------------------------------------------------------------------


def fit_cameras(cameras: list[Camera], recording: Recording, rescale: bool
                ) -> tuple[list[Camera], list[str]]:  # fmt: skip
    """The rig's cameras at the recording's image sizes, and the names of those rescaled.

    A size mismatch is an error, unless ``rescale`` and the aspect ratios agree (within a
    pixel), in which case the camera is scaled with :meth:`Camera.scaled`.
    """
    sizes = recording.image_sizes()
    out, rescaled = [], []
    for cam in cameras:
        w, h = sizes[cam.name]
        if (w, h) == (cam.width, cam.height):
            out.append(cam)
            continue
        same_aspect = abs(cam.height * w / cam.width - h) <= 1.0
        if rescale and same_aspect:
            out.append(cam.scaled(w / cam.width, h / cam.height))
            rescaled.append(cam.name)
            continue
        hint = ("the aspect ratio is the same: pass rescale=True (--rescale) to scale the "
                "calibration" if same_aspect else
                "the aspect ratios differ: calibrate the rig at the recording's resolution")
        raise ValueError(f"{recording.source(cam.name).path}: camera {cam.name}: the recording's "
                         f"images are {w}x{h} px but the rig is calibrated at "
                         f"{cam.width}x{cam.height} px; {hint}")  # fmt: skip
    return out, rescaled


def read_manifest(root: Path) -> dict[str, Any]:
    """``<root>/manifest.json`` (``{}`` if absent), checked so that merging cannot fail later."""
    path = root / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: manifest is not valid JSON ({e})") from e
    splits = manifest.get("splits", {}) if isinstance(manifest, dict) else None
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
        raise ValueError(f"{path}: manifest must be a JSON object whose 'splits' maps split "
                         f"names to lists of sequences")  # fmt: skip
    return manifest


def add_to_manifest(manifest: dict[str, Any], sequence: str) -> dict[str, Any]:
    """The manifest with ``sequence`` in the train split, unless a split already lists it."""
    splits = {"train": [], "test": [], **manifest.get("splits", {})}
    if not any(sequence in names for names in splits.values()):
        splits["train"] = [*splits["train"], sequence]
    return {**manifest, "splits": splits}


def parse_offsets(items: Sequence[str]) -> dict[str, int]:
    """``["cam2=3", ...]`` (the CLI's ``--offset``) -> ``{"cam2": 3}``."""
    offsets: dict[str, int] = {}
    for item in items:
        m = _OFFSET_RE.match(item.strip())
        if not m:
            raise ValueError(f"--offset {item!r}: expected CAMERA=FRAMES, e.g. --offset cam2=3")
        if m.group(1) in offsets:
            raise ValueError(f"--offset: camera {m.group(1)} is given twice")
        offsets[m.group(1)] = int(m.group(2))
    return offsets


def _check_output(root: Path, sequence: str, recording: Recording, overwrite: bool) -> Path:
    if not _SEQUENCE_RE.match(sequence):
        raise ValueError(f"sequence name {sequence!r}: use letters, digits, '_', '-' and '.' "
                         f"(it becomes a directory name)")  # fmt: skip
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root}: output root exists and is not a directory")
    seq_dir = root / sequence
    for s in recording.sources:
        path = s.path.resolve()
        if path == seq_dir or seq_dir in path.parents:
            raise ValueError(f"{seq_dir}: the output sequence directory holds the recording's "
                             f"input {s.path}; choose another --out or --sequence")  # fmt: skip
    if seq_dir.exists() and not overwrite:
        raise FileExistsError(f"{seq_dir}: sequence {sequence!r} already exists; pass "
                              f"overwrite=True (--overwrite) to replace it")  # fmt: skip
    return seq_dir


# -- the job --------------------------------------------------------------------------------


def import_recording(
    cameras: list[Camera],
    input: RecordingInput,
    out_root: Path | str,
    sequence: str,
    *,
    offsets: Mapping[str, int] | None = None,
    start: int = 0,
    stop: int | None = None,
    every: int = 1,
    jpeg_quality: int = 90,
    rescale: bool = False,
    overwrite: bool = False,
    chunk_frames: int = 32,
    engine: Literal["ray", "plain"] = "ray",
    num_cpus: int | None = None,
    address: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the recording ``input`` of the rig ``cameras`` as sequence ``sequence`` of the
    Panoptic-layout root ``out_root``; returns a summary (frames, cameras, sizes, seconds...).

    ``cameras``: the rig (world mm, z up), calibrated at the recording's image sizes (or at
    the same aspect ratio with ``rescale``). ``offsets``, ``start``, ``stop``, ``every``: see
    :func:`selfpose3d.data.recordings.open_recording`; kept frames keep their recording index.
    ``num_cpus`` caps the parallel writers (and sizes a Ray instance started here);
    ``address`` names a Ray cluster. Raises ValueError/FileNotFoundError/FileExistsError
    naming the file before anything is written at the sequence's place.
    """
    t0 = time.perf_counter()
    if engine not in ("ray", "plain"):
        raise ValueError(f"engine must be 'ray' or 'plain', got {engine!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    if not cameras:
        raise ValueError("the rig has no cameras")
    root = Path(out_root).resolve()
    recording = open_recording(input, [c.name for c in cameras], offsets=offsets, start=start,
                               stop=stop, every=every)  # fmt: skip
    cameras, rescaled = fit_cameras(cameras, recording, rescale)
    seq_dir = _check_output(root, sequence, recording, overwrite)
    manifest = add_to_manifest(read_manifest(root), sequence)
    listed = manifest.get("cameras")
    if isinstance(listed, list) and not set(listed) <= {c.name for c in cameras}:
        warnings.warn(f"{root / MANIFEST} selects cameras {listed}, which this rig does not "
                      f"all have; readers of the root will ask sequence {sequence} for them",
                      stacklevel=2)  # fmt: skip

    root.mkdir(parents=True, exist_ok=True)
    stage = root / f".{sequence}.staging-{uuid.uuid4().hex[:8]}"
    try:
        for cam in cameras:
            layout.image_path(root, stage.name, cam.name, 0).parent.mkdir(parents=True)
        chunks = make_chunks(recording.frames, chunk_frames)
        kwargs = {"recording": recording, "stage": str(stage), "jpeg_quality": jpeg_quality}
        if engine == "ray":
            results = map_tasks(chunks, write_chunk, kwargs, address=address,
                                num_cpus=num_cpus, progress=progress)
        else:
            results = _run_plain(chunks, kwargs, progress)
        results.sort(key=lambda r: r["index"])
        errors = [r["error"] for r in results if r["error"]]
        if errors:
            raise ValueError(errors[0])
        written = sum(int(r["frames"]) for r in results)
        if written != len(recording.frames):
            raise RuntimeError(f"import of {sequence}: {len(recording.frames)} frames planned, "
                               f"{written} written")  # fmt: skip
        layout.write_calibration(stage / layout.calibration_path(root, sequence).name, cameras)
        _replace_dir(stage, seq_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    atomic_write_json(root / MANIFEST, manifest)

    seconds = time.perf_counter() - t0
    frames = recording.frames
    return {
        "root": str(root), "sequence": sequence, "path": str(seq_dir), "engine": engine,
        "input": {s.camera: str(s.path) for s in recording.sources},
        "frames": len(frames), "first_frame": frames[0], "last_frame": frames[-1],
        "start": start, "stop": stop, "every": every, "recording_frames": recording.num_frames,
        "cameras": [c.name for c in cameras],
        "offsets": {s.camera: s.offset for s in recording.sources},
        "sizes": {c.name: [c.width, c.height] for c in cameras}, "rescaled": rescaled,
        "images": len(frames) * len(cameras), "bytes": sum(int(r["bytes"]) for r in results),
        "seconds": seconds, "frames_per_second": len(frames) / seconds if seconds > 0 else 0.0,
    }  # fmt: skip


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable report of an import summary (the CLI prints it)."""
    sizes = ", ".join(f"{c} {w}x{h}" for c, (w, h) in summary["sizes"].items())
    lines = [
        f"imported {summary['frames']} frames x {len(summary['cameras'])} cameras as "
        f"{summary['path']} ({summary['engine']} engine)",
        f"  recording frames {summary['first_frame']}..{summary['last_frame']} every "
        f"{summary['every']} of {summary['recording_frames']}; offsets "
        + ", ".join(f"{c}={o}" for c, o in summary["offsets"].items()),
        f"  images: {sizes}",
    ]
    if summary["rescaled"]:
        lines.append(f"  calibration rescaled to the images: {', '.join(summary['rescaled'])}")
    lines.append(f"  {summary['bytes'] / 1e6:.1f} MB, {summary['frames_per_second']:.1f} "
                 f"frames/s, {summary['seconds']:.1f} s")  # fmt: skip
    return "\n".join(lines)
