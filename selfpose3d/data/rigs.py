"""Users' camera rigs: calibration files in, validated cameras out (their capture space:
:mod:`selfpose3d.data.capture_space`).

Formats (``load_rig`` / ``save_rig``):
- ``panoptic``: CMU Panoptic ``calibration_<seq>.json`` (cm, y down; converted as in
  ``panoptic_layout``, so ``unit`` and ``up`` do not apply to it);
- ``anipose``: the ``calibration.toml`` of anipose/aniposelib (also written by Pose2Sim and
  other markerless-mocap tools): one table per camera with ``name``, ``size = [w, h]``,
  ``matrix`` (3x3), ``distortions`` (k1 k2 p1 p2 k3, fewer are zero-padded), ``rotation``
  (Rodrigues vector, world->camera) and ``translation`` (world->camera);
- ``opencv``: YAML written by ``cv2.FileStorage`` or JSON with the same fields: a top-level
  ``names`` list and one map per camera (under its name, or as the items of a ``cameras``
  list), each with ``K``/``camera_matrix``, ``D``/``dist_coeffs``, ``R`` (3x3) or ``rvec``,
  ``t``/``tvec`` and ``image_size: [w, h]`` or ``width``/``height``.

Conventions: cameras come out in the project's world frame (mm, z up; see
``selfpose3d.geometry.camera``). Translations in anipose/OpenCV files are in the
calibration's own length unit: the unit of the board's square size when it was calibrated
(``unit``: mm, cm or m; anipose users usually measured the board in mm). ``up`` names the
world axis that points up in the user's calibration; a camera is re-expressed in the z-up
world as ``R' = R @ M`` with ``t`` unchanged, where ``M`` maps z-up coordinates to the user's
(``x_user = M @ x_zup``), so a point and the cameras rotated together project to the same
pixels.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np

from selfpose3d.data.panoptic_layout import (
    M_PANOPTIC,
    camera_from_panoptic,
    write_calibration,
)
from selfpose3d.geometry.camera import Camera
from selfpose3d.io import atomic_write_text

RigFormat: TypeAlias = Literal["panoptic", "anipose", "opencv"]
FORMATS: tuple[str, ...] = ("panoptic", "anipose", "opencv")
UNIT_TO_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
# up -> M with x_user = M @ x_zup (proper rotations); "-y" is Panoptic's y-down frame.
UP_AXES = {
    "z": np.eye(3),
    "y": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
    "-y": M_PANOPTIC,
}
ORTHONORMAL_TOL = 1e-4  # max |R R^T - I|, as in Camera.validate

# Raw camera keys -> the fields' names in the file, for error messages.
_PANOPTIC_LABELS = {"K": "K", "dist": "distCoef", "R": "R", "t": "t", "width": "resolution",
                    "height": "resolution"}  # fmt: skip
_ANIPOSE_LABELS = {"K": "matrix", "dist": "distortions", "R": "rotation", "rvec": "rotation",
                   "t": "translation", "width": "size", "height": "size"}  # fmt: skip
# Field names accepted in OpenCV-style files, first one is what save_rig writes.
_OPENCV_FIELDS = {
    "K": ("K", "camera_matrix", "intrinsics"),
    "dist": ("D", "dist_coeffs", "distortion_coefficients", "dist"),
    "R": ("R", "rotation_matrix"),
    "rvec": ("rvec",),
    "t": ("t", "tvec", "T", "translation"),
}


# ---------------------------------------------------------------------------------------------
# Loading and saving


def load_rig(
    path: str | Path,
    *,
    format: str = "auto",
    unit: str = "mm",
    up: str = "z",
    cameras: Sequence[str] | None = None,
) -> list[Camera]:
    """Read a calibration file -> cameras in the world frame (mm, z up), in file order.

    format: "auto" (by extension, then content), "panoptic", "anipose" or "opencv".
    unit: length unit of the file's translations ("mm", "cm", "m"): the unit the calibration
        board was measured in (anipose users usually give its square size in mm); ignored
        for Panoptic files (always cm).
    up: world axis pointing up in the file ("z", "y", "-y"); ignored for Panoptic files
        (always y down).
    cameras: keep only these camera names, in this order (e.g. Panoptic's HD views).
    Raises FileNotFoundError / ValueError naming the file, the camera and the problem.
    """
    path = Path(path)
    scale, M = _unit_scale(unit), _up_matrix(up)
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"rig format {format!r}: expected auto or one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: calibration file not found")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "panoptic":
        rig = _read_panoptic(path)
    else:
        reader = _read_anipose if fmt == "anipose" else _read_opencv
        rig = [_camera(raw, path, scale, M) for raw in reader(path)]
    validate_rig(rig, str(path))
    if cameras is not None:
        by_name = {c.name: c for c in rig}
        unknown = [n for n in cameras if n not in by_name]
        if unknown:
            raise ValueError(f"{path}: cameras {unknown} are not in the calibration "
                             f"(it has {_preview([c.name for c in rig])})")  # fmt: skip
        rig = [by_name[n] for n in cameras]
        validate_rig(rig, f"{path} (selected cameras)")
    return rig


def save_rig(
    path: str | Path, cameras: list[Camera], format: str, *, unit: str = "mm", up: str = "z"
) -> None:
    """Write cameras (world mm, z up) as a calibration file, atomically.

    format: "panoptic" (cm, y down, always), "anipose" (TOML) or "opencv" (YAML through
    cv2.FileStorage; JSON when ``path`` ends in .json). unit / up: the written translations'
    length unit and the written world's up axis (anipose and opencv only).
    """
    path = Path(path)
    scale, M = _unit_scale(unit), _up_matrix(up)
    if format not in FORMATS:
        raise ValueError(f"rig format {format!r}: expected one of {', '.join(FORMATS)}")
    validate_rig(cameras, str(path))
    if format == "panoptic":
        write_calibration(path, cameras)
        return
    # Inverse of the reader: R_user = R' @ M^T, t in the file's unit.
    raws = [{"name": c.name, "K": c.K, "dist": c.dist, "R": c.R @ M.T, "t": c.t / scale,
             "width": c.width, "height": c.height} for c in cameras]  # fmt: skip
    if format == "anipose":
        atomic_write_text(path, _anipose_text(raws))
    elif path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps(_opencv_json(raws), indent=1) + "\n")
    else:
        atomic_write_text(path, _opencv_yaml(raws))


def detect_format(path: Path) -> str:
    """The format of a calibration file, from its extension and, for JSON, its content."""
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return "anipose"
    if suffix in (".yml", ".yaml"):
        return "opencv"
    if suffix == ".json":
        data = _load_json(path)
        entries = data.get("cameras") if isinstance(data, dict) else None
        if isinstance(entries, list) and entries and isinstance(entries[0], dict) and (
            "distCoef" in entries[0] or "resolution" in entries[0]
        ):
            return "panoptic"
        return "opencv"
    head = path.read_bytes()[:200].decode("utf-8", "replace").lstrip()
    if head.startswith("%YAML"):
        return "opencv"
    if head.startswith("["):
        return "anipose"
    raise ValueError(f"{path}: cannot tell the calibration format from the file name; pass "
                     f"the format ({', '.join(FORMATS)})")  # fmt: skip


def _unit_scale(unit: str) -> float:
    if unit not in UNIT_TO_MM:
        raise ValueError(f"unit {unit!r}: expected mm, cm or m (the length unit of the "
                         f"calibration's translations: its board's square size unit)")
    return UNIT_TO_MM[unit]


def _up_matrix(up: str) -> np.ndarray:
    if up not in UP_AXES:
        raise ValueError(f"up {up!r}: expected z, y or -y (the world axis that points up in "
                         f"the calibration)")  # fmt: skip
    return UP_AXES[up]


def _preview(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} cameras)" if len(names) > n else "")


# ---------------------------------------------------------------------------------------------
# Validation


def validate_rig(cameras: Sequence[Camera], source: str) -> None:
    """Raise ValueError naming ``source`` for fewer than 2 cameras or duplicate names."""
    if len(cameras) < 2:
        raise ValueError(f"{source}: a rig needs at least 2 cameras, found {len(cameras)}")
    names = [c.name for c in cameras]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{source}: duplicate camera names {duplicates}")


def check_image_sizes(
    cameras: Sequence[Camera], sizes: Mapping[str, tuple[int, int]], source: str
) -> None:
    """Raise ValueError when an image/video size (width, height) px differs from the calibration.

    sizes: camera name -> (width, height) of its images; every name must be a rig camera.
    All mismatches are reported in one message naming ``source``.
    """
    by_name = {c.name: c for c in cameras}
    unknown = [n for n in sizes if n not in by_name]
    if unknown:
        raise ValueError(f"{source}: cameras {unknown} are not in the calibration "
                         f"(it has {_preview(list(by_name))})")  # fmt: skip
    problems = []
    for name, (w, h) in sizes.items():
        cam = by_name[name]
        if (int(w), int(h)) != (cam.width, cam.height):
            hint = ""
            if math.isclose(w * cam.height, h * cam.width, rel_tol=1e-3):
                hint = f" (same aspect: resized by {w / cam.width:g}? scale the intrinsics)"
            problems.append(f"camera {name!r}: images are {w}x{h} px but the calibration says "
                            f"{cam.width}x{cam.height}{hint}")  # fmt: skip
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))


def _array(raw: dict[str, Any], key: str, sizes: tuple[int, ...] | None, where: str,
           label: str) -> np.ndarray:
    """raw[key] as a flat float64 array whose size is one of ``sizes`` (None: any)."""
    try:
        a = np.asarray(raw[key], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:  # ragged rows, strings
        shown = str(raw[key]).replace("\n", " ")
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ValueError(f"{where}: {label!r} is not an array of numbers: {shown}") from e
    if sizes is not None and a.size not in sizes:
        raise ValueError(f"{where}: {label!r} needs {' or '.join(map(str, sizes))} numbers, "
                         f"got {a.size}")  # fmt: skip
    if not np.isfinite(a).all():
        raise ValueError(f"{where}: {label!r} holds NaN or inf")
    return a


def _camera(raw: dict[str, Any], path: Path, scale: float, M: np.ndarray) -> Camera:
    """One camera's raw fields (K, dist, R or rvec, t in the file's unit, width, height) ->
    Camera in the z-up mm world, or a ValueError naming the file, the camera and the field
    (by its name in the file: ``raw["labels"]`` maps the raw keys to it)."""
    import cv2

    where = f"{path}: camera {raw['name']!r}"
    label = {k: k for k in ("K", "dist", "R", "rvec", "t", "width", "height")}
    label |= raw.get("labels", {})
    missing = [label[k] for k in ("K", "dist", "t", "width", "height") if raw.get(k) is None]
    if raw.get("R") is None and raw.get("rvec") is None:
        missing.append(label["R"] if label["R"] == label["rvec"] else f"{label['R']} or "
                       f"{label['rvec']}")  # fmt: skip
    if missing:
        raise ValueError(f"{where}: missing {', '.join(dict.fromkeys(missing))}")
    K = _array(raw, "K", (9,), where, label["K"]).reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"{where}: focal length must be > 0, got fx = {K[0, 0]:g}, "
                         f"fy = {K[1, 1]:g}")  # fmt: skip
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"{where}: the last row of {label['K']!r} must be [0, 0, 1], got "
                         f"{K[2].tolist()} (is the matrix transposed?)")  # fmt: skip
    dist = _array(raw, "dist", None, where, label["dist"])
    if dist.size > 5 and np.any(dist[5:]):
        raise ValueError(f"{where}: only OpenCV's 5-coefficient distortion (k1 k2 p1 p2 k3) is "
                         f"supported, got {dist.size} coefficients with k4.. != 0")  # fmt: skip
    if raw.get("R") is not None:
        R = _array(raw, "R", (9,), where, label["R"]).reshape(3, 3)
        err = float(np.abs(R @ R.T - np.eye(3)).max())
        if err > ORTHONORMAL_TOL:
            raise ValueError(f"{where}: rotation {label['R']!r} is not orthonormal (max "
                             f"|R R^T - I| = {err:.3g}, tolerance {ORTHONORMAL_TOL:g}); expected "
                             f"a world->camera rotation matrix")  # fmt: skip
        if np.linalg.det(R) < 0:
            raise ValueError(f"{where}: rotation {label['R']!r} has determinant "
                             f"{np.linalg.det(R):.3f}: a reflection, not a rotation")  # fmt: skip
    else:
        R = cv2.Rodrigues(_array(raw, "rvec", (3,), where, label["rvec"]))[0]
    t = _array(raw, "t", (3,), where, label["t"])
    try:
        width, height = int(raw["width"]), int(raw["height"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: image size is not two integers ({e})") from e
    if width <= 0 or height <= 0:
        raise ValueError(f"{where}: image size must be positive, got {width}x{height}")
    return Camera(name=raw["name"], K=K, dist=dist[:5], R=R @ M, t=t * scale, width=width,
                  height=height)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Panoptic


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: calibration is not valid JSON ({e})") from e


def _read_panoptic(path: Path) -> list[Camera]:
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
        raise ValueError(f"{path}: calibration has no 'cameras' list")
    cameras = []
    for i, entry in enumerate(data["cameras"]):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: cameras[{i}] is not a mapping")
        name = str(entry.get("name", f"#{i}"))
        # The raw checks first: their messages say how a field is wrong (R not orthonormal...).
        raw = {"name": name, "K": entry.get("K"), "dist": entry.get("distCoef"),
               "R": entry.get("R"), "t": entry.get("t"), "labels": _PANOPTIC_LABELS}  # fmt: skip
        res = entry.get("resolution")
        if isinstance(res, list) and len(res) == 2:
            raw["width"], raw["height"] = res
        elif res is not None:
            raise ValueError(f"{path}: camera {name!r}: resolution must be [width, height]")
        _camera(raw, path, 1.0, np.eye(3))
        try:
            cameras.append(camera_from_panoptic(entry))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
    return cameras


# ---------------------------------------------------------------------------------------------
# anipose calibration.toml


def _read_anipose(path: Path) -> list[dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid TOML file ({e})") from e
    raws = []
    for key, table in data.items():
        if key == "metadata" or not isinstance(table, dict):
            continue
        name = str(table.get("name", key))
        where = f"{path}: camera {name!r}"
        if table.get("fisheye", False):
            raise ValueError(f"{where}: fisheye cameras are not supported (OpenCV's pinhole "
                             f"model with k1 k2 p1 p2 k3 only)")  # fmt: skip
        missing = [k for k in ("size", "matrix", "distortions", "rotation", "translation")
                   if k not in table]  # fmt: skip
        if missing:
            raise ValueError(f"{where} ([{key}]): missing {', '.join(missing)} (an anipose "
                             f"camera table has name, size, matrix, distortions, rotation, "
                             f"translation)")  # fmt: skip
        size = table["size"]
        if not isinstance(size, list) or len(size) != 2:
            raise ValueError(f"{where}: size must be [width, height], got {size!r}")
        rotation = np.asarray(table["rotation"], dtype=object)
        rot_key = "R" if rotation.size == 9 else "rvec"
        raws.append({"name": name, "K": table["matrix"], "dist": table["distortions"],
                     rot_key: table["rotation"], "t": table["translation"],
                     "width": size[0], "height": size[1], "labels": _ANIPOSE_LABELS})  # fmt: skip
    if not raws:
        raise ValueError(f"{path}: no camera tables ([cam_0], [cam_1], ...) in the file")
    return raws


def _toml_array(a: Any) -> str:
    a = np.asarray(a)
    if a.ndim == 0:
        return repr(int(a)) if np.issubdtype(a.dtype, np.integer) else repr(float(a))
    return "[" + ", ".join(_toml_array(x) for x in a) + "]"


def _anipose_text(raws: list[dict[str, Any]]) -> str:
    import cv2

    blocks = []
    for i, r in enumerate(raws):
        rvec = cv2.Rodrigues(np.ascontiguousarray(r["R"]))[0].reshape(3)
        blocks.append(
            f"[cam_{i}]\n"
            f"name = {json.dumps(r['name'])}\n"  # JSON string escapes are valid TOML ones
            f"size = {_toml_array(np.array([r['width'], r['height']]))}\n"
            f"matrix = {_toml_array(r['K'])}\n"
            f"distortions = {_toml_array(r['dist'])}\n"
            f"rotation = {_toml_array(rvec)}\n"
            f"translation = {_toml_array(r['t'])}\n"
        )
    return "\n".join(blocks)


# ---------------------------------------------------------------------------------------------
# OpenCV YAML / JSON


def _node_value(node: Any) -> Any:
    """A cv2.FileNode -> plain Python (dict, list, str, float, ndarray for opencv-matrix)."""
    if node.isMap():
        keys = list(node.keys())
        if {"rows", "cols", "data"} <= set(keys):
            return node.mat()
        return {k: _node_value(node.getNode(k)) for k in keys}
    if node.isSeq():
        return [_node_value(node.at(i)) for i in range(node.size())]
    if node.isString():
        return node.string()
    if node.isInt():
        return int(node.real())
    if node.isReal():
        return node.real()
    return None


def _matrix(value: Any) -> Any:
    """JSON's {"rows", "cols", "data"} (OpenCV's matrix layout) -> ndarray; else unchanged."""
    if isinstance(value, dict) and {"rows", "cols", "data"} <= set(value):
        return np.asarray(value["data"], dtype=np.float64).reshape(value["rows"], value["cols"])
    return value


def _opencv_camera(name: str, entry: Any, path: Path) -> dict[str, Any]:
    where = f"{path}: camera {name!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a map of calibration fields, got {entry!r}")
    raw: dict[str, Any] = {"name": name, "labels": {}}
    for field, aliases in _OPENCV_FIELDS.items():
        used = next((a for a in aliases if a in entry), None)
        raw[field] = None if used is None else _matrix(entry[used])
        raw["labels"][field] = used or aliases[0]
    if raw["K"] is None:
        raise ValueError(f"{where}: missing the intrinsics ('K' or 'camera_matrix')")
    if raw["dist"] is None:
        raise ValueError(f"{where}: missing the distortion ('D' or 'dist_coeffs')")
    if raw["R"] is None and raw["rvec"] is None:
        raise ValueError(f"{where}: missing the rotation ('R' (3x3) or 'rvec')")
    if raw["t"] is None:
        raise ValueError(f"{where}: missing the translation ('t' or 'tvec')")
    size = _matrix(entry.get("image_size", entry.get("size")))
    if size is not None:
        size = np.asarray(size).reshape(-1)
        if size.size != 2:
            raise ValueError(f"{where}: image_size must be [width, height], got {size.tolist()}")
        raw["width"], raw["height"] = size.tolist()
    else:
        raw["width"] = entry.get("width", entry.get("image_width"))
        raw["height"] = entry.get("height", entry.get("image_height"))
        if raw["width"] is None or raw["height"] is None:
            raise ValueError(f"{where}: missing the image size ('image_size: [w, h]' or "
                             f"'width' and 'height')")  # fmt: skip
    return raw


def _read_opencv(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".json":
        tree = _load_json(path)
    else:
        import cv2

        try:
            fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
        except (cv2.error, SystemError) as e:  # the parser's cv2.error may come as its context
            msg = str(e.__context__ if isinstance(e, SystemError) and e.__context__ else e)
            where = re.search(r"\((\d+)\): (.*?)'?$", msg.strip())
            msg = f"line {where[1]}: {where[2]}" if where else msg.strip().splitlines()[-1]
            raise ValueError(f"{path}: not a valid OpenCV YAML file ({msg})") from e
        try:
            if not fs.isOpened():
                raise ValueError(f"{path}: OpenCV cannot open the file as YAML")
            tree = _node_value(fs.root())
        finally:
            fs.release()
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: expected a map at the top level")
    layout_hint = ("expected a top-level 'names' list with one map per camera, or a "
                   "'cameras' list of maps with a 'name' each")  # fmt: skip
    names = tree.get("names")
    if names is not None and (not isinstance(names, list)
                              or not all(isinstance(n, str) for n in names)):  # fmt: skip
        raise ValueError(f"{path}: 'names' must be a list of camera names")
    cams = tree.get("cameras")
    if isinstance(cams, list):
        if names is not None and len(names) != len(cams):
            raise ValueError(f"{path}: 'names' has {len(names)} entries but 'cameras' has "
                             f"{len(cams)}")  # fmt: skip
        entries = []
        for i, entry in enumerate(cams):
            name = names[i] if names else entry.get("name") if isinstance(entry, dict) else None
            if name is None:
                raise ValueError(f"{path}: cameras[{i}] has no 'name' ({layout_hint})")
            entries.append((str(name), entry))
    elif isinstance(cams, dict):
        entries = [(str(n), cams[n] if n in cams else None) for n in names or list(cams)]
    elif names is not None:
        entries = [(n, tree.get(n)) for n in names]
    else:
        raise ValueError(f"{path}: no cameras ({layout_hint})")
    for name, entry in entries:
        if entry is None:
            raise ValueError(f"{path}: camera {name!r} is listed in 'names' but has no map")
    return [_opencv_camera(name, entry, path) for name, entry in entries]


def _opencv_yaml(raws: list[dict[str, Any]]) -> str:
    import cv2

    fs = cv2.FileStorage(".yaml", cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY)
    # Camera names need not be valid YAML keys ("00_03"): one map per camera in a list.
    fs.startWriteStruct("names", cv2.FileNode_SEQ)
    for r in raws:
        fs.write("", r["name"])
    fs.endWriteStruct()
    fs.startWriteStruct("cameras", cv2.FileNode_SEQ)
    for r in raws:
        fs.startWriteStruct("", cv2.FileNode_MAP)
        fs.write("name", r["name"])
        fs.write("width", int(r["width"]))
        fs.write("height", int(r["height"]))
        fs.write("K", np.ascontiguousarray(r["K"]))
        fs.write("D", r["dist"].reshape(1, -1))
        fs.write("R", np.ascontiguousarray(r["R"]))
        fs.write("t", r["t"].reshape(3, 1))
        fs.endWriteStruct()
    fs.endWriteStruct()
    return fs.releaseAndGetString()


def _opencv_json(raws: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "names": [r["name"] for r in raws],
        "cameras": [{"name": r["name"], "width": int(r["width"]), "height": int(r["height"]),
                     "K": r["K"].tolist(), "D": r["dist"].tolist(), "R": r["R"].tolist(),
                     "t": r["t"].tolist()} for r in raws],
    }  # fmt: skip
