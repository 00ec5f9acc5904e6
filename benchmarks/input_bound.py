"""How accurate can pose_net be with the input it is given? An ablation of the voxel input.

    python benchmarks/input_bound.py --config configs/cpu.yaml --data DIR [--frames 200]
        [--variant NAME:k=v,k=v ...]

pose_net sees a cube of the heatmaps back-projected around each root proposal and ends with a
soft-argmax over its voxels. This script removes everything learned: the proposals are the
GT roots, and the V2V net is replaced by the identity, so each joint is the soft-argmax of its
input cube itself. What comes out is the accuracy that the input cube's resolution (pose
voxels, heatmap px, heatmap sigma) allows with no network at all, scored by the Panoptic
protocol on the first ``--frames`` test frames. A trained V2V can do better than this bound
(it learns sub-voxel interpolation and a pose prior) but a preset whose bound is poor starts
far behind.

Each ``--variant`` is a name and config overrides (``model.*``) applied on top of ``--config``;
without any, a default set of resolutions and sigmas is compared.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from selfpose3d.config import load_config
from selfpose3d.data.batches import BatchSpec, iterate_batches
from selfpose3d.evaluation import FrameGT, FramePrediction, evaluate_panoptic
from selfpose3d.evaluation.report import PANOPTIC_COLUMNS, format_metrics_table
from selfpose3d.models.model import build_model
from selfpose3d.skeleton import PANOPTIC15_JOINTS, ROOT_INDEX
from selfpose3d.training.evaluate import load_frames

DEFAULT_VARIANTS = {
    "preset": [],
    "heatmaps x2": ["model.image_size=[960,512]", "model.heatmap_size=[240,128]"],
    "sigma 2": ["model.heatmap_sigma=2.0"],
    "pose bins 48": ["model.pose_bins=[48,48,48]"],
    "heatmaps x2, sigma 2": ["model.image_size=[960,512]", "model.heatmap_size=[240,128]",
                             "model.heatmap_sigma=2.0"],  # fmt: skip
}


def bound(config: Path, overrides: list[str], frames: list
          ) -> tuple[dict[str, float], np.ndarray]:
    """Soft-argmax of the raw input cubes at the GT roots, scored on ``frames``.

    Returns the Panoptic metrics and every GT person's per-joint error (people, J) mm, NaN
    where the joint is not visible (each person's pose comes from its own GT root).
    """
    cfg = load_config(config, overrides)
    if cfg.model.input_mode != "pseudo_heatmaps":
        raise SystemExit("the bound is measured on pseudo heatmaps (model.input_mode)")
    model = build_model(cfg.model).eval()
    model.pose_net.v2v = nn.Identity()
    spec = BatchSpec.from_configs(cfg.model, versions=("a3",), images=False)
    preds, gts, errors = [], [], []
    with torch.inference_mode():
        for batch in iterate_batches(frames, 4, np.random.default_rng(0), spec, shuffle=False):
            gt = batch.gt
            a3 = batch.view("a3")
            heatmaps = model.input_heatmaps(a3.affines, pseudo_joints=batch.pseudo.joints,
                                            pseudo_weights=batch.pseudo.weights("soft", 1.0))
            roots = gt.poses[:, :, ROOT_INDEX]  # (B, G, 3)
            flag = gt.valid & gt.visible[:, :, ROOT_INDEX]
            proposals = torch.cat([roots, flag[..., None].float(), flag[..., None].float()], -1)
            poses = model.poses(heatmaps, proposals, batch.cameras, a3.affines)
            for i in range(batch.size):
                keep = flag[i]
                preds.append(FramePrediction(poses[i][keep].double().numpy(),
                                             np.ones(int(keep.sum()))))  # fmt: skip
                gts.append(FrameGT(gt.poses[i][gt.valid[i]].double().numpy(),
                                   gt.visible[i][gt.valid[i]].numpy()))  # fmt: skip
                e = (poses[i][keep] - gt.poses[i][keep]).norm(dim=-1)  # (people, J)
                errors.append(torch.where(gt.visible[i][keep], e, torch.nan).numpy())
    return evaluate_panoptic(preds, gts), np.concatenate(errors)


def joint_table(errors: dict[str, np.ndarray], far_mm: float = 200.0) -> str:
    """Per joint and variant: median error (mm) and the share of errors over ``far_mm``
    (the soft-argmax drawn to another person's or a ghost's blob)."""
    head = "".join(f" {name[:14]:>14} {'>' + str(int(far_mm)) + ' %':>7}" for name in errors)
    lines = [f"{'joint':<12}{head}"]
    for j, joint in enumerate(PANOPTIC15_JOINTS):
        seen = [e[:, j][~np.isnan(e[:, j])] for e in errors.values()]
        cells = "".join(f" {np.median(e):>14.1f} {100 * np.mean(e > far_mm):>7.1f}"
                        for e in seen)  # fmt: skip
        lines.append(f"{joint:<12}{cells}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/cpu.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="an ingested dataset")
    parser.add_argument("--frames", type=int, default=200, help="test frames scored")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:K=V,K=V",
                        help="a named set of overrides (repeatable)")  # fmt: skip
    args = parser.parse_args()
    variants = DEFAULT_VARIANTS
    if args.variant:
        variants = {}
        for v in args.variant:
            name, _, rest = v.partition(":")
            variants[name] = [x for x in rest.split(",") if x]
    frames = load_frames(args.data, "test")[: args.frames]
    results, errors = {}, {}
    for name, overrides in variants.items():
        t0 = time.perf_counter()
        results[name], errors[name] = bound(args.config, overrides, frames)
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"\nIdentity pose_net at the GT roots, {len(frames)} test frames of {args.data} "
          f"(AP and recall in %, MPJPE in mm):")  # fmt: skip
    print(format_metrics_table(results, PANOPTIC_COLUMNS))
    print("\nPer joint: median error (mm) and share over 200 mm")
    print(joint_table(errors))


if __name__ == "__main__":
    main()
