"""PCP (percentage of correct parts) on the Shelf and Campus benchmarks.

This is the protocol of VoxelPose and SelfPose3d (``Shelf.evaluate`` / ``Campus.evaluate`` with
``panotic2shelf3D``): Panoptic-15 predictions are mapped to the benchmarks' 14-joint skeleton;
for every GT actor in a frame, the prediction with the lowest MPJPE over the 14 joints is taken
(a prediction may serve several actors); each of 10 body parts is correct when the mean of
the errors of its two endpoints is ≤ 0.5 × the part's GT length. The torso runs from the
hip centre (midpoint of the two hips, for prediction and GT alike) to the bottom of the head.

Differences from the reference code:
- A frame with GT actors but no prediction counts every part of those actors as wrong (the
  reference skips the frame, or fails on it).
- An actor without any GT in the evaluated frames has PCP NaN (not 0) and is left out of the
  average.
- Predictions with NaN coordinates are never chosen while a finite one exists.

Units: mm (``load_actors_gt`` converts the files' metres); PCP and recall are percent.

Shape legend: F frames, A actors, N predictions, 14 Shelf/Campus joints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

SHELF14_JOINTS: tuple[str, ...] = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle",
    "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
    "bottom_head", "top_head",
)  # fmt: skip
NUM_SHELF_JOINTS = len(SHELF14_JOINTS)

# Panoptic-15 index of each of the first 12 Shelf joints (the two head joints are derived).
_PANOPTIC_TO_SHELF = np.array([14, 13, 12, 6, 7, 8, 11, 10, 9, 3, 4, 5])
_P_NOSE, _P_L_SHOULDER, _P_R_SHOULDER = 1, 3, 9

# The 10 parts as (start, end) joints; index 14 is the hip centre appended to each pose.
_HIP_CENTRE = NUM_SHELF_JOINTS
PCP_PARTS: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (3, 4), (4, 5),  # lower right leg, upper right leg, upper/lower left leg
    (6, 7), (7, 8), (9, 10), (10, 11),  # lower/upper right arm, upper/lower left arm
    (12, 13),  # head
    (_HIP_CENTRE, 12),  # torso
)  # fmt: skip
PART_GROUPS: dict[str, tuple[int, ...]] = {
    "head": (8,),
    "torso": (9,),
    "upper_arms": (5, 6),
    "lower_arms": (4, 7),
    "upper_legs": (1, 2),
    "lower_legs": (0, 3),
}

# The frames the literature evaluates on (indices into actorsGT.mat).
SHELF_EVAL_FRAMES: tuple[int, ...] = tuple(range(300, 601))
CAMPUS_EVAL_FRAMES: tuple[int, ...] = tuple(range(350, 471)) + tuple(range(650, 751))


def load_actors_gt(path: str | Path) -> list[np.ndarray]:
    """Read a Shelf/Campus ``actorsGT.mat``.

    The file holds ``actor3D``, a (1, A) cell array; actor a is an (F, 1) cell array whose
    entries are (14, 3) joint positions in metres, or an empty (1, 0) array where the actor is
    absent.

    Returns:
        One (F, 14, 3) float64 array per actor, mm, NaN in frames where the actor is absent.
    """
    path = Path(path)
    try:
        data = scipy.io.loadmat(path)
    except (scipy.io.matlab.MatReadError, ValueError) as e:
        raise ValueError(f"{path}: cannot read as a MATLAB file ({e})") from e
    if "actor3D" not in data:
        raise ValueError(f"{path}: no 'actor3D' variable (found {sorted(data)})")
    cells = data["actor3D"]
    if cells.dtype != object or cells.ndim != 2 or cells.shape[0] != 1:
        raise ValueError(f"{path}: 'actor3D' must be a (1, A) cell array, got {cells.shape}")
    actors = []
    for a in range(cells.shape[1]):
        frames = cells[0, a].reshape(-1)
        poses = np.full((len(frames), NUM_SHELF_JOINTS, 3), np.nan)
        for f, joints in enumerate(frames):
            if joints.size == 0:
                continue
            if joints.shape != (NUM_SHELF_JOINTS, 3):
                raise ValueError(
                    f"{path}: actor {a} frame {f} has shape {joints.shape}, expected (14, 3)"
                )
            poses[f] = 1000.0 * joints
        actors.append(poses)
    return actors


def panoptic15_to_shelf14(poses: np.ndarray) -> np.ndarray:
    """(..., 15, 3) Panoptic-15 joints -> (..., 14, 3) Shelf/Campus joints, same units.

    Limbs map one to one. The head is derived as the reference code does: with S the shoulder
    midpoint and n the nose, bottom head = (S + n) / 2; top head blends
    S + (n − S) · (0.75, 0.75, 1.5) (stretched upwards, z up) with n + (n − S) / 2, 3 : 1.
    The Panoptic neck is not used.
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.shape[-2:] != (15, 3):
        raise ValueError(f"expected (..., 15, 3) Panoptic-15 poses, got shape {poses.shape}")
    nose = poses[..., _P_NOSE, :]
    mid_shoulder = (poses[..., _P_L_SHOULDER, :] + poses[..., _P_R_SHOULDER, :]) / 2
    bottom = (mid_shoulder + nose) / 2
    top_stretched = mid_shoulder + (nose - mid_shoulder) * np.array([0.75, 0.75, 1.5])
    top_extrapolated = bottom + (nose - bottom) * 2
    top = 0.75 * top_stretched + 0.25 * top_extrapolated
    return np.concatenate(
        [poses[..., _PANOPTIC_TO_SHELF, :], bottom[..., None, :], top[..., None, :]], axis=-2
    )


@dataclass(frozen=True)
class PCPResult:
    """PCP per actor and per part group, all in percent.

    actor_pcp: (A,) PCP over the 10 parts; NaN for an actor absent from every evaluated frame.
    average_pcp: mean of ``actor_pcp`` over the averaged actors that have GT.
    part_pcp: group name -> (A,) PCP of that part group (see ``PART_GROUPS``).
    recall500: GT actor instances whose closest prediction has MPJPE < 500 mm (14 joints).
    num_gt: (A,) frames in which each actor was evaluated.
    """

    actor_pcp: np.ndarray
    average_pcp: float
    part_pcp: dict[str, np.ndarray]
    recall500: float
    num_gt: np.ndarray

    def as_dict(self) -> dict[str, float]:
        """Flat metrics (``pcp_actor1`` …, ``pcp_average``, ``pcp_<group>`` averaged over actors
        with GT, ``pcp_recall500``), e.g. for tracking."""
        out = {f"pcp_actor{a + 1}": float(v) for a, v in enumerate(self.actor_pcp)}
        out["pcp_average"] = self.average_pcp
        present = self.num_gt > 0
        for name, values in self.part_pcp.items():
            out[f"pcp_{name}"] = float(values[present].mean()) if present.any() else float("nan")
        out["pcp_recall500"] = self.recall500
        return out


def evaluate_pcp(
    predictions: Sequence[np.ndarray],
    actors_gt: Sequence[np.ndarray],
    frames: Sequence[int] | None = None,
    average_actors: Sequence[int] = (0, 1, 2),
    alpha: float = 0.5,
    recall_threshold: float = 500.0,
) -> PCPResult:
    """PCP of multi-person predictions against Shelf/Campus GT.

    Args:
        predictions: per evaluated frame, (N, 15, 3) Panoptic-15 poses (mapped with
            :func:`panoptic15_to_shelf14`) or (N, 14, 3) poses already in Shelf order; mm.
            Only the people the model reports (N may be 0).
        actors_gt: per actor, (F, 14, 3) GT in mm with NaN where absent (``load_actors_gt``).
        frames: the GT frame index of each entry of ``predictions``; by default 0..len-1.
            The literature uses ``SHELF_EVAL_FRAMES`` / ``CAMPUS_EVAL_FRAMES``.
        average_actors: actors averaged into ``average_pcp`` (the literature: the first three).
        alpha: a part is correct when its mean endpoint error ≤ alpha × its GT length.
        recall_threshold: MPJPE (mm) under which a GT actor counts as found.
    """
    frames = list(range(len(predictions))) if frames is None else list(frames)
    if len(frames) != len(predictions):
        raise ValueError(f"{len(predictions)} frames of predictions but {len(frames)} frame ids")
    gt_FA14 = np.stack([np.asarray(a, dtype=np.float64) for a in actors_gt], axis=1)
    if gt_FA14.shape[2:] != (NUM_SHELF_JOINTS, 3):
        raise ValueError(f"actors_gt must be (F, 14, 3) arrays, got {gt_FA14.shape[2:]}")
    num_frames, num_actors = gt_FA14.shape[:2]
    bad = [f for f in frames if not 0 <= f < num_frames]
    if bad:
        raise ValueError(f"frame ids {bad[:5]} outside the GT's {num_frames} frames")

    part_correct = np.zeros((num_actors, len(PCP_PARTS)))
    num_gt = np.zeros(num_actors, dtype=np.int64)
    found = 0
    for pred, f in zip(predictions, frames, strict=True):
        present_A = np.isfinite(gt_FA14[f]).all(axis=(1, 2))
        if not present_A.any():
            continue
        actors = np.flatnonzero(present_A)
        correct_A10, found_A = _frame_pcp(
            _to_shelf(pred), gt_FA14[f, actors], alpha, recall_threshold
        )
        part_correct[actors] += correct_A10
        num_gt[actors] += 1
        found += int(found_A.sum())

    with np.errstate(invalid="ignore", divide="ignore"):
        actor_pcp = 100.0 * part_correct.sum(axis=1) / (len(PCP_PARTS) * num_gt)
        part_pcp = {
            name: 100.0 * part_correct[:, list(idx)].sum(axis=1) / (len(idx) * num_gt)
            for name, idx in PART_GROUPS.items()
        }
    averaged = [a for a in average_actors if a < num_actors and num_gt[a] > 0]
    average = float(np.mean(actor_pcp[averaged])) if averaged else float("nan")
    total = int(num_gt.sum())
    recall = 100.0 * found / total if total else float("nan")
    return PCPResult(actor_pcp=actor_pcp, average_pcp=average, part_pcp=part_pcp,
                     recall500=recall, num_gt=num_gt)  # fmt: skip


def _to_shelf(pred: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64)
    if pred.size == 0:
        return np.zeros((0, NUM_SHELF_JOINTS, 3))
    if pred.ndim == 3 and pred.shape[1:] == (15, 3):
        return panoptic15_to_shelf14(pred)
    if pred.ndim == 3 and pred.shape[1:] == (NUM_SHELF_JOINTS, 3):
        return pred
    raise ValueError(f"predictions must be (N, 15, 3) or (N, 14, 3), got shape {pred.shape}")


def _with_hip_centre(poses: np.ndarray) -> np.ndarray:
    """(..., 14, 3) -> (..., 15, 3) with the midpoint of the two hips appended."""
    hip = (poses[..., 2, :] + poses[..., 3, :]) / 2
    return np.concatenate([poses, hip[..., None, :]], axis=-2)


def _frame_pcp(
    pred_N14: np.ndarray, gt_A14: np.ndarray, alpha: float, recall_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per present actor: (A, 10) bool correct parts and (A,) bool found within the threshold."""
    num_actors = len(gt_A14)
    if len(pred_N14) == 0:
        return np.zeros((num_actors, len(PCP_PARTS)), bool), np.zeros(num_actors, bool)
    mpjpe_AN = np.linalg.norm(gt_A14[:, None] - pred_N14[None], axis=-1).mean(axis=-1)
    mpjpe_AN = np.where(np.isnan(mpjpe_AN), np.inf, mpjpe_AN)
    best_A = np.argmin(mpjpe_AN, axis=1)
    found_A = mpjpe_AN[np.arange(num_actors), best_A] < recall_threshold

    pred_A15 = _with_hip_centre(pred_N14[best_A])
    gt_A15 = _with_hip_centre(gt_A14)
    err_A15 = np.linalg.norm(pred_A15 - gt_A15, axis=-1)
    start, end = np.array(PCP_PARTS).T
    length_A10 = np.linalg.norm(gt_A15[:, start] - gt_A15[:, end], axis=-1)
    # NaN errors compare False: a prediction that cannot be placed gets no part right.
    correct_A10 = (err_A15[:, start] + err_A15[:, end]) / 2 <= alpha * length_A10
    return correct_A10, found_A
