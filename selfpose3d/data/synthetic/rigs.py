"""Camera rigs of the synthetic dataset: cameras, capture space and the static surroundings.

All positions are in the model frame (mm, z up, floor at z = 0). Cameras follow
``selfpose3d.geometry.camera`` (R world->camera, t in mm, OpenCV distortion).

- ``dome``: the real CMU Panoptic HD cameras (31 of them, from a real calibration shipped as
  package data), inside a panelled geodesic dome; default selection the literature's 5 views.
- ``room``: 4 ceiling-corner cameras in a 6 m x 5 m room, looking down at its centre.
- ``outdoor3``: 3 pole-mounted cameras on a wide baseline around an open square.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np

from selfpose3d.data.panoptic_layout import camera_from_panoptic
from selfpose3d.data.synthetic.config import RigConfig
from selfpose3d.geometry.camera import Camera

DOME_DEFAULT_CAMERAS = ["00_03", "00_06", "00_12", "00_13", "00_23"]
PANOPTIC_CAMERAS_FILE = "panoptic_hd_cameras.json"


@dataclass(frozen=True, kw_only=True)
class Environment:
    """The static scene around the people, used to render backgrounds and bound walking.

    dome: a sphere of ``radius`` centred at ``center``; room: walls at |x| = half_x,
    |y| = half_y and a ceiling at ``height``; outdoor: open ground up to ``radius``.
    """

    kind: Literal["dome", "room", "outdoor"]
    radius: float = 0.0  # mm
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mm
    half_x: float = 0.0  # mm
    half_y: float = 0.0  # mm
    height: float = 0.0  # mm

    def walkable(self, xy: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """(..., 2) floor points, mm -> (...,) bool: at least ``margin`` mm from any wall."""
        xy = np.asarray(xy, dtype=np.float64)
        if self.kind == "room":
            return (np.abs(xy[..., 0]) <= self.half_x - margin) & (
                np.abs(xy[..., 1]) <= self.half_y - margin
            )
        if self.kind == "dome":
            floor_r = np.sqrt(self.radius**2 - self.center[2] ** 2)
            return np.linalg.norm(xy - np.asarray(self.center[:2]), axis=-1) <= floor_r - margin
        return np.linalg.norm(xy, axis=-1) <= self.radius - margin


@dataclass(frozen=True, kw_only=True)
class Rig:
    kind: str
    cameras: list[Camera]  # at the written image size
    space_center: np.ndarray  # (3,) mm
    space_size: np.ndarray  # (3,) mm
    environment: Environment

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def in_space(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """(..., 3) points, mm -> (...,) bool: inside the capture box shrunk by ``margin``."""
        half = self.space_size / 2 - margin
        return np.all(np.abs(np.asarray(points) - self.space_center) <= half, axis=-1)

    def in_space_xy(self, xy: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """(..., 2) floor points, mm -> (...,) bool: inside the capture box's footprint."""
        half = self.space_size[:2] / 2 - margin
        return np.all(np.abs(np.asarray(xy) - self.space_center[:2]) <= half, axis=-1)


def look_at(center: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World->camera (R, t) of a camera at ``center`` looking at ``target`` (mm), no roll."""
    forward = np.asarray(target, float) - np.asarray(center, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return R, -R @ np.asarray(center, float)


def _intrinsics(width: int, height: int, hfov_deg: float, cx_off: float, cy_off: float):
    f = (width / 2) / np.tan(np.radians(hfov_deg) / 2)
    cx, cy = (width - 1) / 2 + cx_off, (height - 1) / 2 + cy_off
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])


def _dome_cameras() -> list[Camera]:
    text = resources.files(__package__).joinpath(PANOPTIC_CAMERAS_FILE).read_text()
    return [camera_from_panoptic(entry) for entry in json.loads(text)["cameras"]]


def _room_cameras() -> list[Camera]:
    # Ceiling corners of a 6 x 5 m room, 2.7 m high, all aimed at a point above the centre;
    # ~90 deg wide lenses with mild barrel distortion, as typical for surveillance-style rigs.
    corners = [(-2800, -2300), (2800, -2300), (2800, 2300), (-2800, 2300)]
    dists = [[-0.12, 0.05, 4e-4, -3e-4, -0.01], [-0.11, 0.045, -2e-4, 3e-4, -0.008],
             [-0.125, 0.052, 1e-4, 2e-4, -0.011],
             [-0.115, 0.048, -3e-4, -1e-4, -0.009]]  # fmt: skip
    cams = []
    for i, ((x, y), dist) in enumerate(zip(corners, dists, strict=True)):
        R, t = look_at(np.array([x, y, 2700.0]), np.array([0.0, 0.0, 800.0]))
        K = _intrinsics(1920, 1080, 90.0 - 2 * i, 4.0 * (i - 1.5), -3.0 * (i - 1.5))
        cams.append(Camera(name=f"room_{i:02d}", K=K, dist=dist, R=R, t=t, width=1920,
                           height=1080, extra={"type": "hd", "panel": 0, "node": i}))  # fmt: skip
    return cams


def _outdoor_cameras() -> list[Camera]:
    # Three poles 7 m from the centre, 120 deg apart: a wide baseline, ~70 deg lenses.
    cams = []
    for i, (az, h) in enumerate(((90.0, 3000.0), (210.0, 3300.0), (330.0, 2800.0))):
        a = np.radians(az)
        R, t = look_at(np.array([7000 * np.cos(a), 7000 * np.sin(a), h]), np.array([0, 0, 900.0]))
        K = _intrinsics(1920, 1080, 68.0 + 3 * i, 6.0 - 5 * i, 4.0 * i - 4)
        dist = [-0.08 + 0.01 * i, 0.02, 2e-4 * (i - 1), -1e-4, 0.0]
        cams.append(Camera(name=f"outdoor_{i:02d}", K=K, dist=dist, R=R, t=t, width=1920,
                           height=1080, extra={"type": "hd", "panel": 0, "node": i}))  # fmt: skip
    return cams


# kind -> (all cameras, default selection (None = all), space centre, space size, environment)
def _rig_parts(kind: str):
    if kind == "dome":
        # Where most of the 5 literature views overlap (about 3.5-5 views see a person there).
        env = Environment(kind="dome", radius=3700.0, center=(0.0, 0.0, 300.0))
        return _dome_cameras(), DOME_DEFAULT_CAMERAS, (0, -250, 800), (3400, 3000, 2000), env
    if kind == "room":
        env = Environment(kind="room", half_x=3000.0, half_y=2500.0, height=3000.0)
        return _room_cameras(), None, (0, 0, 800), (4000, 3000, 2000), env
    env = Environment(kind="outdoor", radius=40000.0)
    return _outdoor_cameras(), None, (0, 0, 800), (6000, 6000, 2000), env


def build_rig(cfg: RigConfig) -> Rig:
    """The rig of ``cfg``: selected cameras scaled to the image size, capture space, scene."""
    cams, default, center, size, env = _rig_parts(cfg.kind)
    by_name = {c.name: c for c in cams}
    names = cfg.cameras or default or list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"synth.rig.cameras: {unknown} not in the {cfg.kind} rig "
                         f"(available: {sorted(by_name)})")  # fmt: skip
    selected = [by_name[n] for n in names]
    selected = [c.scaled(cfg.image_width / c.width, cfg.image_height / c.height) for c in selected]
    return Rig(
        kind=cfg.kind, cameras=selected,
        space_center=np.asarray(cfg.space_center or center, dtype=np.float64),
        space_size=np.asarray(cfg.space_size or size, dtype=np.float64), environment=env,
    )  # fmt: skip
