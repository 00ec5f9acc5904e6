"""Drawing people into a view: shaded capsule limbs, a torso and a head per person.

Every body part is one primitive with the mean camera depth of its points; all primitives of
all people are drawn far to near (painter's algorithm), so people occlude each other and
themselves part by part. Limb thickness is the body's radius in mm projected at the part's
depth. Colours are the person's clothes (``body.Body.colors``), shaded as a cylinder lit from
above (a darker rim, a lighter core).

Pixel convention: OpenCV, the centre of the top-left pixel is (0, 0); drawing uses 4 bits of
sub-pixel precision.

Shape legend: P people, N = N_POINTS points.
"""

from __future__ import annotations

import cv2
import numpy as np

from selfpose3d.data.synthetic import body as B
from selfpose3d.data.synthetic.views import NEAR

SHIFT = 4  # sub-pixel bits of the cv2 drawing calls
_ONE = 1 << SHIFT
_TORSO = (B.L_SHOULDER, B.R_SHOULDER, B.R_HIP, B.L_HIP)
_LIMIT = 1 << 20  # px; clamp far-away coordinates so that fixed-point drawing cannot overflow


def _fix(uv: np.ndarray) -> np.ndarray:
    return np.round(np.clip(uv, -_LIMIT, _LIMIT) * _ONE).astype(np.int32)


def _scale(color, k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * k)) for c in color)


def _shades(body: B.Body) -> dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """Per clothing part: (rim colour, lit core colour) of a cylinder lit from above."""
    return {k: (_scale(c, 0.6), _scale(c, 1.1)) for k, c in body.colors.items()}


def _capsule(img, pa: tuple, pb: tuple, radius: float, rim, core) -> None:
    """A shaded capsule between fixed-point pixel points pa, pb of ``radius`` px."""
    cv2.line(img, pa, pb, rim, max(1, round(2 * radius)), cv2.LINE_AA, SHIFT)
    if radius >= 2:
        lift = round(-0.3 * radius * _ONE)  # the lit side faces up
        cv2.line(img, (pa[0], pa[1] + lift), (pb[0], pb[1] + lift), core, round(radius),
                 cv2.LINE_AA, SHIFT)  # fmt: skip


def _torso(img, quad: np.ndarray, radius: float, color) -> None:
    cv2.fillConvexPoly(img, quad, _scale(color, 0.85), cv2.LINE_AA, SHIFT)
    cv2.polylines(img, [quad], True, _scale(color, 0.7), max(1, round(2 * radius)),
                  cv2.LINE_AA, SHIFT)  # fmt: skip


def _head(img, uv, z, half_w_mm: float, focal: float, colors) -> None:
    center, top = uv[B.HEAD_CENTER], uv[B.HEAD_TOP]
    half_w = half_w_mm * focal / z[B.HEAD_CENTER]
    axis = top - center
    length = float(np.hypot(*axis))
    half_h = max(length, half_w)  # seen from above the head looks round
    angle = float(np.degrees(np.arctan2(axis[1], axis[0]))) + 90.0 if length > 1e-3 else 0.0
    unit = axis / max(length, 1e-6)
    hair_c, face_c = _fix(center + unit * 0.18 * half_h), _fix(center - unit * 0.08 * half_h)
    hair = ((int(hair_c[0]), int(hair_c[1])), (round(half_w * _ONE), round(half_h * 0.9 * _ONE)))
    face = ((int(face_c[0]), int(face_c[1])),
            (round(half_w * 0.9 * _ONE), round(half_h * 0.85 * _ONE)))  # fmt: skip
    order = ((hair, colors["hair"]), (face, colors["skin"]))
    if z[B.NOSE] > z[B.HEAD_CENTER]:  # the back of the head: hair covers the face
        order = order[::-1]
    for (c, axes), color in order:
        cv2.ellipse(img, c, axes, angle, 0, 360, color, -1, cv2.LINE_AA, SHIFT)


_SEG_A = np.array([a for a, *_ in B.SEGMENTS])
_SEG_B = np.array([b for _, b, *_ in B.SEGMENTS])
_SEG_R = np.array([r for *_, r in B.SEGMENTS])


def draw_people(
    img: np.ndarray, uv: np.ndarray, z: np.ndarray, bodies: list[B.Body], focal: float
) -> None:
    """Draw P people into ``img`` (H, W, 3) in place; uv (P, N, 2) px, z (P, N) camera depth mm.

    A part with a point behind the camera (depth < NEAR) is not drawn.
    """
    if not bodies:
        return
    pts = _fix(uv).tolist()  # (P, N, 2) fixed point, as Python ints for cv2
    stature = np.array([[b.stature, b.girth] for b in bodies])
    seg_z = (z[:, _SEG_A] + z[:, _SEG_B]) / 2  # (P, S)
    seg_ok = (z[:, _SEG_A] > NEAR) & (z[:, _SEG_B] > NEAR)
    seg_r = _SEG_R * (stature[:, :1] * stature[:, 1:]) * focal / np.maximum(seg_z, NEAR)
    torso_z = z[:, list(_TORSO)].mean(1)
    torso_ok = (z[:, list(_TORSO)] > NEAR).all(1)
    neck_z = (z[:, B.NECK] + z[:, B.HEAD_CENTER]) / 2 + 1.0  # just behind the head
    neck_ok = (z[:, B.NECK] > NEAR) & (z[:, B.HEAD_CENTER] > NEAR)
    head_ok = (z[:, [B.HEAD_CENTER, B.HEAD_TOP, B.NOSE]] > NEAR).all(1)
    # (depth, person, kind, index): kind 0 limb, 1 torso, 2 neck, 3 head.
    prims = [(d, p, 0, s) for (p, s), d in np.ndenumerate(seg_z) if seg_ok[p, s]]
    prims += [(torso_z[p], p, 1, 0) for p in np.flatnonzero(torso_ok)]
    prims += [(neck_z[p], p, 2, 0) for p in np.flatnonzero(neck_ok)]
    prims += [(z[p, B.HEAD_CENTER], p, 3, 0) for p in np.flatnonzero(head_ok)]
    prims.sort(key=lambda item: -item[0])
    shades = [_shades(b) for b in bodies]
    for depth, p, kind, s in prims:
        body, pp = bodies[p], pts[p]
        if kind == 0:
            rim, core = shades[p][B.SEGMENTS[s][2]]
            _capsule(img, tuple(pp[_SEG_A[s]]), tuple(pp[_SEG_B[s]]), seg_r[p, s], rim, core)
        elif kind == 1:
            quad = np.array([pp[i] for i in _TORSO], dtype=np.int32)
            radius = B.TORSO_RADIUS * body.stature * focal / depth
            _torso(img, quad, radius, body.colors["shirt"])
        elif kind == 2:
            top = ((pp[B.NECK][0] + pp[B.HEAD_CENTER][0]) // 2,
                   (pp[B.NECK][1] + pp[B.HEAD_CENTER][1]) // 2)  # fmt: skip
            rim, core = shades[p]["skin"]
            _capsule(img, tuple(pp[B.NECK]), top, 0.028 * body.stature * focal / depth, rim, core)
        else:
            _head(img, uv[p], z[p], body.head_radii()[0], focal, body.colors)


def occluders(uv: np.ndarray, z: np.ndarray, bodies: list[B.Body], focal: np.ndarray):
    """Capsules that hide what is behind them, per view, for the occlusion test.

    uv (..., V, P, N, 2) px, z (..., V, P, N) mm, focal (V,) px -> a (..., V, P, C, 2),
    b (..., V, P, C, 2) capsule end points px, radius (..., V, P, C) px and depth
    (..., V, P, C) mm of C capsules per person (limbs, torso, head).
    """
    idx_a = [a for a, *_ in B.SEGMENTS] + [B.L_SHOULDER, B.R_SHOULDER, B.NECK, B.HEAD_CENTER]
    idx_b = [b for _, b, *_ in B.SEGMENTS] + [B.L_HIP, B.R_HIP, B.MID_HIP, B.HEAD_TOP]
    rad_mm = np.array([[*b.segment_radii(), B.TORSO_RADIUS * b.stature * 1.6,
                        B.TORSO_RADIUS * b.stature * 1.6, 0.11 * b.stature,
                        b.head_radii()[0]] for b in bodies]).reshape(len(bodies), -1)  # fmt: skip
    a, b = uv[..., idx_a, :], uv[..., idx_b, :]
    depth = (z[..., idx_a] + z[..., idx_b]) / 2
    radius = rad_mm * focal[:, None, None] / np.maximum(depth, NEAR)
    return a, b, radius, depth
