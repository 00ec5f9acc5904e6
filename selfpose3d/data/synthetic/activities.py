"""Joint-angle time courses of the procedural activities: walking gait and stationary actions.

Every function returns angles (T, N_PARAMS) in rad for times ``t`` (T,) in s; stationary
activities draw their constants (which arm, how high, how fast) from the given RNG once, so
one activity instance is a smooth function of time. The motion module blends instances.
"""

from __future__ import annotations

import numpy as np

from selfpose3d.data.synthetic import kinematics as K

STILL_KINDS = ("stand", "gesture", "bend", "crouch")
STANCE = 0.6  # share of a gait cycle a foot is on the floor
GESTURES = ("wave", "point", "talk", "arms_up", "arms_out", "hands_on_hips", "phone")


def gait(speed: np.ndarray, dt: float, leg_mm: float) -> np.ndarray:
    """Walking angles from the root speed (T,) in mm/s sampled every ``dt`` s -> (T, N_PARAMS).

    Cadence grows with speed (about 1.8 steps/s at 1.2 m/s for a 0.85 m leg, faster for short
    legs). Each leg spends ``STANCE`` of the cycle on the floor, during which the hip angle
    sweeps so that the ankle moves backwards at exactly the walking speed: the planted foot
    does not slide. At speed 0 the amplitude is 0: the person stands.
    """
    v = speed / 1000.0
    leg = leg_mm / 1000.0
    cadence = (1.05 + 0.65 * v) * np.sqrt(0.85 / leg)  # steps/s
    cycle = np.cumsum(cadence / 2 * dt)  # strides (one stride = two steps)
    sin_amp = np.clip(v * STANCE / (leg * cadence), 0.0, 0.6)
    amp = np.arcsin(sin_amp)
    s = np.clip(amp / 0.45, 0.0, 1.0)  # 1 at a normal walk
    out = np.zeros((len(v), K.N_PARAMS))
    for side, offset in ((-1, 0.0), (+1, 0.5)):
        psi = (cycle + offset) % 1.0
        stance = psi < STANCE
        tau = np.clip((psi - STANCE) / (1 - STANCE), 0.0, 1.0)
        i_flex, _, i_knee = K.LEG[side]
        out[:, i_flex] = np.where(stance, np.arcsin(sin_amp * np.clip(1 - 2 * psi / STANCE, -1, 1)),
                                  -amp * np.cos(np.pi * tau))  # fmt: skip
        # Knee: nearly straight in stance (a bent knee would drag the planted foot), strongly
        # flexed in early swing for foot clearance.
        out[:, i_knee] = s * np.where(stance, 0.05, 0.95 * np.sin(np.pi * tau**0.8) ** 2)
        a_flex, _, _, a_elbow = K.ARM[side]
        arm = -0.8 * amp * np.cos(2 * np.pi * psi)  # against the same-side leg
        out[:, a_flex] = arm
        out[:, a_elbow] = 0.15 * s + 0.4 * np.maximum(arm, 0.0)
    out[:, K.TWIST] = 0.08 * s * np.cos(2 * np.pi * cycle)
    out[:, K.LEAN] = 0.05 * np.clip(v / 1.2, 0, 1.5)
    out[:, K.HEAD_PITCH] = 0.08 * np.clip(v / 1.2, 0, 1)
    return out


def _osc(t: np.ndarray, rng: np.random.Generator, freq: float, amp: float) -> np.ndarray:
    """A sinusoid of ``freq`` Hz (+-20 %) and ``amp`` rad with a random phase."""
    return amp * np.sin(2 * np.pi * freq * rng.uniform(0.8, 1.2) * t + rng.uniform(0, 2 * np.pi))


def _arm(out: np.ndarray, side: int, flex, abd, roll, elbow) -> None:
    for idx, val in zip(K.ARM[side], (flex, abd, roll, elbow), strict=True):
        out[:, idx] = val


def still(kind: str, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Angles (T, N_PARAMS) of one instance of a stationary activity ``kind``."""
    out = np.tile(K.REST, (len(t), 1))
    out[:, K.SIDE] = _osc(t, rng, 0.2, 0.025)  # idle weight shift
    out[:, K.HEAD_PITCH] = 0.05 + _osc(t, rng, 0.15, 0.05)
    s = int(rng.choice([-1, 1]))
    if kind == "stand":
        relaxed = K.LEG[s]
        out[:, relaxed[2]] = rng.uniform(0.05, 0.25)  # a relaxed knee
        for side in (-1, 1):
            out[:, K.ARM[side][1]] = rng.uniform(0.08, 0.25)
            out[:, K.ARM[side][3]] = rng.uniform(0.1, 0.5)
    elif kind == "gesture":
        _gesture(out, t, rng, str(rng.choice(GESTURES)), s)
    elif kind == "bend":
        lean = rng.uniform(0.6, 1.3)
        out[:, K.LEAN] = lean + _osc(t, rng, 0.3, 0.05)
        out[:, K.HEAD_PITCH] = rng.uniform(0.1, 0.5)
        for side in (-1, 1):  # arms hang toward the floor, one may reach
            reach = rng.uniform(0.0, 0.4) + (_osc(t, rng, 0.4, 0.2) if side == s else 0.0)
            _arm(out, side, lean * 0.9 + reach, 0.1, 0.0, rng.uniform(0.1, 0.5))
            out[:, K.LEG[side][2]] = rng.uniform(0.1, 0.35)
    elif kind == "crouch":
        hip, knee = rng.uniform(1.4, 1.9), rng.uniform(1.8, 2.3)
        out[:, K.LEAN] = rng.uniform(0.5, 0.8)
        out[:, K.HEAD_PITCH] = rng.uniform(-0.2, 0.3)
        for side in (-1, 1):
            out[:, K.LEG[side][0]] = hip
            out[:, K.LEG[side][1]] = rng.uniform(0.1, 0.3)  # knees apart
            out[:, K.LEG[side][2]] = knee
            _arm(out, side, rng.uniform(0.5, 1.0), 0.15, 0.0, rng.uniform(0.4, 1.0))
    else:
        raise ValueError(f"unknown activity {kind!r}")
    return out


def _gesture(out: np.ndarray, t: np.ndarray, rng: np.random.Generator, kind: str, s: int) -> None:
    if kind == "wave":
        _arm(out, s, rng.uniform(2.3, 2.8), rng.uniform(0.2, 0.6), -0.4,
             0.7 + _osc(t, rng, 1.8, 0.5))  # fmt: skip
    elif kind == "point":
        _arm(out, s, rng.uniform(1.2, 1.7), rng.uniform(-0.2, 0.6), 0.0, rng.uniform(0.0, 0.2))
        out[:, K.HEAD_YAW] = s * rng.uniform(0.0, 0.4)
    elif kind == "talk":
        for side in (-1, 1):
            _arm(out, side, 0.35 + _osc(t, rng, 0.9, 0.15), 0.15, 0.0,
                 1.4 + _osc(t, rng, 1.1, 0.25))  # fmt: skip
    elif kind == "arms_up":
        for side in (-1, 1):
            _arm(out, side, 2.9 + _osc(t, rng, 0.5, 0.1), 0.35, 0.0, 0.2)
    elif kind == "arms_out":
        for side in (-1, 1):
            _arm(out, side, 0.1, 1.45 + _osc(t, rng, 0.4, 0.1), -0.3, 0.15)
    elif kind == "hands_on_hips":
        for side in (-1, 1):
            _arm(out, side, -0.25, 0.75, 1.2, 1.9)
    elif kind == "phone":
        _arm(out, s, 0.35, 0.45, 0.0, 2.35)
        out[:, K.HEAD_PITCH] = 0.15
    else:
        raise ValueError(f"unknown gesture {kind!r}")
