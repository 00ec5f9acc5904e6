"""Forward kinematics of the procedural body: joint angles -> 3D points (mm, z up).

A pose is a vector of ``N_PARAMS`` angles (rad). Frames: the pelvis frame is (forward f,
left l, up z) from the heading; the trunk frame leans/twists from it; the head frame turns
and pitches from the trunk's. Arms and legs are spherical angles in their parent frame:
flexion (forward), abduction (sideways), plus elbow/knee flexion. The root (mid-hip) height
is set so that the lower ankle is at ankle height: feet stay on the floor when walking,
bending and crouching.

Shape legend: T time steps, N = N_POINTS points.
"""

from __future__ import annotations

import numpy as np

from selfpose3d.data.synthetic import body as B

LEAN, SIDE, TWIST, HEAD_YAW, HEAD_PITCH = range(5)
L_SH_FLEX, L_SH_ABD, L_ARM_ROLL, L_ELBOW = range(5, 9)
R_SH_FLEX, R_SH_ABD, R_ARM_ROLL, R_ELBOW = range(9, 13)
L_HIP_FLEX, L_HIP_ABD, L_KNEE, R_HIP_FLEX, R_HIP_ABD, R_KNEE = range(13, 19)
N_PARAMS = 19
ARM = {+1: (L_SH_FLEX, L_SH_ABD, L_ARM_ROLL, L_ELBOW),
       -1: (R_SH_FLEX, R_SH_ABD, R_ARM_ROLL, R_ELBOW)}  # fmt: skip
LEG = {+1: (L_HIP_FLEX, L_HIP_ABD, L_KNEE), -1: (R_HIP_FLEX, R_HIP_ABD, R_KNEE)}
ARM_POINTS = {+1: (B.L_SHOULDER, B.L_ELBOW, B.L_WRIST, B.L_HAND),
              -1: (B.R_SHOULDER, B.R_ELBOW, B.R_WRIST, B.R_HAND)}  # fmt: skip
LEG_POINTS = {+1: (B.L_HIP, B.L_KNEE, B.L_ANKLE, B.L_TOE),
              -1: (B.R_HIP, B.R_KNEE, B.R_ANKLE, B.R_TOE)}  # fmt: skip

# A relaxed standing pose: arms slightly away from the body, elbows and knees barely bent.
REST = np.zeros(N_PARAMS)
REST[[L_SH_ABD, R_SH_ABD]] = 0.12
REST[[L_ELBOW, R_ELBOW]] = 0.2
REST[[L_KNEE, R_KNEE]] = 0.04
REST[[L_HIP_FLEX, R_HIP_FLEX]] = 0.02


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _col(a: np.ndarray) -> np.ndarray:
    return np.asarray(a)[:, None]


def heading_frame(heading: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T,) heading angles (rad from +x) -> forward, left, up, each (T, 3)."""
    c, s = np.cos(heading), np.sin(heading)
    z = np.zeros_like(c)
    return np.stack([c, s, z], -1), np.stack([-s, c, z], -1), np.stack([z, z, z + 1], -1)


def head_points(
    neck: np.ndarray, f: np.ndarray, l: np.ndarray, u: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """Head points: neck (T, 3) + offsets (N, 3) (forward, left, up) in the head frame (T, 3)."""
    return neck[:, None] + offsets[None, :, :1] * f[:, None] + offsets[None, :, 1:2] * l[:, None] \
        + offsets[None, :, 2:] * u[:, None]


def forward_kinematics(
    body: B.Body, params: np.ndarray, root_xy: np.ndarray, heading: np.ndarray
) -> np.ndarray:
    """params (T, N_PARAMS) rad, root_xy (T, 2) mm, heading (T,) rad -> points (T, N, 3) mm."""
    T = params.shape[0]
    p = params
    f, l, u = heading_frame(heading)
    pts = np.zeros((T, B.N_POINTS, 3))  # relative to the root until the end

    for s, (i_flex, i_abd, i_knee) in LEG.items():
        hf, ab, kn = _col(p[:, i_flex]), _col(p[:, i_abd]), _col(p[:, i_knee])
        hip = s * l * body.hip_width / 2
        side = np.sin(ab) * s * l
        thigh = np.cos(ab) * (-u * np.cos(hf) + f * np.sin(hf)) + side
        shank = np.cos(ab) * (-u * np.cos(hf - kn) + f * np.sin(hf - kn)) + side
        knee = hip + body.thigh * thigh
        ankle = knee + body.shank * shank
        toe = ankle + 0.72 * body.foot * f - u * (body.ankle_height - 0.02 * body.stature)
        for idx, val in zip(LEG_POINTS[s], (hip, knee, ankle, toe), strict=True):
            pts[:, idx] = val

    lean, side_lean, twist = _col(p[:, LEAN]), _col(p[:, SIDE]), _col(p[:, TWIST])
    ut = _unit((u * np.cos(lean) + f * np.sin(lean)) * np.cos(side_lean) + l * np.sin(side_lean))
    ft0 = _unit(f - np.sum(f * ut, -1, keepdims=True) * ut)
    lt0 = np.cross(ut, ft0)
    ft = ft0 * np.cos(twist) + lt0 * np.sin(twist)
    lt = np.cross(ut, ft)
    neck = ut * body.trunk
    pts[:, B.NECK] = neck

    for s, (i_flex, i_abd, i_roll, i_elbow) in ARM.items():
        a, b = _col(p[:, i_flex]), _col(p[:, i_abd])
        roll, el = _col(p[:, i_roll]), _col(p[:, i_elbow])
        shoulder = neck + s * lt * body.shoulder_width / 2 - ut * 0.008 * body.stature
        d = np.cos(b) * (-ut * np.cos(a) + ft * np.sin(a)) + np.sin(b) * s * lt
        bend = np.cos(b) * (ut * np.sin(a) + ft * np.cos(a)) + np.sin(b) * ft
        bend = _unit(bend - np.sum(bend * d, -1, keepdims=True) * d + 1e-6 * ft)
        bend = bend * np.cos(roll) + s * np.cross(d, bend) * np.sin(roll)
        fore = d * np.cos(el) + bend * np.sin(el)
        elbow = shoulder + body.upper_arm * d
        wrist = elbow + body.forearm * fore
        hand = wrist + 0.8 * body.hand * fore
        for idx, val in zip(ARM_POINTS[s], (shoulder, elbow, wrist, hand), strict=True):
            pts[:, idx] = val

    yaw, pitch = _col(p[:, HEAD_YAW]), _col(p[:, HEAD_PITCH])
    fh0 = ft * np.cos(yaw) + lt * np.sin(yaw)
    lh = np.cross(ut, fh0)
    fh = fh0 * np.cos(pitch) - ut * np.sin(pitch)
    uh = ut * np.cos(pitch) + fh0 * np.sin(pitch)
    offsets = body.head_offsets()
    head_idx = list(B.HEAD_OFFSETS)
    pts[:, head_idx] = head_points(neck, fh, lh, uh, offsets[head_idx])

    lowest_ankle = np.minimum(pts[:, B.L_ANKLE, 2], pts[:, B.R_ANKLE, 2])
    root = np.concatenate([root_xy, (body.ankle_height - lowest_ankle)[:, None]], axis=1)
    return pts + root[:, None, :]


def standing_points(body: B.Body, xy: tuple[float, float] = (0.0, 0.0), heading: float = 0.0):
    """(N, 3) points of ``body`` standing at rest at ``xy`` (mm) facing ``heading`` (rad)."""
    return forward_kinematics(body, REST[None], np.array([xy], float), np.array([heading]))[0]
