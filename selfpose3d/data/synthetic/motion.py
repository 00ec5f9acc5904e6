"""Procedural motion of one sequence: walking paths with avoidance, activities, 3D poses.

People are agents on the floor (x, y in mm, model frame) simulated at about 30 Hz: they walk
to targets inside the capture space, steer around each other, stop for stationary activities
(stand, gesture, bend, crouch) and turn to face others. A hard constraint keeps every two
roots at least ``PeopleConfig.min_distance`` apart at every step (no interpenetration).
Scripted people (BVH-driven) follow a given trajectory and are obstacles for the others.
Poses are blended joint angles (``activities``) turned into points by ``kinematics``.

Shape legend: T output frames, S simulation steps, P people, N = N_POINTS points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.signal import lfilter

from selfpose3d.data.synthetic import activities as A
from selfpose3d.data.synthetic import kinematics as K
from selfpose3d.data.synthetic.body import N_POINTS, Body
from selfpose3d.data.synthetic.config import PeopleConfig
from selfpose3d.data.synthetic.placement import sample_inside, sample_outside
from selfpose3d.data.synthetic.rigs import Rig

Role = Literal["walker", "enter", "exit", "bystander", "scripted"]
SIM_RATE = 30.0  # Hz; the simulation runs at least this fast whatever the output fps
EXIT_GAP = (600.0, 1300.0)  # mm beyond the capture space where leaving people go


@dataclass(kw_only=True)
class Actor:
    body: Body
    role: Role
    start: np.ndarray  # (2,) mm
    heading: float  # rad from +x
    script: np.ndarray | None = None  # (S, 2) root xy of a scripted person, mm
    # Simulation state.
    mode: str = "still"
    target: np.ndarray = field(default_factory=lambda: np.zeros(2))
    until: float = 0.0
    face: float = 0.0
    speed: float = 1000.0  # preferred walking speed, mm/s
    segments: list[tuple[str, int]] = field(default_factory=list)  # (kind, rng seed)
    event_time: float = 0.0  # enter: when to walk in; exit: when to walk out
    done: bool = False  # has entered / left
    check: tuple[float, np.ndarray] = field(default_factory=lambda: (0.0, np.zeros(2)))

    @property
    def movable(self) -> bool:
        return self.mode == "walk" and self.role not in ("bystander", "scripted")


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def _smooth(x: np.ndarray, dt: float, tau: float) -> np.ndarray:
    """First-order low-pass along axis 0 (time constant ``tau`` s) starting at x[0]."""
    alpha = 1.0 - np.exp(-dt / tau)
    y, _ = lfilter([alpha], [1.0, alpha - 1.0], x, axis=0, zi=(1 - alpha) * x[:1])
    return y


class _Sim:
    def __init__(self, actors: list[Actor], rig: Rig, cfg: PeopleConfig,
                 rng: np.random.Generator) -> None:  # fmt: skip
        self.actors, self.rig, self.cfg, self.rng = actors, rig, cfg, rng
        w = np.array([cfg.stand_weight, cfg.gesture_weight, cfg.bend_weight, cfg.crouch_weight])
        self.kind_p = w / w.sum()
        calm = w * np.array([1, 1, 0, 0])  # bystanders and people who left: no bending
        self.calm_p = calm / calm.sum() if calm.sum() > 0 else np.array([1.0, 0, 0, 0])

    def others(self, i: int, pos: np.ndarray) -> np.ndarray:
        pts = [pos[j] for j in range(len(self.actors)) if j != i]
        pts += [a.target for j, a in enumerate(self.actors) if j != i and a.mode == "walk"]
        return np.array(pts).reshape(-1, 2)

    def start_still(self, i: int, t: float, pos: np.ndarray, heading: np.ndarray) -> None:
        a, rng = self.actors[i], self.rng
        calm = a.role == "bystander" or (a.role == "exit" and a.done)
        kind = str(rng.choice(A.STILL_KINDS, p=self.calm_p if calm else self.kind_p))
        a.mode, a.until = "still", t + rng.uniform(self.cfg.still_min, self.cfg.still_max)
        a.segments.append((kind, int(rng.integers(2**31))))
        d = np.linalg.norm(pos - pos[i], axis=1)
        d[i] = np.inf
        j = int(np.argmin(d))
        if kind in ("stand", "gesture") and d[j] < 3500 and rng.random() < 0.6:
            a.face = float(np.arctan2(*(pos[j] - pos[i])[::-1]))  # turn to talk to someone
        elif a.role == "bystander":
            a.face = float(np.arctan2(*(self.rig.space_center[:2] - pos[i])[::-1]))
            a.face += rng.uniform(-0.6, 0.6)
        else:
            a.face = float(heading[i] + rng.uniform(-1.2, 1.2))

    def start_walk(self, i: int, t: float, pos: np.ndarray, heading: np.ndarray) -> None:
        a, cfg = self.actors[i], self.cfg
        others, gap = self.others(i, pos), cfg.min_distance + 250
        if a.role == "exit" and t >= a.event_time:
            target = sample_outside(self.rng, self.rig, EXIT_GAP, others, gap)
            a.done = target is not None
        else:
            target = sample_inside(self.rng, self.rig, cfg.walk_margin, others, gap, near=pos[i])
            a.done = a.done or (a.role == "enter" and target is not None)
        if target is None:  # crowded: stay a little longer
            self.start_still(i, t, pos, heading)
            return
        a.mode, a.target, a.check = "walk", target, (t, pos[i].copy())

    def decide(self, i: int, t: float, pos: np.ndarray, heading: np.ndarray) -> None:
        a = self.actors[i]
        if a.role == "scripted":
            return
        if a.mode == "walk":
            if np.linalg.norm(a.target - pos[i]) < 250:
                self.start_still(i, t, pos, heading)
            elif t - a.check[0] > 2.0:
                if np.linalg.norm(pos[i] - a.check[1]) < 250:  # blocked: give up this path
                    self.start_still(i, t, pos, heading)
                else:
                    a.check = (t, pos[i].copy())
            return
        if t < a.until:
            return
        leaving = a.role == "exit" and not a.done and t >= a.event_time
        entering = a.role == "enter" and not a.done
        settled = a.role == "bystander" or (a.role == "exit" and a.done)
        if leaving or entering or (not settled and self.rng.random() < self.cfg.walk_prob):
            self.start_walk(i, t, pos, heading)
        else:
            self.start_still(i, t, pos, heading)

    def velocities(self, pos: np.ndarray, vel: np.ndarray, dt: float) -> np.ndarray:
        P, min_d = len(self.actors), self.cfg.min_distance
        diff = pos[:, None] - pos[None]  # (P, P, 2): i - j
        d = np.linalg.norm(diff, axis=-1) + np.eye(P) * 1e9
        n = diff / d[..., None]
        w = np.exp((min_d - d) / 400.0) * (d < 2500)
        desired = np.zeros_like(vel)
        for i, a in enumerate(self.actors):
            if a.mode != "walk" or not a.movable:
                continue
            to_target = a.target - pos[i]
            dist = np.linalg.norm(to_target)
            e = to_target / max(dist, 1e-6)
            tangent = np.stack([-n[i, :, 1], n[i, :, 0]], -1)
            tangent *= np.sign(tangent @ e + 1e-9)[:, None]  # pass on the side already facing
            ahead = np.where(-(n[i] @ e) > -0.2, 1.0, 0.3)
            push = ((w[i] * ahead)[:, None] * (0.9 * n[i] + 0.7 * tangent)).sum(0)
            desired[i] = a.speed * (e * min(1.0, dist / 600.0) + push)
        new = vel + (desired - vel) * min(1.0, dt / 0.5)
        speed = np.linalg.norm(new, axis=1, keepdims=True)
        limit = np.array([[1.4 * a.speed] for a in self.actors])
        return new * np.minimum(1.0, limit / np.maximum(speed, 1e-9))

    def separate(self, pos: np.ndarray) -> np.ndarray:
        """Push people apart until every pair of roots is >= min_distance apart.

        Walkers give way; people standing still are nudged only by walkers; scripted people
        never move (their placement keeps them apart from each other).
        """
        P, min_d = len(self.actors), self.cfg.min_distance + 1.0
        m = np.array([0.0 if a.role == "scripted" else 1.0 if a.movable else 0.05
                      for a in self.actors])  # fmt: skip
        share = m[:, None] / np.maximum(m[:, None] + m[None], 1e-9)
        for _ in range(50):
            d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(P) * 1e9
            pairs = np.argwhere(np.triu(d < min_d))
            if len(pairs) == 0:
                break
            # Pair by pair (Gauss-Seidel): converges where simultaneous pushes oscillate.
            for i, j in pairs:
                diff = pos[i] - pos[j]
                dist = max(float(np.linalg.norm(diff)), 1e-6)
                overlap = min_d - dist
                if overlap > 0:
                    pos[i] += overlap * share[i, j] * diff / dist
                    pos[j] -= overlap * share[j, i] * diff / dist
        return pos


def simulate(
    actors: list[Actor], rig: Rig, cfg: PeopleConfig, n_frames: int, fps: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Run the agents; returns their points (T, P, N, 3) in mm (zeros for scripted people,
    whose ``script`` must hold S = n_frames * substeps(fps) root positions)."""
    sub = substeps(fps)
    S, dt, P = n_frames * sub, 1.0 / (fps * sub), len(actors)
    sim = _Sim(actors, rig, cfg, rng)
    pos = np.array([a.start for a in actors], dtype=np.float64).reshape(P, 2)
    heading = np.array([a.heading for a in actors], dtype=np.float64)
    vel = np.zeros((P, 2))
    rec_pos, rec_head = np.zeros((S, P, 2)), np.zeros((S, P))
    rec_seg, rec_look = np.full((S, P), -1), np.zeros((S, P))
    for a in actors:
        a.speed = 1000 * max(0.5, rng.normal(cfg.walk_speed_mean, cfg.walk_speed_std))
        a.speed *= min(1.0, np.sqrt(a.body.leg / 850.0))  # children walk slower
        a.face = a.heading
    for i, a in enumerate(actors):
        if a.role != "scripted":
            sim.start_still(i, 0.0, pos, heading)
            a.until = a.event_time if a.role == "enter" else rng.uniform(0, cfg.still_max)
    scripted = np.array([a.role == "scripted" for a in actors])
    for k in range(S):
        t = k * dt
        for i in range(P):
            sim.decide(i, t, pos, heading)
        vel = sim.velocities(pos, vel, dt)
        moved = pos + vel * dt
        ok = rig.environment.walkable(moved, 300.0)
        pos = np.where(ok[:, None], moved, pos)
        vel[~ok] = 0.0
        for i in np.flatnonzero(scripted):
            pos[i] = actors[i].script[k]
        pos = sim.separate(pos)
        for i, a in enumerate(actors):
            walking = a.mode == "walk" and np.linalg.norm(vel[i]) > 300
            goal = np.arctan2(vel[i, 1], vel[i, 0]) if walking else a.face
            rate = (2.5 if walking else 1.2) * dt
            heading[i] += np.clip(_wrap(goal - heading[i]) * min(1.0, dt / 0.25), -rate, rate)
            rec_seg[k, i] = len(a.segments) - 1 if a.mode == "still" else -1
        rec_look[k] = _look_yaw(pos, heading, rec_seg[k] >= 0)
        rec_pos[k], rec_head[k] = pos, heading

    points = np.zeros((n_frames, P, N_POINTS, 3))
    for i, a in enumerate(actors):
        if a.role == "scripted":
            continue
        params = _pose_params(a, rec_pos[:, i], rec_seg[:, i], rec_look[:, i], dt)
        points[:, i] = K.forward_kinematics(a.body, params[::sub], rec_pos[::sub, i],
                                            rec_head[::sub, i])  # fmt: skip
    return points


def substeps(fps: float) -> int:
    """Simulation steps per output frame."""
    return max(1, int(np.ceil(SIM_RATE / fps)))


def _look_yaw(pos: np.ndarray, heading: np.ndarray, still: np.ndarray) -> np.ndarray:
    """(P,) head yaw (rad, relative to the body) of people looking at their nearest neighbour."""
    diff = pos[None] - pos[:, None]  # j - i
    d = np.linalg.norm(diff, axis=-1) + np.eye(len(pos)) * 1e9
    j = np.argmin(d, axis=1)
    rel = _wrap(np.arctan2(diff[np.arange(len(pos)), j, 1], diff[np.arange(len(pos)), j, 0])
                - heading)  # fmt: skip
    looking = still & (d[np.arange(len(pos)), j] < 4000) & (np.abs(rel) < 1.8)
    return np.where(looking, np.clip(rel, -1.0, 1.0), 0.0)


def _pose_params(a: Actor, pos: np.ndarray, seg: np.ndarray, look: np.ndarray, dt: float):
    """(S, N_PARAMS) joint angles: gait from the speed, blended with stationary activities."""
    S = len(pos)
    t = np.arange(S) * dt
    speed = np.zeros(S)
    speed[1:] = np.linalg.norm(np.diff(pos, axis=0), axis=1) / dt
    speed = _smooth(speed, dt, 0.15)
    params = K.REST + A.gait(speed, dt, a.body.leg)
    total = np.zeros((S, 1))
    blended = np.zeros_like(params)
    for k in np.unique(seg[seg >= 0]):
        kind, seed = a.segments[k]
        w = _smooth((seg == k).astype(np.float64)[:, None], dt, 0.4)
        blended += w * A.still(kind, t, np.random.default_rng(seed))
        total += w
    params = params * (1.0 - total) + blended
    params[:, K.HEAD_YAW] += _smooth(look, dt, 0.5)
    return params
