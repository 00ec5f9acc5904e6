"""The CMU Panoptic evaluation protocol of multi-person 3D pose estimation (AP, recall, MPJPE).

This is the protocol of VoxelPose and SelfPose3d (``Panoptic.evaluate`` with
``_eval_list_to_ap``, ``_eval_list_to_recall`` and ``_eval_list_to_mpjpe``):

1. In every frame, each predicted person is assigned to the GT person of that frame with the
   lowest MPJPE, the mean Euclidean distance over that GT person's visible joints.
2. All predictions of all frames are sorted by score, highest first (ties keep frame order,
   then prediction order: the sort is stable, like Python's ``list.sort``).
3. For a threshold t, walking that list, a prediction is a true positive when its MPJPE < t and
   its assigned GT person has not been claimed by an earlier true positive; otherwise it is a
   false positive. AP is the VOC area under the precision/recall curve, precision made
   monotone non-increasing from the right; recall is over the total number of GT persons.
4. Recall@500 is the fraction of GT persons claimed at t = 500 mm; MPJPE is the mean MPJPE of
   those claims (a GT person is measured by its highest-scored prediction within 500 mm).

Differences from the reference code, all for inputs it never sees or to avoid its epsilon:
- Predictions in a frame without GT persons are false positives (the reference loader drops
  such frames, so the reference never scores them).
- A GT person with no visible joint is ignored and not counted (the reference loader keeps
  only people whose root is visible, so it never has one).
- A prediction with a NaN coordinate on a joint it is compared on is infinitely far from
  every GT person, hence always a false positive.
- Recall and precision are exact ratios; the reference adds 1e-5 to their denominators, which
  moves AP by at most about 0.002 percentage points.

Units: positions in mm; AP and recall are returned in percent (0..100), as papers print them.

Shape legend: N predictions, G GT persons, K joints compared (15 for poses, 1 for roots).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from selfpose3d.skeleton import ROOT_INDEX

THRESHOLDS_MM: tuple[float, ...] = (25, 50, 75, 100, 125, 150)
RECALL_THRESHOLD_MM = 500.0


@dataclass(frozen=True)
class FramePrediction:
    """The predicted people of one frame.

    poses: (N, J, 3) joint positions, mm, world frame. NaN marks a joint the model could not
        place; such a person can never be a true positive.
    scores: (N,) confidence used to rank predictions (the root proposal score).
    """

    poses: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        poses = np.asarray(self.poses, dtype=np.float64)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if poses.size == 0 and poses.ndim != 3:
            poses = poses.reshape(0, 0, 3)
        if poses.ndim != 3 or poses.shape[-1] != 3:
            raise ValueError(f"poses must be (N, J, 3), got shape {poses.shape}")
        _check_scores(scores, len(poses))
        object.__setattr__(self, "poses", poses)
        object.__setattr__(self, "scores", scores)


@dataclass(frozen=True)
class FrameRootPrediction:
    """The root proposals of one frame (what root_net outputs).

    roots: (N, 3) root positions, mm, world frame.
    scores: (N,) proposal scores.
    """

    roots: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        roots = np.asarray(self.roots, dtype=np.float64)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if roots.size == 0:
            roots = roots.reshape(0, 3)
        if roots.ndim != 2 or roots.shape[-1] != 3:
            raise ValueError(f"roots must be (N, 3), got shape {roots.shape}")
        _check_scores(scores, len(roots))
        object.__setattr__(self, "roots", roots)
        object.__setattr__(self, "scores", scores)


@dataclass(frozen=True)
class FrameGT:
    """The ground-truth people of one frame.

    poses: (G, J, 3) joint positions, mm, world frame. Invisible joints may hold anything,
        NaN included; visible ones must be finite.
    visible: (G, J) bool, which joints are annotated.
    """

    poses: np.ndarray
    visible: np.ndarray

    def __post_init__(self) -> None:
        poses = np.asarray(self.poses, dtype=np.float64)
        visible = np.asarray(self.visible, dtype=bool)
        if poses.size == 0 and poses.ndim != 3:
            poses = poses.reshape(0, 0, 3)
            visible = visible.reshape(0, 0)
        if poses.ndim != 3 or poses.shape[-1] != 3:
            raise ValueError(f"GT poses must be (G, J, 3), got shape {poses.shape}")
        if visible.shape != poses.shape[:2]:
            raise ValueError(
                f"GT visibility must be (G, J) = {poses.shape[:2]}, got shape {visible.shape}"
            )
        if not np.isfinite(poses[visible]).all():
            raise ValueError("GT poses hold NaN or inf on joints marked visible")
        object.__setattr__(self, "poses", poses)
        object.__setattr__(self, "visible", visible)

    @classmethod
    def from_xyzv(cls, joints: np.ndarray, min_visibility: float = 0.1) -> FrameGT:
        """From the frame schema's (G, J, 4) array of x, y, z (mm) and visibility.

        A joint is visible when its visibility exceeds ``min_visibility`` (Panoptic: 0.1).
        """
        joints = np.asarray(joints, dtype=np.float64)
        if joints.size == 0:
            joints = joints.reshape(0, 0, 4)
        if joints.ndim != 3 or joints.shape[-1] != 4:
            raise ValueError(f"GT joints must be (G, J, 4), got shape {joints.shape}")
        return cls(poses=joints[..., :3], visible=joints[..., 3] > min_visibility)


def evaluate_panoptic(
    predictions: Sequence[FramePrediction],
    ground_truth: Sequence[FrameGT],
    thresholds: Sequence[float] = THRESHOLDS_MM,
) -> dict[str, float]:
    """AP at each MPJPE threshold, Recall@500 and MPJPE of whole poses over a set of frames.

    ``predictions[i]`` and ``ground_truth[i]`` describe the same frame; joints must be in the
    same order in both (Panoptic-15 for this project).

    Returns ``ap<t>`` and ``recall<t>`` for each threshold t (percent), ``recall500``
    (percent), ``mpjpe`` (mm; inf when no prediction is within 500 mm of a GT person),
    ``num_gt`` (GT persons with at least one visible joint) and ``num_pred``. AP and recall are
    NaN when there is no GT person at all.
    """
    _check_lengths(predictions, ground_truth)
    frames = [
        (p.poses, p.scores, g.poses, g.visible)
        for p, g in zip(predictions, ground_truth, strict=True)
    ]
    return _evaluate(frames, thresholds, prefix="")


def evaluate_roots(
    predictions: Sequence[FrameRootPrediction],
    ground_truth: Sequence[FrameGT],
    thresholds: Sequence[float] = THRESHOLDS_MM,
    root_index: int = ROOT_INDEX,
) -> dict[str, float]:
    """The same metrics on the root joint alone, to measure root_net's proposals.

    The error of a proposal is its Euclidean distance (mm) to the GT root
    ``poses[:, root_index]``; GT persons whose root is not visible are ignored. Keys are those
    of :func:`evaluate_panoptic` prefixed with ``root_`` (``root_ap25``, ``root_recall500``,
    ``root_mpjpe``, ...).
    """
    _check_lengths(predictions, ground_truth)
    root = slice(root_index, root_index + 1)  # keep the joint axis: roots are 1-joint poses
    frames = [
        (p.roots[:, None, :], p.scores, g.poses[:, root], g.visible[:, root])
        for p, g in zip(predictions, ground_truth, strict=True)
    ]
    return _evaluate(frames, thresholds, prefix="root_")


def match_frame(
    pred_NK3: np.ndarray, gt_GK3: np.ndarray, visible_GK: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Assign every prediction of one frame to its closest GT person.

    Args:
        pred_NK3: (N, K, 3) predicted joints, mm (NaN allowed).
        gt_GK3: (G, K, 3) GT joints, mm; GT persons without a visible joint must be removed.
        visible_GK: (G, K) bool, joints the MPJPE is averaged over.

    Returns:
        mpjpe_N: (N,) MPJPE to the closest GT person, mm; inf when there is no GT person or the
            prediction has NaN on every candidate's visible joints.
        gt_N: (N,) index of that GT person (the first one on ties, like ``np.argmin``);
            -1 when G == 0.
    """
    n, g = len(pred_NK3), len(gt_GK3)
    if n == 0 or g == 0:
        return np.full(n, np.inf), np.full(n, -1, dtype=np.int64)
    dist_NGK = np.linalg.norm(pred_NK3[:, None] - gt_GK3[None], axis=-1)
    # NaN becomes inf before masking so a NaN on a visible joint makes the MPJPE infinite,
    # while NaN on invisible GT joints is discarded by the mask.
    dist_NGK = np.where(np.isnan(dist_NGK), np.inf, dist_NGK)
    dist_NGK = np.where(visible_GK[None], dist_NGK, 0.0)
    mpjpe_NG = dist_NGK.sum(-1) / visible_GK.sum(-1)[None]
    gt_N = np.argmin(mpjpe_NG, axis=1)
    return mpjpe_NG[np.arange(n), gt_N], gt_N


def greedy_true_positives(mpjpe: np.ndarray, gt_ids: np.ndarray, threshold: float) -> np.ndarray:
    """(M,) bool: which predictions, already sorted by score descending, are true positives.

    A prediction is a true positive when its MPJPE < threshold and no earlier true positive
    claimed the same GT person, i.e. it is the first prediction within the threshold for it.
    """
    candidates = np.flatnonzero(mpjpe < threshold)
    _, first = np.unique(gt_ids[candidates], return_index=True)
    tp = np.zeros(len(mpjpe), dtype=bool)
    tp[candidates[first]] = True
    return tp


def average_precision(tp: np.ndarray, num_gt: int) -> float:
    """VOC-style AP (fraction, 0..1) of score-sorted true/false positives against num_gt GT.

    Precision is made monotone non-increasing from the right, then summed over the recall steps:
    sum of Δrecall × precision at the point where recall increases.
    """
    if num_gt == 0:
        return float("nan")
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(~tp)
    recall = tp_cum / num_gt
    precision = tp_cum / np.maximum(tp_cum + fp_cum, 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _evaluate(
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    thresholds: Sequence[float],
    prefix: str,
) -> dict[str, float]:
    """frames: per frame (pred (N, K, 3), scores (N,), gt (G, K, 3), visible (G, K))."""
    mpjpes, gt_ids, scores = [], [], []
    num_gt = 0
    for pred, score, gt, visible in frames:
        keep = visible.any(axis=1)  # a GT person with nothing visible cannot be measured
        gt, visible = gt[keep], visible[keep]
        if len(pred) and len(gt) and pred.shape[1] != gt.shape[1]:
            raise ValueError(f"predictions have {pred.shape[1]} joints, GT has {gt.shape[1]}")
        mpjpe, gt_idx = match_frame(pred, gt, visible)
        mpjpes.append(mpjpe)
        # Global GT ids; predictions of a frame without GT get ids no TP can ever claim.
        gt_ids.append(np.where(gt_idx >= 0, gt_idx + num_gt, -1))
        scores.append(score)
        num_gt += len(gt)

    mpjpe = np.concatenate(mpjpes) if mpjpes else np.zeros(0)
    gt_id = np.concatenate(gt_ids) if gt_ids else np.zeros(0, dtype=np.int64)
    score = np.concatenate(scores) if scores else np.zeros(0)
    order = np.argsort(-score, kind="stable")
    mpjpe, gt_id = mpjpe[order], gt_id[order]

    out: dict[str, float] = {}
    for t in thresholds:
        tp = greedy_true_positives(mpjpe, gt_id, t)
        out[f"{prefix}ap{t:g}"] = 100.0 * average_precision(tp, num_gt)
        out[f"{prefix}recall{t:g}"] = _percent(tp.sum(), num_gt)
    tp500 = greedy_true_positives(mpjpe, gt_id, RECALL_THRESHOLD_MM)
    out[f"{prefix}recall500"] = _percent(tp500.sum(), num_gt)
    out[f"{prefix}mpjpe"] = float(mpjpe[tp500].mean()) if tp500.any() else float("inf")
    out[f"{prefix}num_gt"] = float(num_gt)
    out[f"{prefix}num_pred"] = float(len(mpjpe))
    return out


def _percent(count: int, total: int) -> float:
    return 100.0 * count / total if total else float("nan")


def _check_scores(scores: np.ndarray, n: int) -> None:
    if len(scores) != n:
        raise ValueError(f"got {n} predictions but {len(scores)} scores")
    if not np.isfinite(scores).all():
        raise ValueError("prediction scores must be finite: NaN/inf cannot be ranked")


def _check_lengths(predictions: Sequence[object], ground_truth: Sequence[object]) -> None:
    if len(predictions) != len(ground_truth):
        raise ValueError(
            f"{len(predictions)} frames of predictions but {len(ground_truth)} frames of GT"
        )
