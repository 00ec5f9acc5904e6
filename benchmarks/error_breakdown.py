"""Where a trained model's 3D error comes from: per joint, per sequence, per crowd size, and
how much of it is a whole-body offset or a shrunken/stretched body.

    python benchmarks/error_breakdown.py --checkpoint runs/acc-cpu6/selfsup \
        --data runs/cpu/parquet [--split test] [--every 1] [--max-frames 0]

Every GT person of the scored frames is matched to the prediction of its frame with the
lowest MPJPE (the evaluation protocol's distance; people with no prediction within 500 mm
count as missed). Over the matched people it prints:

- MPJPE and the share of people under 50 / 100 mm, per sequence and per number of GT people
  in the frame;
- per joint: mean and median error (mm), the mean signed error along the joint's direction
  from the GT root (negative: predicted nearer the root than it is, i.e. a shrunken body),
  how often the prediction is nearer the GT's mirror joint (a left/right swap), and the
  error split into vertical and horizontal parts: mean signed ``dz`` (prediction - GT,
  positive: too high; the world's z is up), mean ``|dz|`` and mean horizontal ``|dxy|``,
  and ``xy r``: how well the joint's predicted horizontal offset from the root follows the
  GT's across people (Pearson r; a limb that scatters or stays put scores low);
- the decomposition of the MPJPE: the error of the whole-body offset (mean over joints of
  prediction - GT), and the MPJPE left once that offset is removed (the pose's own shape);
- per joint, what the pseudo labels the model learns from look like (``--labels-split``,
  default train; every ``--labels-every``-th frame): each view's detections are matched to
  the projected GT people (Hungarian on the mean joint distance, gated at 40 px), and for the
  matched ones it counts the joints not detected, those on the image border (within 1 px:
  a detector puts joints it cannot see in the frame there) and the pixel error of the rest;
  and how many of the detected joints still land inside the heatmap once the pose stage's
  augmentations (A1/A2, the checkpoint's ``train.augment``) have rotated and cropped the view.

Units: mm, world frame. No training; the model runs in eval mode on the un-augmented views.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

from selfpose3d.config import Config
from selfpose3d.data.batches import iterate_batches, off_border
from selfpose3d.evaluation import FrameGT
from selfpose3d.evaluation.panoptic import RECALL_THRESHOLD_MM, match_frame
from selfpose3d.models.model import apply_affine
from selfpose3d.skeleton import PANOPTIC15_JOINTS, ROOT_INDEX, flip_permutation
from selfpose3d.training.evaluate import load_frames, load_trained_model, predict_frames
from selfpose3d.training.steps import batch_spec


def matched_people(predictions: list, frames: list) -> list[dict]:
    """One record per GT person: its sequence, crowd size, GT (J, 3) mm, visibility (J,) and
    its closest prediction (J, 3) mm or None when none is within 500 mm."""
    people = []
    for pred, frame in zip(predictions, frames, strict=True):
        gt = FrameGT.from_xyzv(frame.gt_poses)
        keep = gt.visible.any(-1)  # the protocol ignores people with no visible joint
        gt = FrameGT(gt.poses[keep], gt.visible[keep])
        if len(gt.poses) == 0:
            continue
        best: dict[int, tuple[float, int]] = {}
        if len(pred.poses):
            mpjpe, gt_ids = match_frame(pred.poses, gt.poses, gt.visible)
            for i, (e, g) in enumerate(zip(mpjpe, gt_ids, strict=True)):
                if e < best.get(int(g), (np.inf, -1))[0]:
                    best[int(g)] = (float(e), i)
        for g in range(len(gt.poses)):
            e, i = best.get(g, (np.inf, -1))
            people.append({
                "sequence": frame.sequence, "crowd": len(gt.poses), "gt": gt.poses[g],
                "visible": gt.visible[g],
                "pred": pred.poses[i] if e < RECALL_THRESHOLD_MM else None,
            })  # fmt: skip
    return people


def person_errors(p: dict) -> dict[str, float]:
    """MPJPE, whole-body offset error and offset-free MPJPE of one matched person, mm."""
    vis = p["visible"]
    diff = p["pred"][vis] - p["gt"][vis]  # (K, 3)
    offset = diff.mean(0)
    return {
        "mpjpe": float(np.linalg.norm(diff, axis=-1).mean()),
        "offset": float(np.linalg.norm(offset)),
        "shape": float(np.linalg.norm(diff - offset, axis=-1).mean()),
    }


def _follow(pairs: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """Pearson r of predicted vs GT horizontal offsets from the root, x and y pooled (each
    centred on its mean): 1 when the prediction follows where the limb really is, lower
    when it scatters or stays put. '-' with fewer than two people or no spread."""
    if len(pairs) < 2:
        return f"{'-':>6}"
    pred, gt = (np.array(x) for x in zip(*pairs, strict=True))  # (K, 2) each
    pred, gt = pred - pred.mean(0), gt - gt.mean(0)
    norm = np.sqrt((pred**2).sum() * (gt**2).sum())
    return f"{(pred * gt).sum() / norm:>6.2f}" if norm > 0 else f"{'-':>6}"


def group_table(title: str, groups: dict, people_errors: dict[int, dict]) -> str:
    lines = [f"{title:<18} {'people':>7} {'missed':>7} {'MPJPE':>7} {'<50mm %':>8} "
             f"{'<100mm %':>9} {'offset':>7} {'shape':>7}"]  # fmt: skip
    for key in sorted(groups):
        ids = groups[key]
        found = [people_errors[i] for i in ids if i in people_errors]
        if not found:
            lines.append(f"{key!s:<18} {len(ids):>7} {len(ids):>7}")
            continue
        m = np.array([e["mpjpe"] for e in found])
        lines.append(
            f"{key!s:<18} {len(ids):>7} {len(ids) - len(found):>7} {m.mean():>7.1f} "
            f"{100 * (m < 50).sum() / len(ids):>8.1f} {100 * (m < 100).sum() / len(ids):>9.1f} "
            f"{np.mean([e['offset'] for e in found]):>7.1f} "
            f"{np.mean([e['shape'] for e in found]):>7.1f}"
        )
    return "\n".join(lines)


def joint_table(people: list[dict]) -> str:
    """Per joint: mean and median error, the mean signed radial error (along GT root -> GT
    joint) and the share of people whose predicted joint is nearer the GT's mirror joint
    (left for right) than the joint itself."""
    flip = flip_permutation()
    err: dict[int, list[float]] = defaultdict(list)
    radial: dict[int, list[float]] = defaultdict(list)
    swapped: dict[int, list[bool]] = defaultdict(list)
    diffs: dict[int, list[np.ndarray]] = defaultdict(list)
    limbs: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for p in people:
        if p["pred"] is None or not p["visible"][ROOT_INDEX]:
            continue
        gt, pred, root = p["gt"], p["pred"], p["gt"][ROOT_INDEX]
        for j in np.flatnonzero(p["visible"]):
            e = float(np.linalg.norm(pred[j] - gt[j]))
            err[j].append(e)
            diffs[j].append(pred[j] - gt[j])
            if flip[j] != j:
                swapped[j].append(float(np.linalg.norm(pred[j] - gt[flip[j]])) < e)
            if j != ROOT_INDEX:
                axis = (gt[j] - root) / np.linalg.norm(gt[j] - root)
                radial[j].append(float((pred[j] - gt[j]) @ axis))
                # the horizontal offset from the root, predicted and GT
                limbs[j].append(((pred[j] - pred[ROOT_INDEX])[:2], (gt[j] - root)[:2]))
    lines = [f"{'joint':<16} {'mean error':>11} {'median':>7} {'radial':>8} {'swap %':>7} "
             f"{'dz':>7} {'|dz|':>7} {'|dxy|':>7} {'xy r':>6}"]  # fmt: skip
    for j, name in enumerate(PANOPTIC15_JOINTS):
        if err[j]:
            r = f"{np.mean(radial[j]):>8.1f}" if radial[j] else f"{'-':>8}"
            w = f"{100 * np.mean(swapped[j]):>7.1f}" if swapped[j] else f"{'-':>7}"
            d = np.array(diffs[j])  # (K, 3) prediction - GT, world mm (z up)
            lines.append(f"{name:<16} {np.mean(err[j]):>11.1f} {np.median(err[j]):>7.1f} {r} {w} "
                         f"{d[:, 2].mean():>7.1f} {np.abs(d[:, 2]).mean():>7.1f} "
                         f"{np.linalg.norm(d[:, :2], axis=-1).mean():>7.1f} "
                         f"{_follow(limbs[j])}")  # fmt: skip
    return "\n".join(lines)


def label_table(frames: list, gate_px: float = 40.0, border_px: float = 1.0) -> str:
    """Per joint: the pseudo labels of ``frames`` against the projections of their GT people."""
    detected = np.zeros(len(PANOPTIC15_JOINTS))
    border = np.zeros_like(detected)
    errors: list[list[float]] = [[] for _ in PANOPTIC15_JOINTS]
    people = 0
    for f in frames:
        gt = np.asarray(f.gt_poses, dtype=np.float64)
        if len(gt) == 0 or f.pseudo_poses is None:
            continue
        for cam, det in zip(f.cameras, f.pseudo_poses, strict=True):
            if len(det) == 0:
                continue
            uv = cam.project(gt[..., :3])  # (G, J, 2) px of the stored image
            ok = det[:, None, :, 2] > 0  # (D, 1, J)
            dist = np.linalg.norm(det[:, None, :, :2] - uv[None], axis=-1)  # (D, G, J)
            cost = np.where(ok, dist, 0).sum(-1) / np.maximum(ok.sum(-1), 1)
            for d, g in zip(*linear_sum_assignment(cost), strict=True):
                if cost[d, g] > gate_px:
                    continue
                people += 1
                c = det[d, :, 2]
                on_border = ~off_border(det[d, :, :2], np.array([cam.width, cam.height]),
                                        border_px)  # fmt: skip
                detected += c > 0
                border += (c > 0) & on_border
                for j in np.flatnonzero((c > 0) & ~on_border):
                    errors[j].append(float(dist[d, g, j]))
    lines = [f"pseudo labels: {people} detections matched to GT people",
             f"{'joint':<16} {'missing %':>9} {'border %':>9} {'median px':>10} {'>20 px %':>9}"]
    for j, name in enumerate(PANOPTIC15_JOINTS):
        e = np.array(errors[j]) if errors[j] else np.array([np.nan])
        lines.append(f"{name:<16} {100 * (1 - detected[j] / max(people, 1)):>9.1f} "
                     f"{100 * border[j] / max(people, 1):>9.1f} {np.median(e):>10.1f} "
                     f"{100 * np.mean(e > 20):>9.1f}")  # fmt: skip
    return "\n".join(lines)


def augmented_table(frames: list, cfg: Config, seed: int = 0, border_px: float = 1.0) -> str:
    """Per joint: the share of detected pseudo joints inside the heatmap, un-augmented (A3)
    and after the pose stage's random affines (A1 and A2 together); the last column counts
    only the joints off the image border (a detector parks joints it cannot see there, and
    any zoom-in crops those first)."""
    w, h = cfg.model.heatmap_size
    spec = dataclasses.replace(batch_spec("pose", cfg.model, cfg.train), images=False)
    keys = ("a3", "a1a2", "a1a2 off border")
    inside = {k: np.zeros(len(PANOPTIC15_JOINTS)) for k in keys}
    total = {k: np.zeros(len(PANOPTIC15_JOINTS)) for k in keys}
    rng = np.random.default_rng(seed)
    for batch in iterate_batches(frames, 8, rng, spec, shuffle=False):
        detected = (batch.pseudo.confidence > 0).numpy()  # (B, V, P, J)
        size = batch.cameras.size.numpy()[:, :, None, None]  # (B, V, 1, 1, 2) original px
        away = detected & off_border(batch.pseudo.joints.numpy(), size, border_px)
        for name in ("a3", "a1", "a2"):
            hm = apply_affine(batch.pseudo.joints, batch.view(name).affines).numpy()
            ok = (hm >= -0.5).all(-1) & (hm[..., 0] <= w - 0.5) & (hm[..., 1] <= h - 0.5)
            for key, counted in ((("a3", detected),) if name == "a3" else
                                 (("a1a2", detected), ("a1a2 off border", away))):
                inside[key] += (ok & counted).sum((0, 1, 2))
                total[key] += counted.sum((0, 1, 2))
    lines = [f"detected pseudo joints inside the heatmap ({len(frames)} frames)",
             f"{'joint':<16} {'A3 %':>7} {'A1/A2 %':>8} {'A1/A2 off-border %':>19}"]
    for j, name in enumerate(PANOPTIC15_JOINTS):
        a3, aug, off = (100 * inside[k][j] / max(total[k][j], 1) for k in keys)
        lines.append(f"{name:<16} {a3:>7.1f} {aug:>8.1f} {off:>19.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a train output or checkpoint file")
    p.add_argument("--data", required=True, help="an ingested dataset")
    p.add_argument("--split", default="test")
    p.add_argument("--every", type=int, default=1, help="score every n-th frame")
    p.add_argument("--max-frames", type=int, default=0, help="at most this many frames (0: all)")
    p.add_argument("--labels-split", default="train", help="whose pseudo labels to describe")
    p.add_argument("--labels-every", type=int, default=4, help="every n-th frame of that split")
    args = p.parse_args(argv)

    frames = load_frames(args.data, args.split)[:: args.every]
    if args.max_frames:
        frames = frames[: args.max_frames]
    model, cfg = load_trained_model(args.checkpoint)
    model.eval()
    predictions, _ = predict_frames(model, frames, progress=True)
    people = matched_people(predictions, frames)
    errors = {i: person_errors(x) for i, x in enumerate(people) if x["pred"] is not None}

    by_sequence: dict[str, list[int]] = defaultdict(list)
    by_crowd: dict[int, list[int]] = defaultdict(list)
    for i, x in enumerate(people):
        by_sequence[x["sequence"]].append(i)
        by_crowd[x["crowd"]].append(i)
    everyone = {"all": list(range(len(people)))}
    print(f"{args.checkpoint}: {len(frames)} {args.split} frames, {len(people)} GT people")
    print()
    print(group_table("sequence", {**by_sequence, **everyone}, errors))
    print()
    print(group_table("people in frame", by_crowd, errors))
    print()
    print(joint_table(people))
    print()
    label_frames = load_frames(args.data, args.labels_split)[:: args.labels_every]
    print(label_table(label_frames))
    print()
    print(augmented_table(label_frames, cfg))


if __name__ == "__main__":
    main()
