"""The CMU Panoptic on-disk layout: paths, and conversion of its files to the model frame.

Panoptic stores calibration and 3D poses in centimetres with y pointing down. The model frame
is millimetres with z up: ``X_mm = 10 * (X_cm @ M)``; a camera's rotation becomes ``R @ M``
and its translation ``10 * t`` (DESIGN §3.1). Both directions live here so that the reader
and the synthetic generator (which writes this layout) cannot disagree.

Layout under ``<root>/<sequence>/``:
- ``calibration_<sequence>.json``
- ``hdPose3d_stage1_coco19/body3DScene_<frame:08d>.json``
- ``hdImgs/<camera>/<camera>_<frame:08d>.jpg``
- ``pseudo2d_<sequence>.json`` (this project's pseudo-label file, see ``pseudo_labels.py``)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from selfpose3d.geometry.camera import Camera
from selfpose3d.skeleton import NUM_PANOPTIC19

# Row-vector change of basis: y-down cm world -> z-up world.
M_PANOPTIC = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
CM_TO_MM = 10.0

POSE_DIR = "hdPose3d_stage1_coco19"
IMAGE_DIR = "hdImgs"
_BODY_RE = re.compile(r"body3DScene_(\d{8})\.json$")


def calibration_path(root: Path, sequence: str) -> Path:
    return Path(root) / sequence / f"calibration_{sequence}.json"


def body_path(root: Path, sequence: str, frame: int) -> Path:
    return Path(root) / sequence / POSE_DIR / f"body3DScene_{frame:08d}.json"


def image_path(root: Path, sequence: str, camera: str, frame: int) -> Path:
    return Path(root) / sequence / IMAGE_DIR / camera / f"{camera}_{frame:08d}.jpg"


def pseudo_label_path(root: Path, sequence: str) -> Path:
    return Path(root) / sequence / f"pseudo2d_{sequence}.json"


def list_frames(root: Path, sequence: str) -> list[int]:
    """Frame indices that have a 3D annotation file, sorted."""
    pose_dir = Path(root) / sequence / POSE_DIR
    frames = [int(m.group(1)) for p in pose_dir.glob("body3DScene_*.json")
              if (m := _BODY_RE.search(p.name))]  # fmt: skip
    return sorted(frames)


def points_cm_to_mm(points_cm: np.ndarray) -> np.ndarray:
    """(..., 3) Panoptic cm, y down -> (..., 3) model mm, z up."""
    return CM_TO_MM * (np.asarray(points_cm, dtype=np.float64) @ M_PANOPTIC)


def points_mm_to_cm(points_mm: np.ndarray) -> np.ndarray:
    """Inverse of :func:`points_cm_to_mm`."""
    return (np.asarray(points_mm, dtype=np.float64) / CM_TO_MM) @ M_PANOPTIC.T


def camera_from_panoptic(entry: dict[str, Any]) -> Camera:
    """One ``cameras[i]`` entry of a Panoptic calibration -> Camera in the model frame."""
    try:
        R = np.asarray(entry["R"], dtype=np.float64).reshape(3, 3)
        t = np.asarray(entry["t"], dtype=np.float64).reshape(3)
        width, height = entry["resolution"]
        return Camera(
            name=str(entry["name"]), K=entry["K"], dist=entry["distCoef"], R=R @ M_PANOPTIC,
            t=CM_TO_MM * t, width=width, height=height,
            extra={k: entry[k] for k in ("type", "panel", "node") if k in entry},
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as e:
        name = entry.get("name", "?") if isinstance(entry, dict) else "?"
        raise ValueError(f"camera {name!r}: malformed calibration entry ({e})") from e


def camera_to_panoptic(cam: Camera) -> dict[str, Any]:
    """Camera in the model frame -> a Panoptic calibration entry (cm, y down)."""
    entry: dict[str, Any] = {"name": cam.name, "type": cam.extra.get("type", "hd"),
                             "resolution": [cam.width, cam.height]}  # fmt: skip
    for key in ("panel", "node"):
        if key in cam.extra:
            entry[key] = cam.extra[key]
    entry.update({
        "K": cam.K.tolist(), "distCoef": cam.dist.tolist(), "R": (cam.R @ M_PANOPTIC.T).tolist(),
        "t": (cam.t / CM_TO_MM).reshape(3, 1).tolist(),
    })  # fmt: skip
    return entry


def read_calibration(path: Path) -> dict[str, Camera]:
    """Read a Panoptic calibration JSON -> {camera name: Camera}; clear errors on bad files."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: calibration file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: calibration is not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
        raise ValueError(f"{path}: calibration has no 'cameras' list")
    cameras = {}
    for entry in data["cameras"]:
        try:
            cam = camera_from_panoptic(entry)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        cameras[cam.name] = cam
    return cameras


def write_calibration(path: Path, cameras: list[Camera]) -> None:
    from selfpose3d.io import atomic_write_json

    atomic_write_json(path, {"cameras": [camera_to_panoptic(c) for c in cameras]}, indent=None)


def read_bodies(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``body3DScene_*.json`` -> (ids (P,), joints (P, 19, 4) in cm with confidence).

    Raises ValueError naming the file on malformed content or non-finite numbers.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        bodies = data["bodies"]
        ids = np.array([int(b["id"]) for b in bodies], dtype=np.int64)
        joints = np.array([b["joints19"] for b in bodies], dtype=np.float64).reshape(
            len(bodies), NUM_PANOPTIC19, 4
        )
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: pose file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed Panoptic pose file ({e})") from e
    if not np.isfinite(joints).all():
        raise ValueError(f"{path}: pose file holds NaN or inf joint values")
    return ids, joints


def write_bodies(path: Path, ids: np.ndarray, joints_cm: np.ndarray) -> None:
    """Write ids (P,) and joints (P, 19, 4) in cm + confidence as a Panoptic pose file."""
    from selfpose3d.io import atomic_write_json

    bodies = [{"id": int(i), "joints19": np.round(j, 4).reshape(-1).tolist()}
              for i, j in zip(ids, joints_cm, strict=True)]  # fmt: skip
    atomic_write_json(path, {"version": 0.7, "bodies": bodies}, indent=None)
