"""One sequence's cast: who is there, where they start, how they move, and who is in the GT.

People inside the capture space walk around (some walk in or out of it during the sequence);
``DetectorConfig.outside_people`` bystanders stand outside it in view of the cameras: they are
rendered and detected but never part of the 3D ground truth (DESIGN §3.3). With
``PeopleConfig.bvh_path`` set, people replay windows of that clip (placed so that they stay
inside the space and apart from each other); a person the clip cannot be placed for moves
procedurally instead.

Shape legend: T frames, P people, N = N_POINTS points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from selfpose3d.data.synthetic import body as B
from selfpose3d.data.synthetic import bvh
from selfpose3d.data.synthetic.config import SynthConfig
from selfpose3d.data.synthetic.kinematics import standing_points
from selfpose3d.data.synthetic.motion import EXIT_GAP, Actor, simulate, substeps
from selfpose3d.data.synthetic.placement import sample_inside, sample_outside, views_seeing
from selfpose3d.data.synthetic.rigs import Rig

BYSTANDER_GAP = (400.0, 2500.0)  # mm beyond the capture space where bystanders stand
BVH_TRIES = 200


@dataclass(kw_only=True)
class Scene:
    name: str
    split: str
    index: int
    bodies: list[B.Body]
    roles: list[str]
    motions: list[str]  # "procedural" or "bvh"
    points: np.ndarray  # (T, P, N, 3) mm, model frame
    in_gt: np.ndarray  # (T, P) bool: root inside the capture space and not a bystander

    def people_info(self) -> list[dict[str, Any]]:
        return [{"id": p, "stature_mm": round(b.stature, 1), "child": b.child, "role": r,
                 "motion": m, "gt_frames": int(self.in_gt[:, p].sum())}
                for p, (b, r, m) in enumerate(zip(self.bodies, self.roles, self.motions,
                                                  strict=True))]  # fmt: skip


def scene_rng(seed: int, index: int, stream: int, *extra: int) -> np.random.Generator:
    """Independent generator per (seed, sequence, stream, ...): results do not depend on the
    number of worker processes or on the order in which sequences are made."""
    return np.random.default_rng([seed, index, stream, *extra])


def build_scene(cfg: SynthConfig, rig: Rig, index: int, name: str, split: str) -> Scene:
    """Cast, motion and GT membership of sequence ``index`` (deterministic in cfg.seed)."""
    rng = scene_rng(cfg.seed, index, 0)
    pc = cfg.people
    T, sub = cfg.frames_per_sequence, substeps(cfg.fps)
    duration = T / cfg.fps
    n_in = int(rng.integers(pc.min_people, pc.max_people + 1))
    n_total = n_in + cfg.detector.outside_people
    hue0 = rng.random()
    bodies = [B.sample_body(rng, pc, (hue0 + 0.618034 * p) % 1.0) for p in range(n_total)]

    actors: list[Actor] = []
    starts: list[np.ndarray] = []
    spacing = pc.min_distance + 300.0
    for body in bodies[:n_in]:
        role = "walker"
        if rng.random() < pc.enter_exit_prob:
            role = str(rng.choice(["enter", "exit"]))
        if role == "enter":
            xy = sample_outside(rng, rig, EXIT_GAP, np.array(starts), spacing)
            event = rng.uniform(0.0, 0.4) * duration
        else:
            xy = sample_inside(rng, rig, pc.walk_margin, np.array(starts), spacing)
            event = rng.uniform(0.3, 0.8) * duration
        if xy is None:  # no room left: a smaller cast
            continue
        starts.append(xy)
        actors.append(Actor(body=body, role=role, start=xy, heading=rng.uniform(-np.pi, np.pi),
                            event_time=event))  # fmt: skip
    for body in bodies[n_in:]:
        for _ in range(20):
            xy = sample_outside(rng, rig, BYSTANDER_GAP, np.array(starts), spacing)
            if xy is None:
                break
            face = float(np.arctan2(*(rig.space_center[:2] - xy)[::-1]))
            if views_seeing(rig, standing_points(body, tuple(xy), face), 0.9) >= 1:
                starts.append(xy)
                actors.append(Actor(body=body, role="bystander", start=xy, heading=face))
                break

    if not any(a.role != "bystander" for a in actors):
        raise ValueError(f"{name}: nobody fits in the capture space of rig {rig.kind!r}")
    tracks = _script_bvh(cfg, rig, actors, T * sub, rng) if pc.bvh_path else {}
    points = simulate(actors, rig, pc, T, cfg.fps, rng)
    for i, track in tracks.items():
        points[:, i] = track[::sub]
    roles = [a.role for a in actors]
    in_gt = rig.in_space(points[:, :, B.MID_HIP]) & np.array([r != "bystander" for r in roles])
    for i in tracks:
        roles[i] = "walker"
    return Scene(
        name=name, split=split, index=index, bodies=[a.body for a in actors], roles=roles,
        motions=["bvh" if i in tracks else "procedural" for i in range(len(actors))],
        points=points, in_gt=in_gt,
    )  # fmt: skip


def _script_bvh(cfg: SynthConfig, rig: Rig, actors: list[Actor], steps: int,
                rng: np.random.Generator) -> dict[int, np.ndarray]:  # fmt: skip
    """Give people inside the space a placed BVH window; returns {actor: (S, N, 3) points}."""
    clip, pos = bvh.load(cfg.people.bvh_path)
    dt = 1.0 / (cfg.fps * substeps(cfg.fps))
    tracks: dict[int, np.ndarray] = {}
    for i, a in enumerate(actors):
        if a.role == "bystander":
            continue
        full = bvh.retarget(clip, pos, a.body)
        track = _resample(full, clip.frame_time, dt, steps, rng.uniform(0, clip.n_frames))
        others = [t for j, t in tracks.items() if j != i]
        starts = [b.start for j, b in enumerate(actors) if j != i and j not in tracks]
        placed = _place(track, rig, cfg, others, starts, rng)
        if placed is not None:
            tracks[i] = placed
            a.role, a.script = "scripted", placed[:, B.MID_HIP, :2]
            a.start = a.script[0]
    return tracks


def _resample(full: np.ndarray, frame_time: float, dt: float, steps: int, offset: float):
    """(F, N, 3) clip -> (steps, N, 3) at ``dt`` s, played forth and back (no jump at the end)."""
    F = full.shape[0]
    if F == 1:
        return np.repeat(full, steps, axis=0)
    u = (offset + np.arange(steps) * dt / frame_time) % (2 * (F - 1))
    u = np.where(u > F - 1, 2 * (F - 1) - u, u)
    lo = np.minimum(np.floor(u).astype(int), F - 2)
    w = (u - lo)[:, None, None]
    return full[lo] * (1 - w) + full[lo + 1] * w


def _place(track, rig: Rig, cfg: SynthConfig, others: list[np.ndarray], starts: list,
           rng: np.random.Generator) -> np.ndarray | None:  # fmt: skip
    """Rotate/shift a track so that its root stays inside the space and clear of others."""
    root0 = track[0, B.MID_HIP, :2]
    gap = cfg.people.min_distance + 100.0
    half = rig.space_size[:2] / 2 - cfg.people.walk_margin
    for _ in range(BVH_TRIES):
        a = rng.uniform(-np.pi, np.pi)
        R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        xy = (track[..., :2] - root0) @ R.T + rig.space_center[:2] + rng.uniform(-half, half)
        root = xy[:, B.MID_HIP]
        if not rig.in_space_xy(root, cfg.people.walk_margin / 2).all():
            continue
        if not rig.environment.walkable(root, 350.0).all():
            continue
        if any(np.linalg.norm(root - o[:, B.MID_HIP, :2], axis=1).min() < gap for o in others):
            continue
        if starts and np.linalg.norm(np.array(starts) - root[0], axis=1).min() < gap + 200:
            continue
        return np.concatenate([xy, track[..., 2:]], axis=-1)
    return None
