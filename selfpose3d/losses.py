"""Every loss of the training stages as a pure function of tensors (DESIGN §2.2).

Each function returns a scalar tensor (or per-term tensors for the matching loss); the step
functions of ``selfpose3d.training.steps`` name and weight them. Reductions follow the
reference implementation of SelfPose3d: heatmap MSEs are means over every element
(samples, views, joints, pixels); the two directions of the cross-augmentation losses are
summed by the caller.

Units: heatmap coordinates in heatmap px, 3D positions in mm; heatmaps and cubes in [0, 1].

Shape legend: B samples, V views, P predicted people, Q pseudo (target) people, K proposals,
G GT people, J joints, (h, w) heatmap px, (X, Y, Z) voxels, T matching terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from selfpose3d.models.heatmaps import render_heatmaps


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element: pred, target (B, V, J, h, w) -> ()."""
    return (pred - target).square().mean()


def root_cube_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE of root likelihood cubes against Gaussian target cubes: (N, X, Y, Z) -> ()."""
    return (pred - target).square().mean()


def root_consistency_loss(cubes: Sequence[torch.Tensor], reference: torch.Tensor) -> torch.Tensor:
    """Sum over the augmented versions of MSE(cube, reference), the reference (the cube of the
    un-augmented views) detached: each (B, X, Y, Z) -> ()."""
    ref = reference.detach()
    return sum((c - ref).square().mean() for c in cubes)


def reprojection_loss(
    points: torch.Tensor,
    weights: torch.Tensor,
    target: torch.Tensor,
    sigma: float,
    attention: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample heatmap MSE of reprojected poses against pseudo-label heatmaps.

    points (B, V, P, J, 2) heatmap px: 3D poses projected into the target version's views;
    weights (B, V, P, J): which of them to draw (0 = not a person / behind the camera);
    target (B, V, J, h, w): the pseudo-label heatmaps of that version; attention
    (B, V, J, h, w) in [0, 1] or None: per-pixel weights of the squared error.
    The poses are drawn as Gaussians (sigma heatmap px), summed over people and clipped to
    [0, 1], differentiably. Returns (B,): the mean weighted squared error of each sample.
    """
    h, w = target.shape[-2:]
    rendered = render_heatmaps(points, weights, (w, h), sigma, combine="sum_clip")
    err = (rendered - target).square()
    if attention is not None:
        err = err * attention
    return err.flatten(1).mean(1)


def attention_regularizer(attention: torch.Tensor) -> torch.Tensor:
    """MSE(attention, 1): keeps the attention maps (any shape) from collapsing to 0."""
    return (attention - 1.0).square().mean()


def hungarian_cost(
    pred: torch.Tensor,
    target: torch.Tensor,
    visible: torch.Tensor,
    size: Sequence[float],
) -> torch.Tensor:
    """All matching costs of a batch in one tensor op.

    pred (B, V, P, J, 2) and target (B, V, Q, J, 2) px; visible (B, V, Q, J) or
    (B, V, P, Q, J) weights of the target joints (0/1); size (w, h) px of the image the
    points live in. cost[b, v, p, q] = mean over the J x 2 coordinates of
    |pred - target| / size, masked by visibility (masked coordinates count as 0, as in the
    reference implementation). Returns (B, V, P, Q).
    """
    scale = pred.new_tensor([float(size[0]), float(size[1])])
    # A joint projected from (nearly) behind a camera or far outside a distorted lens can be
    # inf; masking by multiplication would turn inf * 0 into NaN, so select instead (and keep
    # non-finite values out of the graph, whose gradient would be NaN too).
    pred = torch.where(torch.isfinite(pred), pred, torch.zeros_like(pred))
    diff = (pred[:, :, :, None] - target[:, :, None]).abs() / scale  # (B, V, P, Q, J, 2)
    if visible.ndim == 4:
        visible = visible[:, :, None]
    mask = (visible > 0)[..., None].expand_as(diff)
    return torch.where(mask, diff * visible[..., None], torch.zeros_like(diff)).mean((-1, -2))


def hungarian_match(
    cost: torch.Tensor, pred_valid: torch.Tensor, target_valid: torch.Tensor
) -> torch.Tensor:
    """Optimal one-to-one matches per (sample, view) with SciPy's Hungarian solver.

    cost (B, V, P, Q), pred_valid (B, V, P) bool, target_valid (B, V, Q) bool. Returns the
    matches as a (M, 4) long tensor of (b, v, p, q); min(#valid preds, #valid targets)
    matches per (b, v).
    """
    c = cost.detach().to("cpu", torch.float64).numpy()
    pv, tv = pred_valid.cpu().numpy(), target_valid.cpu().numpy()
    rows = []
    for b, v in zip(*np.nonzero(pv.any(-1) & tv.any(-1)), strict=True):
        p_idx, q_idx = np.flatnonzero(pv[b, v]), np.flatnonzero(tv[b, v])
        r, k = linear_sum_assignment(c[b, v][np.ix_(p_idx, q_idx)])
        rows.append(np.stack([np.full(len(r), b), np.full(len(r), v), p_idx[r], q_idx[k]], 1))
    matches = np.concatenate(rows) if rows else np.zeros((0, 4), dtype=np.int64)
    return torch.from_numpy(matches.astype(np.int64)).to(cost.device)


def hungarian_l1_terms(
    pred: torch.Tensor,
    pred_valid: torch.Tensor,
    target: torch.Tensor,
    target_visible: torch.Tensor,
    size: Sequence[float],
    pred_visible: torch.Tensor | None = None,
) -> torch.Tensor:
    """The L1 joint loss term of every (sample, view): the sum of its matched costs.

    pred (B, V, P, J, 2) projected poses, pred_valid (B, V, P) bool (a person);
    target (B, V, Q, J, 2) pseudo poses, target_visible (B, V, Q, J) 0/1; both in the px of
    an image of ``size`` (w, h). pred_visible (B, V, P, J) optionally masks predicted joints
    that cannot be compared (e.g. behind the camera). Returns (B, V); 0 where nothing matches.
    """
    visible = target_visible.to(pred.dtype)
    if pred_visible is not None:
        visible = visible[:, :, None] * pred_visible.to(pred.dtype)[:, :, :, None]
    cost = hungarian_cost(pred, target, visible, size)  # (B, V, P, Q)
    matches = hungarian_match(cost, pred_valid, target_visible.bool().any(-1))
    b, v, p, q = matches.unbind(-1)
    terms = cost.new_zeros(cost.shape[:2])
    return terms.index_put((b, v), cost[b, v, p, q], accumulate=True)


def drop_worst_mean(terms: torch.Tensor) -> torch.Tensor:
    """Mean of the terms (..., T) without the single largest one of each row -> (...).

    With one term there is nothing to drop: its value is returned.
    """
    n = terms.shape[-1]
    if n <= 1:
        return terms.sum(-1)
    worst = terms.detach().argmax(-1, keepdim=True)
    keep = torch.ones_like(terms).scatter(-1, worst, 0.0)
    return (terms * keep).sum(-1) / (n - 1)


def match_to_gt(
    roots: torch.Tensor, gt_roots: torch.Tensor, gt_valid: torch.Tensor, radius: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest GT person of every proposal.

    roots (B, K, 3) mm, gt_roots (B, G, 3) mm, gt_valid (B, G) bool, radius mm.
    Returns (matched (B, K) bool: a valid GT root lies within ``radius``, index (B, K) long).
    """
    dist = torch.cdist(roots, gt_roots)  # (B, K, G)
    dist = torch.where(gt_valid[:, None], dist, torch.full_like(dist, torch.inf))
    best, index = dist.min(-1)
    return best <= radius, index


def pose_l1(pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| (mm) over the visible joints: (N, J, 3), (N, J, 3), (N, J) -> ().

    0 (with a zero gradient) when nothing is visible.
    """
    mask = visible.to(pred.dtype)[..., None]
    return ((pred - target).abs() * mask).sum() / (3 * mask.sum()).clamp(min=1.0)
