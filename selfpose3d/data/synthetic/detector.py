"""A simulated off-the-shelf 2D pose detector: pseudo labels that err like a real one.

Per view and frame, every person whose projection shows enough of them is detected from the
true projection of their joints (with lens distortion) plus errors that depend on what the
camera sees:
- pixel noise growing with distance, larger for hips, wrists and ankles;
- joints hidden by another person's body (capsule test against their limbs, torso and head;
  arms and legs also behind their own torso; the nose when the head faces away) get lower
  confidence and larger errors; joints outside the image are clipped to it, with a very low
  confidence; rare gross outliers;
- whole-body and leg-only left/right swaps, and missed people, in episodes of a few frames
  (a Markov chain per person and view), plus misses of mostly hidden people;
- false positives: ghost skeletons and shifted duplicates; people standing outside the
  capture space are detected like anybody else (they are not in the 3D ground truth).
Confidences below ``drop_conf`` are reported as 0 (joint not detected).

Pixel quantities of ``DetectorConfig`` are at 1920 px image width, scaled to the image.
Shape legend: V views, P people, J = 15 joints, N = N_POINTS points, C capsules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from selfpose3d.data.synthetic import body as B
from selfpose3d.data.synthetic.config import DetectorConfig
from selfpose3d.data.synthetic.kinematics import standing_points
from selfpose3d.data.synthetic.render import occluders
from selfpose3d.data.synthetic.views import NEAR, Views
from selfpose3d.skeleton import NUM_JOINTS, flip_permutation

REFERENCE_WIDTH = 1920.0
# Relative noise per Panoptic-15 joint: hips and extremities are the least precise.
JOINT_NOISE = np.array([1.0, 0.8, 1.3, 1.0, 1.15, 1.35, 1.4, 1.2, 1.3, 1.0, 1.15, 1.35, 1.4,
                        1.2, 1.3])  # fmt: skip
# Joints that can hide behind their own torso (elbows, wrists, knees, ankles).
_LIMB_JOINTS = np.array([4, 5, 7, 8, 10, 11, 13, 14])
_LEG_PERM = np.arange(NUM_JOINTS)
_LEG_PERM[[6, 7, 8, 12, 13, 14]] = [12, 13, 14, 6, 7, 8]
_FLIP = flip_permutation()
_TORSO_CAPSULES = slice(len(B.SEGMENTS), len(B.SEGMENTS) + 3)


@dataclass
class Stats:
    """Counts for the manifest's pseudo-label statistics."""

    errors: list[np.ndarray] = field(default_factory=list)  # px, visible non-swapped joints
    conf_visible: list[np.ndarray] = field(default_factory=list)
    conf_occluded: list[np.ndarray] = field(default_factory=list)
    joints_in_image: int = 0
    joints_occluded: int = 0
    joints_truncated: int = 0
    present: int = 0  # (GT person, view) pairs showing >= min_visible_joints joints
    missed: int = 0
    detections: int = 0
    swapped: int = 0
    false_positives: int = 0
    outside: int = 0  # detections of people outside the capture space (not in the GT)

    def merge(self, other: Stats) -> None:
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)


def sample_events(rng: np.random.Generator, T: int, V: int, P: int, cfg: DetectorConfig):
    """(T, V, P) bool episodes of misses, whole-body swaps and leg swaps for a sequence."""
    def chain(rate: float) -> np.ndarray:
        stay = 1.0 - 1.0 / cfg.event_frames
        start = min(1.0, rate / (cfg.event_frames * max(1.0 - rate, 1e-6)))
        out = np.zeros((T, V, P), dtype=bool)
        state = rng.random((V, P)) < rate
        for t in range(T):
            u = rng.random((V, P))
            state = np.where(state, u < stay, u < start)
            out[t] = state
        return out

    return {"miss": chain(cfg.miss_prob), "swap": chain(cfg.swap_prob),
            "leg_swap": chain(cfg.leg_swap_prob)}  # fmt: skip


def occlusion(
    uv: np.ndarray, z: np.ndarray, bodies: list[B.Body], views: Views
) -> tuple[np.ndarray, np.ndarray]:
    """(V, P, J) bool masks: joints hidden by another person, and by their own body (limbs
    behind the torso, the nose of a head facing away). uv (V, P, N, 2) px, z (V, P, N) mm.
    """
    V, P = z.shape[:2]
    a, b, radius, _ = occluders(uv, z, bodies, views.focal)  # (V, P, C, ...)
    za_idx = [s[0] for s in B.SEGMENTS] + [B.L_SHOULDER, B.R_SHOULDER, B.NECK, B.HEAD_CENTER]
    zb_idx = [s[1] for s in B.SEGMENTS] + [B.L_HIP, B.R_HIP, B.MID_HIP, B.HEAD_TOP]
    za, zb = z[..., za_idx], z[..., zb_idx]
    q, zq = uv[:, :, None, :NUM_JOINTS, None, :], z[:, :, None, :NUM_JOINTS, None]
    A, Bv = a[:, None, :, None], b[:, None, :, None]  # (V, 1, P', 1, C, 2)
    ab = Bv - A
    t = np.clip(((q - A) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-9), 0.0, 1.0)
    dist = np.linalg.norm(q - (A + t[..., None] * ab), axis=-1)
    zc = za[:, None, :, None] + t * (zb - za)[:, None, :, None]
    front = (za > NEAR) & (zb > NEAR)
    hides = (dist < 0.9 * radius[:, None, :, None]) & (zc < zq - 100.0) & front[:, None, :, None]
    other = ~np.eye(P, dtype=bool)[None, :, :, None, None]  # (1, P, P', 1, 1)
    by_other = (hides & other).any(axis=(2, 4))
    own = np.zeros_like(by_other)
    diag = np.arange(P)
    torso = hides[:, diag, diag][..., _TORSO_CAPSULES]  # (V, P, J, 3)
    own[..., _LIMB_JOINTS] = torso[:, :, _LIMB_JOINTS].any(-1)
    own[..., B.NOSE] = z[..., B.NOSE] > z[..., B.HEAD_CENTER]  # the head faces away
    return by_other, own


def detect(
    uv: np.ndarray, z: np.ndarray, bodies: list[B.Body], outside: np.ndarray, views: Views,
    events: dict[str, np.ndarray], cfg: DetectorConfig, rng: np.random.Generator, stats: Stats,
) -> list[np.ndarray]:
    """Pseudo labels of one frame: per view a (D, J, 3) array (x px, y px, confidence).

    uv (V, P, N, 2), z (V, P, N) from ``Views.project``; ``outside`` (P,) marks people not in
    the GT of this frame (outside the capture space); ``events`` maps to (V, P) bool.
    """
    V, P = z.shape[:2]
    inside = views.inside(uv, z, view_axis=-3)  # (V, P, N)
    in_img = inside[..., :NUM_JOINTS]
    by_other, own = occlusion(uv, z, bodies, views)
    occluded = (by_other | own) & in_img
    joints = uv[:, :, :NUM_JOINTS]
    visible = in_img & ~occluded
    scale = views.size[:, 0] / REFERENCE_WIDTH  # (V,)
    y = uv[..., 1]
    height = np.where(inside, y, -np.inf).max(-1) - np.where(inside, y, np.inf).min(-1)
    height = np.where(inside.any(-1), height, 0.0)  # (V, P) px, bounding-box height
    shown = in_img.sum(-1) >= cfg.min_visible_joints
    # Being hidden by others (not by one's own arm) is what makes detectors lose people.
    occ_share = (by_other & in_img).sum(-1) / np.maximum(in_img.sum(-1), 1)
    detected = shown & (visible.sum(-1) >= cfg.min_visible_joints) \
        & (height >= cfg.min_height_px * scale[:, None]) & ~events["miss"] \
        & (rng.random((V, P)) >= cfg.occluded_miss_prob * occ_share)

    dist_m = np.maximum(z[..., :NUM_JOINTS], NEAR) / 1000.0
    std = cfg.noise_px + cfg.noise_per_m * np.maximum(dist_m - 3.0, 0.0)
    std = std * JOINT_NOISE + cfg.occluded_noise_px * occluded + cfg.truncated_noise_px * ~in_img
    std = std * scale[:, None, None]
    shift = rng.normal(0.0, 0.5, (V, P, 1, 2)) * std.mean(-1, keepdims=True)[..., None]
    pred = joints + rng.normal(size=joints.shape) * std[..., None] + shift
    outlier = rng.random((V, P, NUM_JOINTS)) < cfg.outlier_prob
    angle = rng.uniform(0, 2 * np.pi, outlier.shape)
    jump = cfg.outlier_px * scale[:, None, None] * rng.uniform(0.5, 1.0, outlier.shape)
    pred += (outlier * jump)[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    hi = (views.size - 1)[:, None, None, :]
    pred = np.clip(pred, 0.0, hi)  # a heatmap detector answers inside the image

    mean_conf = np.where(occluded, cfg.occluded_conf, cfg.visible_conf
                         - cfg.conf_per_m * np.maximum(dist_m - 3.0, 0.0))  # fmt: skip
    mean_conf = np.where(in_img, mean_conf, cfg.truncated_conf)
    conf = np.clip(rng.normal(mean_conf, np.where(visible, 0.07, 0.12)), 0.0, 1.0)
    conf = np.where(outlier, conf * 0.6, conf)
    conf = np.where(conf < cfg.drop_conf, 0.0, conf)
    people = np.concatenate([pred, conf[..., None]], -1)  # (V, P, J, 3)
    swap, leg = events["swap"], events["leg_swap"] & ~events["swap"]
    people = np.where(swap[..., None, None], people[:, :, _FLIP], people)
    people = np.where(leg[..., None, None], people[:, :, _LEG_PERM], people)

    stats.joints_in_image += int(in_img[shown].sum())
    stats.joints_occluded += int(occluded[shown].sum())
    stats.joints_truncated += int((~in_img)[shown].sum())
    _count_people(stats, shown, detected, swap | leg, ~outside[None, :])
    keep = (detected & ~swap & ~leg)[..., None] & visible & (conf > 0)
    stats.errors.append(np.linalg.norm(pred - joints, axis=-1)[keep].astype(np.float32))
    reported = detected[..., None] & (conf > 0) & in_img
    stats.conf_visible.append(conf[reported & ~occluded].astype(np.float32))
    stats.conf_occluded.append(conf[reported & occluded].astype(np.float32))

    out = []
    for v in range(V):
        dets = [people[v, p] for p in np.flatnonzero(detected[v])]
        for _ in range(rng.poisson(cfg.false_positive_rate)):
            fp = _false_positive(v, dets, bodies, views, cfg, rng)
            if fp is not None:
                dets.append(fp)
                stats.false_positives += 1
                stats.detections += 1
        order = rng.permutation(len(dets))  # a detector's output order means nothing
        arr = np.stack([dets[i] for i in order]) if dets else np.zeros((0, NUM_JOINTS, 3))
        out.append(arr.astype(np.float32))
    return out


def _count_people(stats: Stats, shown, detected, swapped, in_gt) -> None:
    """Person-level counts; all masks (V, P) bool."""
    stats.present += int((shown & in_gt).sum())
    stats.missed += int((shown & in_gt & ~detected).sum())
    stats.detections += int(detected.sum())
    stats.swapped += int((detected & swapped).sum())
    stats.outside += int((detected & ~in_gt).sum())


def _false_positive(
    v: int, dets: list[np.ndarray], bodies: list[B.Body], views: Views, cfg: DetectorConfig,
    rng: np.random.Generator,
) -> np.ndarray | None:
    """A spurious person in view v: a shifted duplicate of a detection, or a ghost skeleton."""
    w, h = views.size[v]
    conf = rng.uniform(cfg.drop_conf, cfg.fp_conf_max, NUM_JOINTS)
    conf[rng.random(NUM_JOINTS) < 0.3] = 0.0
    if dets and rng.random() < 0.5:
        src = dets[rng.integers(len(dets))]
        extent = np.ptp(src[:, 1]) + 1.0
        xy = src[:, :2] + rng.uniform(-0.3, 0.3, 2) * extent
    else:  # a person-shaped false alarm somewhere on the floor in front of the camera
        body = bodies[rng.integers(len(bodies))] if bodies else B.make_body(
            1700.0, child=False, rng=rng, hue=0.0)
        R, t = views.R[v], views.t[v]
        center = -R.T @ t
        forward = R[2] * np.array([1.0, 1.0, 0.0])
        forward /= max(np.linalg.norm(forward), 1e-9)
        spot = center[:2] + forward[:2] * rng.uniform(1500, 8000) \
            + np.array([-forward[1], forward[0]]) * rng.uniform(-3000, 3000)
        pts = standing_points(body, tuple(spot), rng.uniform(-np.pi, np.pi))
        uv, _ = views.project(pts)
        xy = uv[v, :NUM_JOINTS]
    if ((xy >= 0) & (xy <= [w - 1, h - 1])).all(-1).sum() < cfg.min_visible_joints:
        return None
    xy = np.clip(xy + rng.normal(0, 3.0 * w / REFERENCE_WIDTH, xy.shape), 0, [w - 1, h - 1])
    return np.concatenate([xy, conf[:, None]], -1)
