"""3D multi-person tracking: consistent person ids over the frames of one sequence.

Each track follows one person's root joint (mid-hip) in world mm with a constant-velocity
model. Per frame, every live track predicts where its root is now (last position + smoothed
velocity x frames elapsed); predictions and detected roots are associated by SciPy's
``linear_sum_assignment`` on their Euclidean distance, and a pair farther apart than
``max_distance`` is never associated (gating). A track that finds no detection stays alive for
up to ``max_gap`` missed frames, so a person occluded for a moment keeps their id; unmatched
detections start new tracks. Ids count up from ``first_id`` and are never reused.

Frames are identified by their index (e.g. Panoptic's frame numbers). Recordings are often
subsampled (every 12th frame of the Panoptic test sequences), so a *missed frame* is one step
of the sequence's frame spacing: by default the greatest common divisor of the differences
between the frames seen so far; velocities are per unit of frame index.

Evaluation: :func:`count_id_switches` (CLEAR-MOT) over the matches that
:func:`match_to_gt` finds between predicted and GT roots.

Shape legend: T live tracks, P detections of a frame, G GT people of a frame, M matches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

UNTRACKED = -1  # the id of a detection no track was given (score below min_score, NaN root)
MATCH_DISTANCE_MM = 500.0  # predictions farther than this from a GT root are no match (MOT)
_NO_PAIR = 1e12  # stands in for gated-out pairs: linear_sum_assignment refuses inf rows


@dataclass(kw_only=True)
class TrackerConfig:
    max_distance: float = 500.0  # mm: a detection farther from a track's prediction is not it
    max_gap: int = 5  # frames a track may miss and still continue (then it ends for good)
    min_score: float = 0.0  # detections scored below this are not tracked (id -1)
    # Weight of the newest velocity measurement in the smoothed velocity (exponential moving
    # average, 0..1]; 0 turns the motion model off (a track is predicted where it was last).
    velocity_weight: float = 0.5
    frame_step: int = 0  # frame-index units between consecutive frames; 0 = infer (gcd)

    def __post_init__(self) -> None:
        if not self.max_distance > 0:
            raise ValueError(f"tracking max_distance must be > 0 mm, got {self.max_distance}")
        if self.max_gap < 0:
            raise ValueError(f"tracking max_gap must be >= 0 frames, got {self.max_gap}")
        if not 0.0 <= self.velocity_weight <= 1.0:
            raise ValueError(f"tracking velocity_weight must be in [0, 1], "
                             f"got {self.velocity_weight}")  # fmt: skip
        if self.frame_step < 0:
            raise ValueError(f"tracking frame_step must be >= 0 (0 = infer), "
                             f"got {self.frame_step}")  # fmt: skip


class Tracker:
    """Streaming tracker of one sequence: call :meth:`update` once per frame, in frame order.

    State per live track (T): id, root position (mm), velocity (mm per frame-index unit),
    the frame it was last seen in, and how many frames it has been seen in.
    """

    def __init__(self, cfg: TrackerConfig | None = None, *, first_id: int = 0) -> None:
        self.cfg = cfg or TrackerConfig()
        self.next_id = first_id
        self.ids = np.zeros(0, dtype=np.int64)  # (T,)
        self.positions = np.zeros((0, 3))  # (T, 3) mm
        self.velocities = np.zeros((0, 3))  # (T, 3) mm / frame-index unit
        self.last_seen = np.zeros(0, dtype=np.int64)  # (T,) frame index
        self.hits = np.zeros(0, dtype=np.int64)  # (T,)
        self._frame: int | None = None
        self._step = self.cfg.frame_step

    @property
    def step(self) -> int:
        """Frame-index units between consecutive frames (1 until two frames are seen)."""
        return self._step or 1

    def update(self, roots: np.ndarray, scores: np.ndarray | None = None,
               frame: int | None = None) -> np.ndarray:  # fmt: skip
        """Track one frame's detections.

        roots: (P, 3) root joints, world mm; scores: (P,) (default: all 1); frame: its index,
        greater than the previous frame's (default: the previous one + one step). Returns (P,)
        int64 track ids, -1 for detections that are not tracked (score below ``min_score``
        or a non-finite root).
        """
        roots = np.asarray(roots, dtype=np.float64)
        if roots.size == 0:
            roots = roots.reshape(0, 3)
        if roots.ndim != 2 or roots.shape[1] != 3:
            raise ValueError(f"roots must be (P, 3) mm, got shape {roots.shape}")
        scores = np.ones(len(roots)) if scores is None else np.asarray(scores, np.float64)
        if scores.shape != (len(roots),):
            raise ValueError(f"{len(roots)} roots but scores of shape {scores.shape}")
        frame = self._next_frame(frame)

        self._end_lost_tracks(frame)
        elapsed = (frame - self.last_seen).astype(np.float64)  # (T,)
        predicted = self.positions + self.velocities * elapsed[:, None]

        ids = np.full(len(roots), UNTRACKED, dtype=np.int64)
        valid = np.flatnonzero(np.isfinite(roots).all(1) & (scores >= self.cfg.min_score))
        detections = roots[valid]
        cost = cdist(predicted, detections) if len(predicted) and len(detections) else None
        matched_t = matched_d = np.zeros(0, dtype=np.int64)
        if cost is not None:
            gated = cost <= self.cfg.max_distance
            rows, cols = linear_sum_assignment(np.where(gated, cost, _NO_PAIR))
            ok = gated[rows, cols]
            matched_t, matched_d = rows[ok], cols[ok]

        self._continue_tracks(matched_t, detections[matched_d], frame, elapsed[matched_t])
        ids[valid[matched_d]] = self.ids[matched_t]
        fresh = np.setdiff1d(np.arange(len(detections)), matched_d)
        ids[valid[fresh]] = self._start_tracks(detections[fresh], frame)
        return ids

    def _next_frame(self, frame: int | None) -> int:
        if frame is None:
            return 0 if self._frame is None else self._frame + self.step
        frame = int(frame)
        if self._frame is not None:
            if frame <= self._frame:
                raise ValueError(f"frame {frame} does not follow frame {self._frame}: "
                                 f"frames must be tracked in increasing order")  # fmt: skip
            if not self.cfg.frame_step:
                self._step = math.gcd(self._step, frame - self._frame)
        self._frame = frame
        return frame

    def _end_lost_tracks(self, frame: int) -> None:
        # Seen at frame f, a track has missed (frame - f) / step - 1 frames when this one
        # arrives; it may still be matched here if that is at most max_gap.
        alive = frame - self.last_seen <= (self.cfg.max_gap + 1) * self.step
        for name in ("ids", "positions", "velocities", "last_seen", "hits"):
            setattr(self, name, getattr(self, name)[alive])

    def _continue_tracks(self, t: np.ndarray, roots: np.ndarray, frame: int,
                         elapsed: np.ndarray) -> None:  # fmt: skip
        measured = (roots - self.positions[t]) / elapsed[:, None]  # (M, 3) mm / frame unit
        w = self.cfg.velocity_weight
        # The first measurement of a track has nothing to be averaged with.
        weight = np.where(self.hits[t] == 1, 1.0, w)[:, None] if w > 0 else 0.0
        self.velocities[t] = weight * measured + (1.0 - weight) * self.velocities[t]
        self.positions[t] = roots
        self.last_seen[t] = frame
        self.hits[t] += 1

    def _start_tracks(self, roots: np.ndarray, frame: int) -> np.ndarray:
        new = np.arange(self.next_id, self.next_id + len(roots), dtype=np.int64)
        self.next_id += len(roots)
        self.ids = np.concatenate([self.ids, new])
        self.positions = np.concatenate([self.positions, roots])
        self.velocities = np.concatenate([self.velocities, np.zeros_like(roots)])
        self.last_seen = np.concatenate([self.last_seen, np.full(len(roots), frame)])
        self.hits = np.concatenate([self.hits, np.ones(len(roots), dtype=np.int64)])
        return new


def track_poses(
    roots_per_frame: Sequence[np.ndarray],
    scores_per_frame: Sequence[np.ndarray] | None = None,
    cfg: TrackerConfig | None = None,
    frames: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Track the people of one sequence.

    roots_per_frame: per frame (P_t, 3) root joints, world mm; scores_per_frame: per frame
    (P_t,) (default: all 1); frames: the frame indices (default: 0, 1, 2, ...). Returns per
    frame (P_t,) int64 track ids (-1: not tracked, see :meth:`Tracker.update`).
    """
    if scores_per_frame is not None and len(scores_per_frame) != len(roots_per_frame):
        raise ValueError(f"{len(roots_per_frame)} frames of roots but {len(scores_per_frame)} "
                         f"of scores")  # fmt: skip
    if frames is not None and len(frames) != len(roots_per_frame):
        raise ValueError(f"{len(roots_per_frame)} frames of roots but {len(frames)} frame "
                         f"indices")  # fmt: skip
    tracker = Tracker(cfg)
    return [
        tracker.update(roots,
                       None if scores_per_frame is None else scores_per_frame[i],
                       i if frames is None else frames[i])
        for i, roots in enumerate(roots_per_frame)
    ]  # fmt: skip


def match_to_gt(
    pred_roots_per_frame: Sequence[np.ndarray],
    gt_roots_per_frame: Sequence[np.ndarray],
    max_distance: float = MATCH_DISTANCE_MM,
) -> list[np.ndarray]:
    """Per frame, the one-to-one matching of predictions to GT people by root distance
    (Hungarian, minimum total distance; pairs farther than ``max_distance`` mm never match).

    pred_roots_per_frame: per frame (P_t, 3) world mm; gt_roots_per_frame: per frame (G_t, 3)
    world mm (NaN rows: GT people whose root is not annotated, never matched). Returns per
    frame (M_t, 2) int64 pairs (prediction index, GT index).
    """
    if len(pred_roots_per_frame) != len(gt_roots_per_frame):
        raise ValueError(f"{len(pred_roots_per_frame)} frames of predictions but "
                         f"{len(gt_roots_per_frame)} of GT")  # fmt: skip
    out = []
    for pred, gt in zip(pred_roots_per_frame, gt_roots_per_frame, strict=True):
        pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 3)
        if not len(pred) or not len(gt):
            out.append(np.zeros((0, 2), dtype=np.int64))
            continue
        dist = np.nan_to_num(cdist(pred, gt), nan=np.inf)
        ok = dist <= max_distance
        rows, cols = linear_sum_assignment(np.where(ok, dist, _NO_PAIR))
        keep = ok[rows, cols]
        out.append(np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64))
    return out


def count_id_switches(
    pred_ids_per_frame: Sequence[np.ndarray],
    gt_ids_per_frame: Sequence[np.ndarray],
    matches_per_frame: Sequence[np.ndarray],
) -> int:
    """CLEAR-MOT identity switches: how often a GT person's matched track id changes.

    Per frame: (P_t,) predicted track ids, (G_t,) GT person ids and (M_t, 2) matches
    (prediction index, GT index), e.g. from :func:`match_to_gt`; frames in time order. A GT
    person counts a switch when it is matched to a track other than the one it was last
    matched to (frames where it is unmatched do not reset that memory). Untracked
    predictions (id -1) are ignored.
    """
    if not len(pred_ids_per_frame) == len(gt_ids_per_frame) == len(matches_per_frame):
        raise ValueError(f"frame counts differ: {len(pred_ids_per_frame)} of predicted ids, "
                         f"{len(gt_ids_per_frame)} of GT ids, {len(matches_per_frame)} of "
                         f"matches")  # fmt: skip
    last_track: dict[int, int] = {}
    switches = 0
    for pred_ids, gt_ids, matches in zip(pred_ids_per_frame, gt_ids_per_frame,
                                         matches_per_frame, strict=True):  # fmt: skip
        matches = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
        tracks = np.asarray(pred_ids, dtype=np.int64)[matches[:, 0]]
        people = np.asarray(gt_ids, dtype=np.int64)[matches[:, 1]]
        for person, track in zip(people.tolist(), tracks.tolist(), strict=True):
            if track == UNTRACKED:
                continue
            if person in last_track and last_track[person] != track:
                switches += 1
            last_track[person] = track
    return switches
