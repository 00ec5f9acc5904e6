"""Anthropometric bodies: statures, segment lengths, render radii and clothing colours.

Segment lengths are fractions of stature H after Drillis & Contini (1966), as tabulated by
Winter, *Biomechanics and Motor Control of Human Movement*, Fig. 4.1 (shoulder 0.818 H,
elbow 0.630 H, wrist 0.485 H, hip 0.530 H, knee 0.285 H, ankle 0.039 H, chin 0.870 H ...).
Children get a larger head and shorter legs relative to stature (a 4-year-old's head is about
a fifth of the stature, an adult's about an eighth). All lengths in mm.

A body's points (``N_POINTS``): the 19 Panoptic COCO-19 joints, then the extra points the
renderer needs (toes, hand tips, head centre, head top).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from selfpose3d.data.synthetic.config import PeopleConfig

# Extra points after the 19 Panoptic joints (0..18, see selfpose3d.skeleton).
L_TOE, R_TOE, L_HAND, R_HAND, HEAD_CENTER, HEAD_TOP = range(19, 25)
N_POINTS = 25
NECK, NOSE, MID_HIP, L_SHOULDER, L_ELBOW, L_WRIST, L_HIP, L_KNEE, L_ANKLE = range(9)
R_SHOULDER, R_ELBOW, R_WRIST, R_HIP, R_KNEE, R_ANKLE, L_EYE, L_EAR, R_EYE, R_EAR = range(9, 19)

# Head points relative to the neck in the head frame (forward, left, up), fractions of an
# adult stature; scaled with the head size for children.
HEAD_OFFSETS = {
    NOSE: (0.060, 0.0, 0.080), L_EYE: (0.045, 0.018, 0.106), R_EYE: (0.045, -0.018, 0.106),
    L_EAR: (-0.005, 0.044, 0.098), R_EAR: (-0.005, -0.044, 0.098),
    HEAD_CENTER: (0.012, 0.0, 0.107), HEAD_TOP: (0.0, 0.0, 0.174),
}  # fmt: skip

# Rendered limbs: (point a, point b, clothing part, radius as a fraction of stature).
SEGMENTS: tuple[tuple[int, int, str, float], ...] = (
    (L_HIP, L_KNEE, "trousers", 0.040), (L_KNEE, L_ANKLE, "trousers", 0.029),
    (L_ANKLE, L_TOE, "shoes", 0.022), (R_HIP, R_KNEE, "trousers", 0.040),
    (R_KNEE, R_ANKLE, "trousers", 0.029), (R_ANKLE, R_TOE, "shoes", 0.022),
    (L_SHOULDER, L_ELBOW, "shirt", 0.027), (L_ELBOW, L_WRIST, "sleeve", 0.021),
    (L_WRIST, L_HAND, "skin", 0.016), (R_SHOULDER, R_ELBOW, "shirt", 0.027),
    (R_ELBOW, R_WRIST, "sleeve", 0.021), (R_WRIST, R_HAND, "skin", 0.016),
)  # fmt: skip
TORSO_RADIUS = 0.05  # fraction of stature: rounding of the torso's edges (its depth)
HEAD_HALF_WIDTH = 0.047  # fraction of an adult stature
HEAD_HALF_HEIGHT = 0.066


@dataclass(frozen=True, kw_only=True)
class Body:
    """One person's dimensions (mm) and appearance (BGR colours, 0-255)."""

    stature: float
    child: bool
    ankle_height: float
    thigh: float
    shank: float
    trunk: float  # mid-hip to neck
    upper_arm: float
    forearm: float
    hand: float
    foot: float
    shoulder_width: float  # between the shoulder joint centres
    hip_width: float  # between the hip joint centres
    head_scale: float  # head size relative to an adult of the same stature
    girth: float  # limb thickness factor
    colors: dict[str, tuple[int, int, int]]

    @property
    def leg(self) -> float:
        return self.thigh + self.shank

    def head_offsets(self) -> np.ndarray:
        """(N_POINTS, 3) head point offsets from the neck (forward, left, up), mm; 0 elsewhere."""
        out = np.zeros((N_POINTS, 3))
        for i, off in HEAD_OFFSETS.items():
            out[i] = np.asarray(off) * self.stature * self.head_scale
        return out

    def segment_radii(self) -> np.ndarray:
        """(len(SEGMENTS),) limb radii, mm."""
        return np.array([r for *_, r in SEGMENTS]) * self.stature * self.girth

    def head_radii(self) -> tuple[float, float]:
        """(half width, half height) of the head, mm."""
        s = self.stature * self.head_scale
        return HEAD_HALF_WIDTH * s, HEAD_HALF_HEIGHT * s


def make_body(stature: float, *, child: bool, rng: np.random.Generator, hue: float) -> Body:
    """A body of the given stature (mm): anthropometric ratios + small individual variation."""
    H = stature
    c = float(np.clip((1550.0 - H) / 550.0, 0.0, 1.0)) if child else 0.0  # child-ness
    head_frac = 0.130 + 0.06 * c
    ankle = 0.039 * H
    hip = (0.530 - 0.05 * c) * H * rng.normal(1.0, 0.015)
    knee = ankle + (0.285 - 0.039) / (0.530 - 0.039) * (hip - ankle)
    shoulder = (1.0 - head_frac - 0.052 * (1 - 0.3 * c)) * H
    neck = shoulder + 0.008 * H
    arm = (1.0 - 0.04 * c) * H * rng.normal(1.0, 0.02)
    return Body(
        stature=H, child=child, ankle_height=ankle, thigh=hip - knee, shank=knee - ankle,
        trunk=neck - hip, upper_arm=0.186 * arm, forearm=0.146 * arm, hand=0.108 * arm,
        foot=0.152 * H, shoulder_width=0.19 * H * rng.normal(1.0, 0.04),
        hip_width=0.105 * H * rng.normal(1.0, 0.05),
        head_scale=(H - neck) / (HEAD_OFFSETS[HEAD_TOP][2] * H),
        girth=float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.25)) * (0.92 if child else 1.0),
        colors=_clothing(rng, hue),
    )  # fmt: skip


def sample_body(rng: np.random.Generator, cfg: PeopleConfig, hue: float) -> Body:
    """Draw a person: a child with probability ``cfg.child_fraction``, else an adult."""
    if rng.random() < cfg.child_fraction:
        stature = rng.uniform(cfg.child_stature_min, cfg.child_stature_max)
        return make_body(stature, child=True, rng=rng, hue=hue)
    lo = cfg.adult_stature_mean - 3 * cfg.adult_stature_std
    hi = cfg.adult_stature_mean + 3 * cfg.adult_stature_std
    stature = float(np.clip(rng.normal(cfg.adult_stature_mean, cfg.adult_stature_std), lo, hi))
    return make_body(stature, child=False, rng=rng, hue=hue)


def _bgr(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(b * 255), int(g * 255), int(r * 255)


_SKIN = [(0.07, 0.35, 0.95), (0.06, 0.45, 0.85), (0.07, 0.55, 0.70), (0.06, 0.6, 0.50),
         (0.05, 0.6, 0.35)]  # fmt: skip
_HAIR = [(0.08, 0.6, 0.12), (0.07, 0.7, 0.3), (0.11, 0.6, 0.75), (0.0, 0.0, 0.6), (0.05, 0.8, 0.4)]
_TROUSERS = [(0.60, 0.6, 0.45), (0.0, 0.0, 0.15), (0.10, 0.35, 0.65), (0.0, 0.0, 0.45),
             (0.62, 0.5, 0.25), (0.3, 0.3, 0.35)]  # fmt: skip


def _clothing(rng: np.random.Generator, hue: float) -> dict[str, tuple[int, int, int]]:
    # The shirt hue is given per person (spread over the colour wheel) so that people of one
    # sequence are told apart by colour, as the task asks of the renderer.
    shirt = _bgr(hue, rng.uniform(0.45, 0.9), rng.uniform(0.55, 0.95))
    skin = _bgr(*_SKIN[rng.integers(len(_SKIN))])
    long_sleeves = rng.random() < 0.5
    return {
        "shirt": shirt, "sleeve": shirt if long_sleeves else skin, "skin": skin,
        "hair": _bgr(*_HAIR[rng.integers(len(_HAIR))]),
        "trousers": _bgr(*_TROUSERS[rng.integers(len(_TROUSERS))]),
        "shoes": _bgr(0.0, 0.0, rng.choice([0.1, 0.2, 0.85])),
    }  # fmt: skip
