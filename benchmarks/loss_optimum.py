"""Where do the self-supervised pose losses put each joint? Free 3D joints optimised on them.

    python benchmarks/loss_optimum.py --config configs/cpu.yaml --data DIR [--frames 16]
        [--iterations 200] [--noise 0,100] [--objective reproj+l1 ...] [--set k=v ...]

pose_net learns only what its losses reward. This script takes the network out: the 3D
joints of the GT people of ``--frames`` training frames become free parameters, initialised
at the GT plus Gaussian noise (``--noise``, mm per coordinate), and Adam minimises the pose
stage's own objective on them (``pose_step``: fresh A1/A2 augmentations every iteration,
proposals at the GT roots, the L1 term included as in the epochs from
``train.l1_from_epoch``). Per joint it prints the mean distance to the GT before and after.
A joint that drifts away from the GT when it starts there has a biased loss optimum; one
that stays where the noise put it gets no useful gradient from the loss. Objectives:
``reproj`` (heatmap reprojection), ``l1`` (Hungarian L1, weighted by ``train.l1_weight``),
``reproj+l1`` (what the pose stage trains on); ``+hard`` after one of them uses the hard
labels (the finetune stage), e.g. ``reproj+l1+hard``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from step_time import data_frames  # a sibling script: train frames with enough GT roots

from selfpose3d.config import Config, load_config
from selfpose3d.data.batches import make_batch
from selfpose3d.models.model import build_model
from selfpose3d.skeleton import PANOPTIC15_JOINTS, ROOT_INDEX
from selfpose3d.training.steps import batch_spec, pose_step

OBJECTIVES = {"reproj": ("loss_reproj",), "l1": ("loss_l1",),
              "reproj+l1": ("loss_reproj", "loss_l1")}  # fmt: skip


def pick_frames(data: Path, count: int, seed: int) -> list:
    """``count`` training frames with at least one visible GT root, spread at random."""
    frames = data_frames(data, 1)
    if len(frames) < count:
        raise SystemExit(f"{data}: only {len(frames)} train frames with a visible GT root")
    index = np.random.default_rng(seed).choice(len(frames), count, replace=False)
    return [frames[i] for i in sorted(index)]


def optimise(cfg: Config, frames: list, objective: str, noise: float, iterations: int,
             lr: float, seed: int) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Returns, per (person, joint) (NaN: not visible): the errors before and after, mm; the
    drift after, horizontal |dxy| and vertical dz, mm; the first iteration's gradient norm
    relative to its mean over all joints (the share of the learning signal each joint gets
    before Adam rescales it)."""
    keys = OBJECTIVES[objective.removesuffix("+hard")]
    hard = objective.endswith("+hard")
    spec = batch_spec("pose", cfg.model, cfg.train)
    model = build_model(cfg.model)
    k = cfg.model.max_people
    gt = make_batch(frames, spec, np.random.default_rng(seed)).gt
    b, g, j = gt.visible.shape
    visible = torch.zeros(b, k, j, dtype=torch.bool)  # (B, K, J): GT people in K slots
    target = torch.zeros(b, k, j, 3)  # (B, K, J, 3) mm
    visible[:, :g] = (gt.visible & gt.visible[..., ROOT_INDEX, None])[:, :k]
    target[:, :g] = gt.poses[:, :k]
    person = visible[..., ROOT_INDEX]  # (B, K)
    proposals = torch.zeros(len(frames), k, 5)
    proposals[..., :3] = target[:, :, ROOT_INDEX]
    proposals[..., 3:] = person[..., None].float()
    torch.manual_seed(seed)
    start = target + noise * torch.randn_like(target)
    start[:, :, ROOT_INDEX] = target[:, :, ROOT_INDEX]  # the proposals' roots stay put
    joints = start.clone().requires_grad_(True)
    # The network is replaced by the free joints: the same poses for A1 and A2.
    model.root_cube = lambda *args: None
    model.root_net.propose = lambda cubes: proposals
    model.poses = lambda heatmaps, props, cameras, affines: torch.cat([joints, joints])
    optimiser = torch.optim.Adam([joints], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, iterations, lr / 20)
    rng = np.random.default_rng(seed + 1)
    first = torch.zeros(joints.shape[:-1])  # |gradient| at the start, before Adam's scaling
    for i in range(iterations):
        batch = make_batch(frames, spec, rng).without_gt()  # fresh augmentations
        out = pose_step(model, batch, cfg.train, cfg.train.l1_from_epoch,
                        labels="hard" if hard else "soft")  # fmt: skip
        loss = sum(out[key] for key in keys)
        optimiser.zero_grad()
        loss.backward()
        joints.grad[:, :, ROOT_INDEX] = 0.0
        if i == 0:
            first = joints.grad.norm(dim=-1)
        optimiser.step()
        schedule.step()

    def error(x: torch.Tensor) -> np.ndarray:
        e = (x - target).norm(dim=-1)
        return torch.where(visible, e, torch.nan)[person].numpy()

    drift = (joints.detach() - target)[person]
    mask = visible[person]
    dxy = torch.where(mask, drift[..., :2].norm(dim=-1), torch.nan).numpy()
    dz = torch.where(mask, drift[..., 2], torch.nan).numpy()
    grad = torch.where(visible, first, torch.nan)[person].numpy()
    return error(start), error(joints.detach()), dxy, dz, grad / np.nanmean(grad)


def joint_rows(before: np.ndarray, after: np.ndarray, dxy: np.ndarray, dz: np.ndarray,
               grad: np.ndarray) -> list[str]:  # fmt: skip
    rows = []
    for j, name in [*enumerate(PANOPTIC15_JOINTS), (slice(None), "all")]:
        rows.append(f"| {name} | {np.nanmean(before[:, j]):.1f} | {np.nanmean(after[:, j]):.1f} "
                    f"| {np.nanmedian(after[:, j]):.1f} | {np.nanmean(dxy[:, j]):.1f} "
                    f"| {np.nanmean(dz[:, j]):+.1f} | {np.nanmean(grad[:, j]):.2f} |")  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/cpu.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="an ingested dataset")
    parser.add_argument("--frames", type=int, default=16, help="training frames, one batch")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--lr", type=float, default=10.0, help="Adam's step, mm")
    parser.add_argument("--noise", default="0,100", help="initial noise std per coordinate, "
                        "mm, comma-separated")  # fmt: skip
    parser.add_argument("--objective", action="append", default=[],
                        help=f"{' / '.join(OBJECTIVES)}, optionally +hard; repeatable "
                             "(default: reproj+l1, reproj, l1)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="K=V")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.iterations < 1 or args.frames < 1:
        parser.error("--iterations and --frames must be >= 1")
    objectives = args.objective or ["reproj+l1", "reproj", "l1"]
    for objective in objectives:
        if objective.removesuffix("+hard") not in OBJECTIVES:
            parser.error(f"--objective {objective!r}: one of {list(OBJECTIVES)}, "
                         f"optionally with +hard")  # fmt: skip
    cfg = load_config(args.config, args.set)
    if cfg.model.use_attention:
        raise SystemExit("the attention net reads images; set model.use_attention=false")
    frames = pick_frames(args.data, args.frames, args.seed)
    for objective in objectives:
        for noise in (float(x) for x in args.noise.split(",")):
            t0 = time.perf_counter()
            results = optimise(cfg, frames, objective, noise, args.iterations, args.lr,
                               args.seed)  # fmt: skip
            print(f"\nobjective {objective}, initial noise {noise:g} mm, {len(results[0])} people, "
                  f"{args.iterations} iterations, {time.perf_counter() - t0:.0f} s")
            print("| joint | before mm | after mm | after median | after abs dxy | after dz "
                  "| first gradient |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            print("\n".join(joint_rows(*results)))


if __name__ == "__main__":
    main()
