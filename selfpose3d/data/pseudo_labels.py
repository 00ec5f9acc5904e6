"""The pseudo 2D label file: this project's format, and the import format for any detector.

One JSON file per sequence (``<root>/<sequence>/pseudo2d_<sequence>.json``)::

    {
      "format": "selfpose3d-pseudo2d",
      "version": 1,
      "joints": "panoptic15",           # or "coco17": mapped to Panoptic-15 on read
      "image_size": {"00_03": [1920, 1080], ...},   # pixel frame of the coordinates
      "frames": {
        "168": {"00_03": [[[x, y, conf] x J], ...people], "00_06": [...], ...},
        ...
      }
    }

Coordinates are pixels of the original camera image (OpenCV convention, top-left pixel
centre at (0, 0)); confidence in [0, 1]. A camera with no detection has an empty list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from selfpose3d.skeleton import NUM_JOINTS, coco17_to_panoptic15

FORMAT = "selfpose3d-pseudo2d"
VERSION = 1
# frame -> camera -> (P, J, 3) float32 array
PseudoLabels = dict[int, dict[str, np.ndarray]]


def empty_poses() -> np.ndarray:
    return np.zeros((0, NUM_JOINTS, 3), dtype=np.float32)


def write_pseudo_labels(
    path: Path, labels: PseudoLabels, image_size: dict[str, tuple[int, int]]
) -> None:
    from selfpose3d.io import atomic_write_json

    frames = {
        str(frame): {cam: np.round(np.asarray(p, dtype=np.float64), 2).tolist()
                     for cam, p in per_cam.items()}
        for frame, per_cam in sorted(labels.items())
    }  # fmt: skip
    obj = {"format": FORMAT, "version": VERSION, "joints": "panoptic15",
           "image_size": {k: list(v) for k, v in image_size.items()}, "frames": frames}  # fmt: skip
    atomic_write_json(path, obj, indent=None)


def read_pseudo_labels(path: Path) -> tuple[PseudoLabels, dict[str, tuple[int, int]]]:
    """Read a pseudo-label file -> ({frame: {camera: (P, 15, 3)}}, {camera: (w, h)}).

    Raises ValueError naming the file on a wrong format, bad shapes, or NaN/inf values.
    """
    path = Path(path)
    try:
        obj: dict[str, Any] = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: pseudo-label file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: pseudo-label file is not valid JSON ({e})") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pseudo-label file (expected format {FORMAT!r})")
    joints = obj.get("joints", "panoptic15")
    if joints not in ("panoptic15", "coco17"):
        raise ValueError(f"{path}: unknown joint set {joints!r} (panoptic15 or coco17)")
    n_in = NUM_JOINTS if joints == "panoptic15" else 17
    labels: PseudoLabels = {}
    for frame_key, per_cam in obj.get("frames", {}).items():
        frame_labels = {}
        for cam, people in per_cam.items():
            try:
                arr = np.asarray(people, dtype=np.float32).reshape(-1, n_in, 3)
            except ValueError as e:
                raise ValueError(f"{path}: frame {frame_key}, camera {cam}: bad shape ({e})") from e
            if not np.isfinite(arr).all():
                raise ValueError(f"{path}: frame {frame_key}, camera {cam}: NaN or inf in poses")
            frame_labels[cam] = coco17_to_panoptic15(arr) if joints == "coco17" else arr
        labels[int(frame_key)] = frame_labels
    image_size = {k: (int(v[0]), int(v[1])) for k, v in obj.get("image_size", {}).items()}
    return labels, image_size
