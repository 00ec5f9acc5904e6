"""Classical multi-view triangulation of the pseudo 2D labels: the learning-free baseline.

Per frame, with no learning and no ground truth:

1. Rays. Every pseudo joint with confidence >= ``min_joint_conf`` is undistorted and
   back-projected to a world ray.
2. Affinity. Two detections in different views are compared joint by joint by the distance
   between their rays, the 3D form of the symmetric epipolar distance. It is in mm at the
   person, so one threshold fits every image resolution. A pair's cost is the
   confidence-weighted mean of that distance over their shared joints, each clipped at
   2 x ``association_mm`` so that one wild joint cannot veto a match; rays that meet behind a
   camera count as clipped. Left/right swaps: the cost is the minimum over four labelings of
   the second detection (as is, arms swapped, legs swapped, both), so a swapped detection is
   still associated.
3. Association. Greedy complete linkage: pairs in order of cost merge their groups when the
   groups share no view and every cross pair costs < ``association_mm``. Groups seen in fewer
   than ``min_views`` views are dropped.
4. Labeling. The group is triangulated as labelled (step 5), which the majority of views
   decides; a detection is relabelled (arms and/or legs swapped) when that labeling fits the
   triangulated joints at least twice as well, and the group is triangulated again.
5. Triangulation. Per joint, exhaustive pair-RANSAC over the group's views, the error of a
   view being the distance (mm) from the point to its ray; views farther than ``inlier_mm``
   are outliers; confidence-weighted DLT on the inliers. Every joint of every person goes
   through one batched call. A joint without two agreeing confident views is retried with
   every view that has it at any confidence; if still missing it is NaN, or, with
   ``fill_missing``, copied from its nearest placed skeleton neighbour (the Panoptic protocol
   scores a person with a NaN joint as a false positive).
6. Filtering. People whose root lies outside the capture space, whose body scale (median
   bone length over an adult template's) is implausible, or whose root is within ``nms_mm``
   of a higher-scored person's are dropped.

Score = mean joint confidence of the group's detections x share of the rig's views in it.

Units: world mm (z up); pixels of each view's stored image. Shape legend: V views, P
detections per view (padded), D = V * P detections, J = 15 joints, G groups (people),
Q view pairs, L = 4 labelings.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from selfpose3d.data.panoptic import MultiViewFrame
from selfpose3d.data.schema import check_schema_version, list_shards, row_to_frame
from selfpose3d.evaluation import FrameGT, FramePrediction, evaluate_panoptic
from selfpose3d.geometry.camera import stack_cameras
from selfpose3d.geometry.triangulation import triangulate_dlt, undistort_points
from selfpose3d.models.config import ModelConfig
from selfpose3d.skeleton import FLIP_PAIRS15, LIMBS15, NUM_JOINTS, PANOPTIC15_JOINTS, ROOT_INDEX

_DEFAULT_SPACE = ModelConfig()


@dataclass(kw_only=True)
class TriangulationConfig:
    """Thresholds of the triangulation baseline. Distances are mm at the person."""

    min_joint_conf: float = 0.2  # pseudo joints below this confidence (0..1) are not trusted
    min_common_joints: int = 3  # confident joints two detections must share to be compared
    association_mm: float = 150.0  # max mean ray-to-ray distance of one person's detections
    inlier_mm: float = 100.0  # a view whose ray passes farther from a joint is an outlier
    min_views: int = 2  # views a person must be associated in
    handle_swaps: bool = True  # consider arm / leg left-right swaps of the pseudo labels
    fill_missing: bool = True  # place untriangulable joints at a skeleton neighbour, not NaN
    space_center: list[float] = field(default_factory=lambda: list(_DEFAULT_SPACE.space_center))
    space_size: list[float] = field(default_factory=lambda: list(_DEFAULT_SPACE.space_size))
    body_scale_range: list[float] = field(default_factory=lambda: [0.4, 2.0])  # x adult template
    nms_mm: float = 300.0  # a person whose root is this close to a better one's is a duplicate

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_joint_conf <= 1.0:
            raise ValueError(f"min_joint_conf must be in [0, 1], got {self.min_joint_conf}")
        if self.min_common_joints < 2:
            raise ValueError(f"min_common_joints must be >= 2, got {self.min_common_joints}")
        if self.min_views < 2:
            raise ValueError(f"min_views must be >= 2 (triangulation), got {self.min_views}")
        for name in ("association_mm", "inlier_mm"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 mm, got {getattr(self, name)}")
        if self.nms_mm < 0:
            raise ValueError(f"nms_mm must be >= 0 mm, got {self.nms_mm}")
        if len(self.space_center) != 3 or len(self.space_size) != 3:
            raise ValueError("space_center and space_size need 3 values (mm)")
        if any(s <= 0 for s in self.space_size):
            raise ValueError(f"space_size must be positive (mm), got {self.space_size}")
        lo, hi = self.body_scale_range if len(self.body_scale_range) == 2 else (1.0, 0.0)
        if not 0 <= lo < hi:
            raise ValueError(f"body_scale_range must be [low, high], 0 <= low < high, "
                             f"got {self.body_scale_range}")  # fmt: skip

    @classmethod
    def from_model_config(cls, model: ModelConfig, **overrides: object) -> TriangulationConfig:
        """The defaults with the capture space of ``model`` (its root-net space)."""
        space = {"space_center": list(model.space_center), "space_size": list(model.space_size)}
        return cls(**(space | overrides))  # type: ignore[arg-type]


# Labelings (L = 4): bit 1 swaps the arms' left/right joints, bit 2 the legs'.
_LEG_NAMES = ("hip", "knee", "ankle")
_ARM_PAIRS = [p for p in FLIP_PAIRS15 if not PANOPTIC15_JOINTS[p[0]].endswith(_LEG_NAMES)]
_LEG_PAIRS = [p for p in FLIP_PAIRS15 if PANOPTIC15_JOINTS[p[0]].endswith(_LEG_NAMES)]


def _labelings() -> np.ndarray:
    """(L, J) joint permutations; all are involutions and they commute (labeling a ^ b)."""
    perms = np.tile(np.arange(NUM_JOINTS), (4, 1))
    for bit, pairs in ((1, _ARM_PAIRS), (2, _LEG_PAIRS)):
        rows, (a, b) = (np.arange(4) & bit) > 0, np.array(pairs).T
        perms[np.ix_(rows, a)], perms[np.ix_(rows, b)] = b, a
    return perms


LABELINGS = _labelings()

# An adult's bone lengths (mm) in LIMBS15 order, for the body-scale plausibility check.
_TEMPLATE_BONES_MM = np.array(
    [170, 520, 170, 300, 250, 170, 300, 250, 90, 90, 430, 420, 430, 420], dtype=np.float64
)
_LIMBS = np.array(LIMBS15)
_RELABEL_GAIN = 0.5  # a detection is relabelled when another labeling halves its misfit
# Every joint's neighbour towards the trunk (neck <-> mid-hip), for fill_missing.
_PARENT = np.zeros(NUM_JOINTS, dtype=np.int64)
_PARENT[_LIMBS[:, 1]] = _LIMBS[:, 0]
_PARENT[0], _PARENT[ROOT_INDEX] = ROOT_INDEX, 0


def _rays(xy_n: np.ndarray, R: np.ndarray) -> np.ndarray:
    """(D, J, 2) undistorted normalised points, R (D, 3, 3) of their views -> (D, J, 3) unit
    world ray directions."""
    d = np.einsum("dji,dkj->dki", R, np.concatenate([xy_n, np.ones_like(xy_n[..., :1])], -1))
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def _point_ray_distance(X: np.ndarray, xy_n: np.ndarray, R: np.ndarray, t: np.ndarray
                        ) -> np.ndarray:  # fmt: skip
    """(..., V) mm from points X (..., 1, 3) world to the rays of xy_n (..., V, 2); inf where
    the point is behind the camera or not finite."""
    X_cam = np.einsum("vij,...j->...vi", R, X[..., 0, :]) + t  # (..., V, 3)
    d = np.concatenate([xy_n, np.ones_like(xy_n[..., :1])], -1)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    along = (X_cam * d).sum(-1)
    dist = np.linalg.norm(X_cam - along[..., None] * d, axis=-1)
    return np.where((along > 0) & np.isfinite(dist), dist, np.inf)


def _pair_costs(rays: np.ndarray, centres: np.ndarray, conf: np.ndarray, view: np.ndarray,
                cfg: TriangulationConfig) -> np.ndarray:  # fmt: skip
    """Association cost of every detection pair, the best over the second one's labelings.

    rays (D, J, 3) unit world directions; centres (D, 3) camera centres, mm; conf (D, J),
    0 where a joint is not trusted; view (D,). Returns (D, D) mm; inf: not comparable.
    """
    perms = LABELINGS if cfg.handle_swaps else LABELINGS[:1]
    rays_b, conf_b = rays[:, perms], conf[:, perms]  # (D, L, J, 3), (D, L, J)
    w0 = centres[:, None] - centres[None]  # (D, D, 3): C_a - C_b
    b = np.einsum("ajk,bljk->ablj", rays, rays_b)
    d = np.einsum("ajk,abk->abj", rays, w0)[:, :, None]
    e = np.einsum("bljk,abk->ablj", rays_b, w0)
    denom = 1.0 - b * b
    with np.errstate(divide="ignore", invalid="ignore"):
        s, u = (b * e - d) / denom, (e - b * d) / denom  # ray parameters of the closest points
        # |w0 + s ray_a - u ray_b|^2 expanded, so that no (D, D, L, J, 3) array is needed.
        gap2 = (w0 * w0).sum(-1)[..., None, None] + s * s + u * u + 2 * s * d - 2 * u * e \
            - 2 * s * u * b  # fmt: skip
    cap = 2.0 * cfg.association_mm
    dist = np.where((denom > 1e-12) & (s > 0) & (u > 0), np.sqrt(np.maximum(gap2, 0.0)), cap)
    w = np.minimum(conf[:, None, None], conf_b[None])  # (D, D, L, J)
    w_sum = w.sum(-1)
    with np.errstate(invalid="ignore"):
        cost = (w * np.minimum(np.nan_to_num(dist, nan=cap), cap)).sum(-1) / w_sum
    comparable = ((w > 0).sum(-1) >= cfg.min_common_joints) & (w_sum > 0)
    comparable &= (view[:, None] != view[None])[..., None]
    return np.where(comparable, cost, np.inf).min(-1)


def _associate(cost: np.ndarray, view: np.ndarray, threshold: float) -> np.ndarray:
    """(D,) group id per detection: greedy complete-linkage clustering, <= 1 detection per view
    per group, every cross pair of merged groups below ``threshold``."""
    group = np.arange(len(cost))
    a_idx, b_idx = np.nonzero(np.triu(cost < threshold, 1))
    for a, b in zip(*(x[np.argsort(cost[a_idx, b_idx], kind="stable")] for x in (a_idx, b_idx)),
                    strict=True):  # fmt: skip
        in_a, in_b = group == group[a], group == group[b]
        if group[a] == group[b] or np.intersect1d(view[in_a], view[in_b]).size:
            continue
        if cost[np.ix_(in_a, in_b)].max() < threshold:
            group[in_b] = group[a]
    return group


def _relabel(poses: np.ndarray, xy_n: np.ndarray, w: np.ndarray, R: np.ndarray, t: np.ndarray,
             cap_mm: float) -> np.ndarray:  # fmt: skip
    """(G, V) labeling of every group member that fits the group's triangulated joints.

    poses (G, J, 3) world mm; xy_n (G, J, V, 2) the members' normalised points as labelled;
    w (G, J, V) their weights. A member's fit is the weighted mean distance of its rays to the
    joints (each clipped at ``cap_mm``); a labeling other than its own wins only when it fits
    at least twice as well, so that noise on a side view cannot swap a correct detection.
    """
    xy_l = xy_n[:, LABELINGS]  # (G, L, J, V, 2): joint j of labeling l reads detection joint l(j)
    w_l = w[:, LABELINGS]
    err = _point_ray_distance(poses[:, None, :, None], xy_l, R, t)  # (G, L, J, V)
    with np.errstate(invalid="ignore"):
        fit = (w_l * np.minimum(err, cap_mm)).sum(2) / w_l.sum(2)  # (G, L, V)
    fit = np.nan_to_num(fit, nan=np.inf)
    best = np.argmin(fit, 1)
    better = np.take_along_axis(fit, best[:, None], 1)[:, 0] < _RELABEL_GAIN * fit[:, 0]
    return np.where(better, best, 0)


def _robust_dlt(xy_n: np.ndarray, w: np.ndarray, R: np.ndarray, t: np.ndarray,
                inlier_mm: float) -> np.ndarray:  # fmt: skip
    """Pair-RANSAC + weighted DLT with point-to-ray errors in mm.

    xy_n (..., V, 2) undistorted normalised points; w (..., V) >= 0 weights (0: unusable);
    R (V, 3, 3), t (V, 3) mm. Returns (..., 3) world mm; NaN without 2 agreeing views.
    """
    n_views = xy_n.shape[-2]
    Rt = np.concatenate([R, t[:, :, None]], -1)  # (V, 3, 4)
    usable = w > 0
    if n_views < 2:
        return np.full((*w.shape[:-1], 3), np.nan)
    pairs = np.array(list(combinations(range(n_views), 2)))
    select = np.zeros((len(pairs), n_views))
    select[np.arange(len(pairs))[:, None], pairs] = 1.0
    X_q = triangulate_dlt(xy_n[..., None, :, :], Rt, w[..., None, :] * select)  # (..., Q, 3)
    err = _point_ray_distance(X_q[..., None, :], xy_n[..., None, :, :], R, t)  # (..., Q, V)
    cost = np.where(usable[..., None, :], np.minimum(err, inlier_mm) ** 2, 0.0).sum(-1)
    cost = np.where(np.isfinite(X_q).all(-1), cost, np.inf)
    best = np.argmin(cost, -1)[..., None, None]
    inliers = np.take_along_axis((err < inlier_mm) & usable[..., None, :], best, -2)[..., 0, :]
    X = triangulate_dlt(xy_n, Rt, np.where(inliers, w, 0.0))
    refreshed = (_point_ray_distance(X[..., None, :], xy_n, R, t) < inlier_mm) & usable
    inliers = np.where((refreshed.sum(-1) >= 2)[..., None], refreshed, inliers)
    return triangulate_dlt(xy_n, Rt, np.where(inliers, w, 0.0))


def _fill_missing(poses: np.ndarray) -> np.ndarray:
    """(G, J, 3): NaN joints copied from their nearest finite neighbour towards the trunk."""
    for _ in range(4):  # the skeleton's depth: wrist -> elbow -> shoulder -> neck -> mid-hip
        poses = np.where(np.isnan(poses), poses[:, _PARENT], poses)
    return poses


def _keep(poses: np.ndarray, scores: np.ndarray, cfg: TriangulationConfig) -> np.ndarray:
    """(G,) bool: root inside the capture space, plausible body scale, not a duplicate."""
    with warnings.catch_warnings():  # all-NaN people give NaN here, and fail the tests below
        warnings.simplefilter("ignore", RuntimeWarning)
        roots = np.where(np.isfinite(poses[:, ROOT_INDEX]), poses[:, ROOT_INDEX],
                         np.nanmean(poses, axis=1))  # fmt: skip
        bones = np.linalg.norm(poses[:, _LIMBS[:, 0]] - poses[:, _LIMBS[:, 1]], axis=-1)
        scale = np.nanmedian(bones / _TEMPLATE_BONES_MM, axis=1)
    inside = (np.abs(roots - cfg.space_center) <= np.asarray(cfg.space_size) / 2).all(-1)
    lo, hi = cfg.body_scale_range
    candidates = inside & (scale >= lo) & (scale <= hi)
    kept: list[int] = []
    for g in np.argsort(-scores, kind="stable"):  # greedy root NMS, best first
        if candidates[g] and all(np.linalg.norm(roots[g] - roots[k]) >= cfg.nms_mm for k in kept):
            kept.append(g)
    return np.isin(np.arange(len(poses)), kept)


def triangulate_frame(frame: MultiViewFrame, cfg: TriangulationConfig
                      ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The 3D poses of one frame from its pseudo 2D labels.

    Returns poses (N, 15, 3) world mm (NaN joints only without ``fill_missing``) and scores
    (N,) in [0, 1], sorted by score (descending; ties by root position).
    """
    empty = np.zeros((0, NUM_JOINTS, 3)), np.zeros(0)
    labels = frame.pseudo_poses or []
    n_views, n_max = len(frame.cameras), max((len(p) for p in labels), default=0)
    if n_views < 2 or n_max == 0:
        return empty
    if len(labels) != n_views:
        raise ValueError(f"{frame.sequence}/{frame.frame}: pseudo labels for {len(labels)} "
                         f"views, {n_views} cameras")  # fmt: skip
    cams = stack_cameras(frame.cameras)
    # Padded (V, P, J, 3) detections; padding has confidence 0.
    dets = np.zeros((n_views, n_max, NUM_JOINTS, 3))
    for v, p in enumerate(labels):
        dets[v, : len(p)] = np.asarray(p, dtype=np.float64).reshape(-1, NUM_JOINTS, 3)
    finite = np.isfinite(dets).all(-1)
    conf = np.where(finite, np.clip(np.nan_to_num(dets[..., 2]), 0.0, 1.0), 0.0)
    xy_px = np.where(finite[..., None], dets[..., :2], 0.0).reshape(n_views, -1, 2)
    xy_n = undistort_points(xy_px, cams["K"], cams["dist"]).reshape(-1, NUM_JOINTS, 2)
    conf = conf.reshape(-1, NUM_JOINTS)  # (D, J)
    view = np.repeat(np.arange(n_views), n_max)  # (D,)
    trusted = np.where(conf >= cfg.min_joint_conf, conf, 0.0)

    R, t = cams["R"], cams["t"]
    rays = _rays(xy_n, R[view])  # (D, J, 3)
    centres = -np.einsum("dji,dj->di", R[view], t[view])
    cost = _pair_costs(rays, centres, trusted, view, cfg)
    group = _associate(cost, view, cfg.association_mm)
    ids, counts = np.unique(group, return_counts=True)
    members = [np.flatnonzero(group == g) for g in ids[counts >= cfg.min_views]]
    if not members:
        return empty

    # (G, V) detection of each group in each view, -1 where absent.
    member_of = np.full((len(members), n_views), -1)
    for g, m in enumerate(members):
        member_of[g, view[m]] = m
    present = member_of >= 0
    idx = np.where(present, member_of, 0)
    xy_g = xy_n[idx].transpose(0, 2, 1, 3)  # (G, J, V, 2)
    w1 = (trusted[idx] * present[..., None]).transpose(0, 2, 1)  # (G, J, V)
    w2 = (conf[idx] * present[..., None]).transpose(0, 2, 1)
    poses = _robust_dlt(xy_g, w1, R, t, cfg.inlier_mm)
    if cfg.handle_swaps:
        labels = _relabel(poses, xy_g, w1, R, t, 2 * cfg.inlier_mm)  # (G, V)
        perm = LABELINGS[labels].transpose(0, 2, 1)  # (G, J, V): joint j of view v reads perm
        xy_g = np.take_along_axis(xy_g, perm[..., None], 1)
        w1, w2 = (np.take_along_axis(a, perm, 1) for a in (w1, w2))
        again = (labels > 0).any(-1)
        poses[again] = _robust_dlt(xy_g[again], w1[again], R, t, cfg.inlier_mm)
    missing = np.isnan(poses).any(-1)  # (G, J): retry with every view that has the joint
    poses[missing] = _robust_dlt(xy_g[missing], w2[missing], R, t, cfg.inlier_mm)
    if cfg.fill_missing:
        poses = _fill_missing(poses)
    # Mean confidence of the group's detections x the share of the rig's views they cover.
    scores = (conf.mean(-1)[idx] * present).sum(-1) / n_views

    keep = _keep(poses, scores, cfg)
    poses, scores = poses[keep], scores[keep]
    roots = np.nan_to_num(poses[:, ROOT_INDEX])
    order = np.lexsort((roots[:, 2], roots[:, 1], roots[:, 0], -scores))
    return poses[order], scores[order]


def run_triangulation_baseline(frames: Iterable[MultiViewFrame], cfg: TriangulationConfig
                               ) -> tuple[list[FramePrediction], list[FrameGT]]:  # fmt: skip
    """Triangulate every frame; returns predictions and the frames' GT, ready for
    :func:`~selfpose3d.evaluation.evaluate_panoptic`. Every frame must carry GT poses."""
    predictions, ground_truth = [], []
    for frame in frames:
        if frame.gt_poses is None:
            raise ValueError(
                f"{frame.sequence}/{frame.frame}: the frame has no GT 3D poses to "
                f"evaluate against (use triangulate_frame for predictions only)"
            )
        poses, scores = triangulate_frame(frame, cfg)
        predictions.append(FramePrediction(poses=poses, scores=scores))
        ground_truth.append(FrameGT.from_xyzv(frame.gt_poses))
    return predictions, ground_truth


def read_frames_without_images(source: Path | str) -> Iterable[MultiViewFrame]:
    """Frames of Parquet shards (a directory or a file) without decoding their images."""
    for path in list_shards(source):
        shard = pq.ParquetFile(path)
        check_schema_version(shard.schema_arrow, path)
        columns = [name for name in shard.schema_arrow.names if name != "images"]
        for batch in shard.iter_batches(batch_size=256, columns=columns):
            yield from (row_to_frame(row) for row in batch.to_pylist())


def evaluate_triangulation(data_dir: Path | str, split: str = "test",
                           cfg: TriangulationConfig | None = None) -> dict[str, float]:  # fmt: skip
    """Panoptic metrics (:func:`~selfpose3d.evaluation.evaluate_panoptic`) of the baseline on
    ``data_dir/split`` of an ingested dataset, plus ``num_frames`` and ``seconds`` (the
    triangulation time, reading excluded).

    ``cfg``'s capture space should be the one the GT was annotated in (a synthetic dataset's
    ``manifest.json`` holds it): people standing outside it appear in the pseudo labels but
    not in the GT, and a larger space lets them through as false positives.
    """
    folder = Path(data_dir) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no '{split}' split in the dataset {data_dir}")
    cfg = cfg or TriangulationConfig()
    frames = list(read_frames_without_images(folder))
    t0 = time.perf_counter()
    predictions, ground_truth = run_triangulation_baseline(frames, cfg)
    seconds = time.perf_counter() - t0
    metrics = evaluate_panoptic(predictions, ground_truth)
    return metrics | {"num_frames": float(len(frames)), "seconds": seconds}
