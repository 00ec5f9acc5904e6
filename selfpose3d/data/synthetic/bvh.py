"""BVH motion capture files: parse, forward kinematics, and mapping to the Panoptic joints.

Any BVH skeleton works whose joints carry common names (Hips, Spine, Neck, Head, LeftArm /
LeftShoulder, LeftForeArm, LeftHand, LeftUpLeg, LeftLeg, LeftFoot, the Right* joints; also
the lShldr/lForeArm/lThigh/lShin style and ``prefix:`` namespaces). Rotations compose in the
order the channels are listed (the BVH convention); a joint's position is its parent's plus
the parent's rotation applied to (offset + translation channels).

The up axis is detected (Y-up, the BVH norm, or Z-up) and positions are brought to the model
frame (z up); units are removed by scaling the legs to the person's (see ``retarget``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfpose3d.data.synthetic import body as B
from selfpose3d.data.synthetic.kinematics import head_points

# Panoptic-15 index -> accepted BVH names (normalised: lower case, no '_', ' ', '.', '-').
_CANDIDATES: dict[int, tuple[str, ...]] = {}
for _side, _names in (("left", "l"), ("right", "r")):
    _off = 0 if _side == "left" else 6
    _CANDIDATES[3 + _off] = (f"{_side}arm", f"{_side}upperarm", f"{_names}upperarm",
                             f"{_names}shldr", f"{_side}humerus", f"{_side}shoulder",
                             f"{_names}shoulder")  # fmt: skip
    _CANDIDATES[4 + _off] = (f"{_side}forearm", f"{_side}lowerarm", f"{_names}forearm",
                             f"{_side}elbow", f"{_names}elbow", f"{_side}radius")  # fmt: skip
    _CANDIDATES[5 + _off] = (f"{_side}hand", f"{_side}wrist", f"{_names}hand", f"{_names}wrist")
    _CANDIDATES[6 + _off] = (f"{_side}upleg", f"{_side}upperleg", f"{_side}thigh", f"{_names}thigh",
                             f"{_side}hip", f"{_names}hip", f"{_side}femur")  # fmt: skip
    _CANDIDATES[7 + _off] = (f"{_side}leg", f"{_side}lowerleg", f"{_side}shin", f"{_names}shin",
                             f"{_side}knee", f"{_names}knee", f"{_side}tibia")  # fmt: skip
    _CANDIDATES[8 + _off] = (f"{_side}foot", f"{_side}ankle", f"{_names}foot", f"{_names}ankle")
_NECK = ("neck", "neck1", "lowerneck")
_HEAD = ("head",)


@dataclass(frozen=True)
class BvhClip:
    names: list[str]
    parents: list[int]  # -1 for the root
    offsets: np.ndarray  # (J, 3) in the file's units
    channels: list[list[str]]  # per joint, e.g. ["Xposition", ..., "Zrotation", ...]
    frame_time: float  # s
    motion: np.ndarray  # (F, C) channel values (degrees for rotations)

    @property
    def n_frames(self) -> int:
        return self.motion.shape[0]


def parse_bvh(path: str | Path) -> BvhClip:
    """Read a BVH file. Raises ValueError naming the file on malformed content."""
    path = Path(path)
    try:
        tokens = path.read_text().split()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: BVH file not found") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text BVH file ({e})") from e
    try:
        return _parse(tokens)
    except (IndexError, ValueError) as e:
        raise ValueError(f"{path}: malformed BVH ({e})") from e


def _parse(tokens: list[str]) -> BvhClip:
    if not tokens or tokens[0].upper() != "HIERARCHY":
        raise ValueError("missing HIERARCHY")
    names, parents, offsets, channels = [], [], [], []
    stack: list[int] = []
    i = 1
    while tokens[i].upper() != "MOTION":
        tok = tokens[i].upper()
        if tok in ("ROOT", "JOINT") or (tok == "END" and tokens[i + 1].upper() == "SITE"):
            name = f"{names[stack[-1]]}_end" if tok == "END" else tokens[i + 1]
            if tokens[i + 2] != "{" or tokens[i + 3].upper() != "OFFSET":
                raise ValueError(f"expected '{{ OFFSET' after {tok} {name}")
            names.append(name)
            parents.append(stack[-1] if stack else -1)
            offsets.append([float(v) for v in tokens[i + 4 : i + 7]])
            i += 7
            chans: list[str] = []
            if tokens[i].upper() == "CHANNELS":
                n = int(tokens[i + 1])
                chans = tokens[i + 2 : i + 2 + n]
                i += 2 + n
            channels.append(chans)
            stack.append(len(names) - 1)
        elif tok == "}":
            stack.pop()
            i += 1
        else:
            raise ValueError(f"unexpected token {tokens[i]!r} in the hierarchy")
    if stack or not names:
        raise ValueError("unbalanced braces or empty hierarchy")
    if tokens[i + 1].upper() != "FRAMES:" or tokens[i + 3].upper() != "FRAME":
        raise ValueError("expected 'Frames: N' and 'Frame Time: dt' after MOTION")
    n_frames, frame_time = int(tokens[i + 2]), float(tokens[i + 5])
    n_chan = sum(len(c) for c in channels)
    values = np.array(tokens[i + 6 :], dtype=np.float64)
    if n_frames < 1 or values.size != n_frames * n_chan:
        raise ValueError(f"expected {n_frames} frames x {n_chan} channels, "
                         f"got {values.size} values")  # fmt: skip
    if frame_time <= 0:
        raise ValueError("Frame Time must be > 0")
    return BvhClip(names, parents, np.array(offsets), channels, frame_time,
                   values.reshape(n_frames, n_chan))  # fmt: skip


def _axis_rotation(axis: str, deg: np.ndarray) -> np.ndarray:
    a = np.radians(deg)
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    rows = {"X": [[o, z, z], [z, c, -s], [z, s, c]], "Y": [[c, z, s], [z, o, z], [-s, z, c]],
            "Z": [[c, -s, z], [s, c, z], [z, z, o]]}[axis]  # fmt: skip
    return np.moveaxis(np.array(rows), (0, 1), (-2, -1))


def positions(clip: BvhClip) -> np.ndarray:
    """(F, J, 3) global joint positions in the file's axes and units."""
    F, J = clip.n_frames, len(clip.names)
    rot = np.zeros((F, J, 3, 3))
    pos = np.zeros((F, J, 3))
    col = 0
    for j in range(J):
        local_r = np.broadcast_to(np.eye(3), (F, 3, 3))
        trans = np.zeros((F, 3))
        for ch in clip.channels[j]:
            axis, kind = ch[0].upper(), ch[1:].lower()
            if kind == "rotation":
                local_r = local_r @ _axis_rotation(axis, clip.motion[:, col])
            elif kind == "position":
                trans[:, "XYZ".index(axis)] = clip.motion[:, col]
            else:
                raise ValueError(f"unknown BVH channel {ch!r}")
            col += 1
        p = clip.parents[j]
        local = clip.offsets[j] + trans
        if p < 0:
            rot[:, j], pos[:, j] = local_r, local
        else:
            rot[:, j] = rot[:, p] @ local_r
            pos[:, j] = pos[:, p] + np.einsum("fij,fj->fi", rot[:, p], local)
    return pos


def _norm(name: str) -> str:
    name = name.rsplit(":", 1)[-1].lower()
    return "".join(ch for ch in name if ch not in "_ .-")


def joint_map(names: list[str]) -> tuple[dict[int, int], int | None, int | None]:
    """Panoptic index -> BVH joint index for the 12 limb joints, plus (neck, head) or None."""
    normed = {_norm(n): j for j, n in enumerate(names)}
    found, missing = {}, []
    for target, cands in _CANDIDATES.items():
        j = next((normed[c] for c in cands if c in normed), None)
        if j is None:
            missing.append(f"{cands[0]}")
        else:
            found[target] = j
    if missing:
        raise ValueError(f"BVH skeleton lacks joints for {missing} (names seen: {names})")
    neck = next((normed[c] for c in _NECK if c in normed), None)
    head = next((normed[c] for c in _HEAD if c in normed), None)
    return found, neck, head


def to_model_frame(clip: BvhClip) -> np.ndarray:
    """(F, J, 3) positions with z up (file units)."""
    pos = positions(clip)
    found, neck, head = joint_map(clip.names)
    top = head if head is not None else neck if neck is not None else found[3]
    up = pos[0, top] - (pos[0, found[8]] + pos[0, found[14]]) / 2
    if np.argmax(np.abs(up)) == 1:  # Y-up (the BVH norm): (x, y, z) -> (x, -z, y)
        pos = np.stack([pos[..., 0], -pos[..., 2], pos[..., 1]], -1)
    if np.argmax(np.abs(up)) == 0:
        raise ValueError("BVH skeleton is lying along x in its first frame: no up axis found")
    return pos


@functools.lru_cache(maxsize=2)
def _load(path: str, mtime: float) -> tuple[BvhClip, np.ndarray]:
    clip = parse_bvh(path)
    return clip, to_model_frame(clip)


def load(path: str | Path) -> tuple[BvhClip, np.ndarray]:
    """(clip, positions (F, J, 3) z up), cached per file version."""
    return _load(str(path), os.path.getmtime(path))


def retarget(clip: BvhClip, pos: np.ndarray, body: B.Body) -> np.ndarray:
    """BVH positions (F, J, 3) z up -> (F, N_POINTS, 3) mm for ``body``: scaled so that the leg
    lengths match, ankles resting on the floor (z = 0) at their lowest, root-relative xy kept."""
    found, neck, head = joint_map(clip.names)
    out = np.zeros((pos.shape[0], B.N_POINTS, 3))
    for target, j in found.items():
        out[:, target] = pos[:, j]
    out[:, B.MID_HIP] = (out[:, B.L_HIP] + out[:, B.R_HIP]) / 2
    shoulders = (out[:, B.L_SHOULDER] + out[:, B.R_SHOULDER]) / 2
    out[:, B.NECK] = pos[:, neck] if neck is not None else shoulders
    # Directions do not change under the uniform scale and shift below: take the head's now.
    if head is not None:
        up = pos[:, head] - out[:, B.NECK]
    else:
        up = out[:, B.NECK] - out[:, B.MID_HIP]
    leg = np.linalg.norm(out[:, B.L_HIP] - out[:, B.L_KNEE], axis=-1) \
        + np.linalg.norm(out[:, B.L_KNEE] - out[:, B.L_ANKLE], axis=-1)
    out *= body.leg / max(float(np.median(leg)), 1e-9)
    out[..., 2] += body.ankle_height - out[:, [B.L_ANKLE, B.R_ANKLE], 2].min()

    left = out[:, B.L_SHOULDER] - out[:, B.R_SHOULDER]
    u = up / np.maximum(np.linalg.norm(up, axis=-1, keepdims=True), 1e-9)
    f = np.cross(left, u)
    f /= np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-9)
    l = np.cross(u, f)
    idx = list(B.HEAD_OFFSETS)
    out[:, idx] = head_points(out[:, B.NECK], f, l, u, body.head_offsets()[idx])

    fh = f * np.array([1.0, 1.0, 0.0])
    fh /= np.maximum(np.linalg.norm(fh, axis=-1, keepdims=True), 1e-9)
    for ankle, toe, elbow, wrist, hand in ((B.L_ANKLE, B.L_TOE, B.L_ELBOW, B.L_WRIST, B.L_HAND),
                                           (B.R_ANKLE, B.R_TOE, B.R_ELBOW, B.R_WRIST, B.R_HAND)):
        out[:, toe] = out[:, ankle] + 0.72 * body.foot * fh
        out[:, toe, 2] -= body.ankle_height - 0.02 * body.stature
        fore = out[:, wrist] - out[:, elbow]
        fore /= np.maximum(np.linalg.norm(fore, axis=-1, keepdims=True), 1e-9)
        out[:, hand] = out[:, wrist] + 0.8 * body.hand * fore
    return out
