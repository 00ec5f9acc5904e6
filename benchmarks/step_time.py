"""One self-supervised pose-stage training step: the vectorised ``pose_step`` against a loop.

The loop version (it lives only here) computes the same losses and gradients in the style of
the reference research code: Python loops over the two augmentations, the samples, the views
and the people. pose_net runs one person at a time (that person's cube projected view by view,
then a batch-1 V2V call), the root cube is projected view by view without a projection cache,
heatmaps are rendered person by person and view by view, and the Hungarian matching builds
each (sample, view) cost matrix pair by pair. Both versions call the same network modules
with the same weights, so the networks' FLOPs are equal; the losses, the root cubes and the
gradients of every trained parameter are asserted equal (float32 tolerances) before timing.

    python benchmarks/step_time.py [--config configs/cpu.yaml] [--set k=v ...] [--people 3]
        [--data DIR] [--repeats 3] [--batch-size B] [--epoch E] [--threads N] [--profile N]

e.g. ``--data /tmp/bench_cpu/parquet-ray2 --set model.input_mode=pseudo_heatmaps
--set model.use_attention=false``. Without ``--data`` a frame is built synthetically (the
preset's rig, P template skeletons, projected pseudo labels, noise images when needed).

Protocol and what is measured:

- Proposals: root_net runs (its cost is part of the step and its cube is compared), but its
  proposals are replaced by P fixed ones at the GT roots of the frame, the same for both
  versions, so that the number of people is fixed whatever root_net's weights propose.
- BatchNorm: every BatchNorm layer normalises with its running statistics (eval mode); the
  rest of the model is in the pose stage's train/eval state. Batch statistics would make a
  batch-1 per-person V2V call a different function from one call over all people, so the
  loop could not match. The extra row "vectorised, BN train" times the real step (batch
  statistics) for reference; it is not compared with the loop.
- Epoch: ``--epoch`` defaults to ``train.l1_from_epoch`` so that the Hungarian L1 term runs.
- Times: after a warm-up (the equality check), ``--repeats`` steps per version, alternating
  the versions so that load from other processes hits both alike; the fastest repeat
  (forward + backward) is reported with its breakdown. Time inside a network is measured in
  the step itself with hooks on every call: forward = forward pre-hook to forward hook;
  backward = from the hook on the call's output gradient (run just before the engine starts
  the call's backward nodes) to a post-hook on the call's first-created node (the last one the
  engine runs). The autograd engine runs the nodes of a device in decreasing creation order,
  so a call's backward nodes run back to back and nothing else falls inside the interval.
  With a CUDA device every hook synchronises first. "3D nets" = root_net's and pose_net's
  V2V; "2D nets" = attn_net_2d and heatmap_net_2d (when the model has them); "other" =
  total - 3D nets - 2D nets (voxel projection, heatmap rendering, matching, losses,
  autograd bookkeeping).
- FLOPs: every recorded network call is replayed on a copy of the network, with an input of
  the same shape, under ``torch.utils.flop_counter.FlopCounterMode`` (forward, plus backward
  where the step ran one). GFLOP/s = 3D-net FLOPs / 3D-net time.
- Matmul peak: the best float32 GFLOP/s of n x n matmuls, n in {1024, 2048, 4096}, several
  repeats, same thread count, measured before and after the steps; the maximum is the peak.
- Memory: each version runs one step alone in a fresh subprocess on the same saved inputs;
  "peak RSS" is that process's peak resident set (VmHWM: Python, torch, model and step
  together) and "step RSS" is it minus the resident set just before the step.

Shape legend: B samples, V views, J joints, P pseudo people, K proposals, N voxels,
(h, w) heatmap px.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from selfpose3d.config import Config, config_from_dict, config_to_dict, load_config
from selfpose3d.data.batches import GT_MIN_VISIBILITY, Batch, iterate_batches, make_batch
from selfpose3d.data.panoptic import MultiViewFrame
from selfpose3d.data.synthetic.rigs import build_rig
from selfpose3d.models.model import SelfPose3dModel, build_model
from selfpose3d.models.voxel import CameraBatch, inside_image, project_to_views, voxel_grid
from selfpose3d.skeleton import NUM_JOINTS, ROOT_INDEX, STANDING_POSE
from selfpose3d.training.schedule import set_trainable
from selfpose3d.training.steps import STAGES, batch_spec, pose_step

VERSIONS = ("a1", "a2")  # the two augmentations of the pose stage
Losses = dict[str, torch.Tensor]

# -- inputs -------------------------------------------------------------------------------


@dataclass
class Inputs:
    """Everything both versions see; saved to disk for the memory subprocesses."""

    cfg: Config
    state: dict[str, torch.Tensor]  # model weights
    batch: Batch  # GT withheld
    proposals: torch.Tensor  # (B, K, 5) fixed proposals: x, y, z mm, score, flag
    epoch: int


def synthetic_frame(cfg: Config, people: int, seed: int, images: bool) -> MultiViewFrame:
    """The preset's rig with ``people`` template skeletons placed at random in its capture
    space; pseudo labels are their noisy projections, images (if wanted) random noise."""
    rng = np.random.default_rng(seed)
    rig = build_rig(cfg.synth.rig)
    cams = rig.cameras
    if cfg.data.image_width:  # ingest rescales the cameras to the stored image size
        cams = [c.scaled(cfg.data.image_width / c.width, cfg.data.image_height / c.height)
                for c in cams]  # fmt: skip
    roots: list[np.ndarray] = []
    for _ in range(1000):  # rejection sampling keeps people >= 600 mm apart, if it can
        xy = rig.space_center[:2] + rng.uniform(-0.35, 0.35, 2) * rig.space_size[:2]
        if all(np.linalg.norm(xy - r) > 600 for r in roots):
            roots.append(xy)
        if len(roots) == people:
            break
    if len(roots) < people:
        raise ValueError(f"cannot place {people} people 600 mm apart in the capture space")
    poses = []
    for xy in roots:
        a = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        jitter = rng.normal(0, 20, STANDING_POSE.shape)
        poses.append((STANDING_POSE + jitter) @ rot.T + np.array([xy[0], xy[1], 0.0]))
    gt = np.stack(poses)  # (P, J, 3)
    pseudo, encoded = [], []
    for cam in cams:
        uv = cam.project(gt) + rng.normal(0, 1.5, (people, NUM_JOINTS, 2))  # (P, J, 2)
        depth = (gt @ cam.R.T + cam.t)[..., 2]
        seen = (depth > 0) & (uv >= 0).all(-1) & (uv < [cam.width, cam.height]).all(-1)
        conf = np.where(seen, rng.uniform(0.3, 1.0, seen.shape), 0.0)
        pseudo.append(np.concatenate([uv, conf[..., None]], -1).astype(np.float32))
        if images:
            noise = rng.integers(0, 256, (cam.height, cam.width, 3), dtype=np.uint8)
            encoded.append(cv2.imencode(".jpg", noise)[1].tobytes())
    gt_poses = np.concatenate([gt, np.ones((people, NUM_JOINTS, 1))], -1).astype(np.float32)
    return MultiViewFrame(sequence="synthetic", frame=seed, cameras=cams,
                          images=encoded if images else None, image_paths=[""] * len(cams),
                          pseudo_poses=pseudo, gt_poses=gt_poses,
                          gt_ids=np.arange(people))  # fmt: skip


def data_frames(data: Path, people: int) -> list[MultiViewFrame]:
    """The train frames of an ingested dataset with at least ``people`` GT roots."""
    from selfpose3d.training.evaluate import load_frames  # reads Parquet; not needed otherwise

    frames = [f for f in load_frames(data, "train") if f.gt_poses is not None
              and (f.gt_poses[:, ROOT_INDEX, 3] > GT_MIN_VISIBILITY).sum() >= people]  # fmt: skip
    if not frames:
        raise ValueError(f"{data}: no train frame has {people} people with a visible GT root")
    return frames


def fixed_proposals(batch: Batch, people: int, max_people: int) -> torch.Tensor:
    """(B, K, 5): the first ``people`` GT roots of each sample flagged as people, score 1."""
    if people > max_people:
        raise ValueError(f"--people {people} > model.max_people {max_people}")
    gt = batch.gt
    if gt is None:
        raise ValueError("fixed proposals sit at the GT roots; this data has no 3D GT")
    out = torch.zeros(batch.size, max_people, 5)
    for b in range(batch.size):
        roots = gt.poses[b, gt.visible[b, :, ROOT_INDEX], ROOT_INDEX][:people]  # (P, 3)
        if len(roots) < people:
            raise ValueError(f"sample {batch.keys[b]} has only {len(roots)} GT roots")
        out[b, :people, :3] = roots
        out[b, :people, 3:] = 1.0
    return out


def build_inputs(cfg: Config, people: int, batch_size: int, seed: int, epoch: int,
                 data: Path | None) -> Inputs:  # fmt: skip
    spec = batch_spec("pose", cfg.model, cfg.train)
    if data is None:
        frames = [synthetic_frame(cfg, people, seed + b, spec.images) for b in range(batch_size)]
        batch = make_batch(frames, spec, np.random.default_rng(seed))
    else:
        frames = data_frames(data, people)
        batch = next(iterate_batches(frames, batch_size, np.random.default_rng(seed), spec))
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    proposals = fixed_proposals(batch, people, cfg.model.max_people)
    return Inputs(cfg=cfg, state=model.state_dict(), batch=batch.without_gt(),
                  proposals=proposals, epoch=epoch)  # fmt: skip


def prepare_model(inputs: Inputs, device: torch.device, frozen_bn: bool = True
                  ) -> SelfPose3dModel:  # fmt: skip
    """The model in the pose stage's trainable state; BatchNorm on running statistics."""
    model = build_model(inputs.cfg.model)
    model.load_state_dict(inputs.state)
    model.to(device)
    set_trainable(model, STAGES["pose"].modules(model, inputs.cfg.train))
    if frozen_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    return model


# -- the vectorised step ------------------------------------------------------------------


def vectorised_step(model: SelfPose3dModel, batch: Batch, inputs: Inputs
                    ) -> tuple[Losses, torch.Tensor]:  # fmt: skip
    """``pose_step`` with root_net's proposals replaced by the fixed ones; returns the losses
    and root_net's cube (B, X, Y, Z)."""
    proposals = inputs.proposals.to(batch.cameras.K.device)
    seen: dict[str, torch.Tensor] = {}

    def fixed(cubes: torch.Tensor) -> torch.Tensor:
        # root_net still runs (its cost is part of the step, and its cube is compared); only
        # its proposals are replaced.
        seen["cubes"] = cubes
        return proposals

    root_net = model.root_net
    root_net.propose = fixed  # an instance attribute shadows the method for this call only
    try:
        out = pose_step(model, batch, inputs.cfg.train, inputs.epoch)
    finally:
        del root_net.propose
    return out, seen["cubes"]


# -- the loop version ---------------------------------------------------------------------


def _affine(points: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """points (N, 2) px, A (2, 3) -> (N, 2) px."""
    return points @ A[:, :2].T + A[:, 2]


def _gaussians(points: torch.Tensor, weights: torch.Tensor, size: tuple[int, int],
               sigma: float) -> torch.Tensor:  # fmt: skip
    """One person's Gaussians: points (J, 2) heatmap px, weights (J,) -> (J, h, w); joints of
    weight 0 or with a non-finite coordinate draw nothing (and pass no gradient)."""
    w, h = size
    weights = weights.to(points.dtype)
    ok = (weights != 0) & torch.isfinite(points).all(-1)
    safe = torch.where(ok[:, None], points, torch.zeros_like(points))
    xs = torch.arange(w, dtype=points.dtype, device=points.device)
    ys = torch.arange(h, dtype=points.dtype, device=points.device)
    d2 = (xs - safe[:, 0:1])[:, None, :] ** 2 + (ys - safe[:, 1:2])[:, :, None] ** 2
    return torch.exp(-d2 / (2 * sigma**2)) * (ok * weights)[:, None, None]


def _pseudo_heatmap(joints: torch.Tensor, weights: torch.Tensor, A: torch.Tensor,
                    size: tuple[int, int], sigma: float) -> torch.Tensor:  # fmt: skip
    """One view: joints (P, J, 2) original px, weights (P, J) -> (J, h, w), max over people."""
    out = joints.new_zeros(joints.shape[1], size[1], size[0])
    for p in range(joints.shape[0]):
        out = torch.maximum(out, _gaussians(_affine(joints[p], A), weights[p], size, sigma))
    return out


def _sample_view(heatmap: torch.Tensor, uv: torch.Tensor, valid: torch.Tensor, A: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Bilinear samples of one view: heatmap (C, h, w), uv (N, 2) original px, valid (N,),
    A (2, 3) -> samples (C, N) (0 where not seen) and the view's mask (N,)."""
    h, w = heatmap.shape[-2:]
    px = _affine(uv, A)
    wh = px.new_tensor([float(w), float(h)])
    valid = valid & ((px >= -0.5) & (px <= wh - 0.5)).all(-1)
    grid = torch.where(valid[:, None], px * (2.0 / (wh - 1)) - 1.0, torch.zeros_like(px))
    samples = F.grid_sample(heatmap[None], grid[None, None], mode="bilinear",
                            padding_mode="border", align_corners=True)[0, :, 0]  # fmt: skip
    return samples * valid.to(samples.dtype), valid


def _cube(heatmaps: list[torch.Tensor], points: torch.Tensor, cams: CameraBatch,
          affines: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Mean over the views that see each point: heatmaps V x (C, h, w), points (N, 3) mm,
    cams of one sample (1, V), affines (V, 2, 3) -> (C, N) in [0, 1]."""
    total = heatmaps[0].new_zeros(heatmaps[0].shape[0], points.shape[0])
    count = heatmaps[0].new_zeros(points.shape[0])
    for v, heatmap in enumerate(heatmaps):
        uv, seen = project_to_views(points[None], cams[:, v : v + 1])  # (1, 1, N, 2)
        samples, valid = _sample_view(heatmap, uv[0, 0], seen[0, 0], affines[v])
        total = total + samples
        count = count + valid.to(total.dtype)
    return (total / count.clamp(min=1.0)).clamp(0.0, 1.0)


def _input_heatmaps(model: SelfPose3dModel, batch: Batch, name: str) -> list[list[torch.Tensor]]:
    """[b][v] (J, h, w): the 2D net view by view, or pseudo heatmaps person by person."""
    mcfg, versions = model.cfg, batch.view(name)
    b_size, v_size = versions.affines.shape[:2]
    if mcfg.input_mode == "images":
        per_view = [model.heatmap_net_2d(versions.images[:, v]) for v in range(v_size)]
        return [[per_view[v][b] for v in range(v_size)] for b in range(b_size)]
    soft = batch.pseudo.weights("soft", 1.0)
    size = tuple(mcfg.heatmap_size)
    return [[_pseudo_heatmap(batch.pseudo.joints[b, v], soft[b, v], versions.affines[b, v], size,
                             mcfg.heatmap_sigma) for v in range(v_size)]
            for b in range(b_size)]  # fmt: skip


def _person_pose(model: SelfPose3dModel, heatmaps: list[torch.Tensor], root: torch.Tensor,
                 offsets: torch.Tensor, cams: CameraBatch, affines: torch.Tensor
                 ) -> torch.Tensor:  # fmt: skip
    """pose_net on one person: heatmaps V x (J, h, w), root (3,) mm, the pose cube's voxel
    centres relative to the root (N, 3) mm -> joints (J, 3) mm."""
    net = model.pose_net
    cube = _cube(heatmaps, root + offsets, cams, affines)  # (J, N)
    out = net.v2v(cube.reshape(1, -1, *net.bins))  # batch 1
    return root + torch.softmax(net.beta * out.flatten(2)[0], dim=-1) @ offsets


def _match_cost(pred: torch.Tensor, seen: torch.Tensor, target: torch.Tensor,
                visible: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # fmt: skip
    """One pair: pred (J, 2), seen (J,), target (J, 2), visible (J,) -> mean over the J x 2
    coordinates of |pred - target| / size, masked joints counting 0."""
    pred = torch.where(torch.isfinite(pred), pred, torch.zeros_like(pred))
    vis = visible * seen.to(pred.dtype)
    diff = (pred - target).abs() / pred.new_tensor([float(size[0]), float(size[1])])
    mask = (vis > 0)[:, None].expand_as(diff)
    return torch.where(mask, diff * vis[:, None], torch.zeros_like(diff)).mean()


def loop_pose_step(model: SelfPose3dModel, batch: Batch, inputs: Inputs
                   ) -> tuple[Losses, torch.Tensor]:  # fmt: skip
    """The pose step, one augmentation / sample / view / person at a time; returns the losses
    and root_net's cube (B, X, Y, Z)."""
    mcfg, cfg = model.cfg, inputs.cfg.train
    size, sigma = (int(mcfg.heatmap_size[0]), int(mcfg.heatmap_size[1])), mcfg.heatmap_sigma
    cams, b_size, v_size = batch.cameras, batch.size, batch.cameras.num_views
    proposals = inputs.proposals.to(cams.K.device)

    with torch.no_grad():  # root_net on A3, per sample, its space projected view by view
        h3 = _input_heatmaps(model, batch, "a3")
        points = voxel_grid(mcfg.space_center, mcfg.space_size, mcfg.root_bins,
                            device=cams.K.device)  # fmt: skip
        cubes = []
        for b in range(b_size):
            roots = [h[ROOT_INDEX : ROOT_INDEX + 1] for h in h3[b]]
            cube = _cube(roots, points, cams[b : b + 1], batch.view("a3").affines[b])
            cubes.append(model.root_net.v2v(cube.reshape(1, 1, *mcfg.root_bins))[:, 0])
        root_cubes = torch.cat(cubes)
    people = [[k for k in range(proposals.shape[1]) if proposals[b, k, 4] > 0.5]
              for b in range(b_size)]  # fmt: skip

    heatmaps = {n: _input_heatmaps(model, batch, n) for n in VERSIONS}
    offsets = voxel_grid(mcfg.pose_cube_offset, mcfg.pose_cube_size, mcfg.pose_bins,
                         device=cams.K.device)  # fmt: skip
    poses = {n: [{k: _person_pose(model, heatmaps[n][b], proposals[b, k, :3], offsets,
                                  cams[b : b + 1], batch.view(n).affines[b]) for k in people[b]}
                 for b in range(b_size)] for n in VERSIONS}  # fmt: skip
    label_w = batch.pseudo.weights("soft", cfg.hard_label_threshold)
    targets = {n: [[_pseudo_heatmap(batch.pseudo.joints[b, v], label_w[b, v],
                                    batch.view(n).affines[b, v], size, sigma)
                    for v in range(v_size)] for b in range(b_size)] for n in VERSIONS}  # fmt: skip
    attention = None
    if model.attn_net_2d is not None:
        attention = {n: [model.attn_net_2d(batch.view(n).images[:, v]) for v in range(v_size)]
                     for n in VERSIONS}  # fmt: skip
    use_l1 = inputs.epoch >= cfg.l1_from_epoch and cfg.l1_weight > 0
    numel = v_size * NUM_JOINTS * size[0] * size[1]  # heatmap elements of one sample

    reproj, l1_terms = [], []
    for target, source in (("a1", "a2"), ("a2", "a1")):  # each version's poses drawn in the other
        per_sample, has = [], []
        for b in range(b_size):
            err = 0.0
            for v in range(v_size):
                A = batch.view(target).affines[b, v]
                rendered = targets[target][b][v].new_zeros(NUM_JOINTS, size[1], size[0])
                projected = {}
                cam = cams[b : b + 1, v : v + 1]
                for k, pose in poses[source][b].items():
                    uv, faithful = project_to_views(pose[None], cam, within_image=False)
                    seen = faithful & inside_image(uv, cam.size)
                    projected[k] = (_affine(uv[0, 0], A), seen[0, 0], faithful[0, 0])
                    rendered = rendered + _gaussians(*projected[k][:2], size, sigma)
                e = (rendered.clamp(max=1.0) - targets[target][b][v]).square()
                if attention is not None:
                    e = e * attention[target][v][b]
                err = err + e.sum()
                if use_l1:
                    l1_terms.append(_view_l1_term(batch, b, v, A, projected, label_w, size))
            per_sample.append(err / numel)
            has.append(float(bool(people[b])))
        reproj.append(sum(p * h for p, h in zip(per_sample, has, strict=True))
                      / max(sum(has), 1.0))  # fmt: skip
    out: Losses = {"loss_reproj": reproj[0] + reproj[1]}
    if attention is not None:
        sq = sum((a - 1.0).square().sum() for n in VERSIONS for a in attention[n])
        out["loss_attention"] = cfg.attention_weight * 2 * sq / (2 * b_size * numel)
    if use_l1:
        half = len(l1_terms) // 2  # the A1-target terms, then the A2-target ones
        out["loss_l1"] = cfg.l1_weight * (_drop_worst_mean(l1_terms[:half])
                                          + _drop_worst_mean(l1_terms[half:]))  # fmt: skip
    if (
        cfg.pose_heatmap_weight > 0
        and model.heatmap_net_2d is not None
        and any(p.requires_grad for p in model.heatmap_net_2d.parameters())
    ):
        sq = sum((heatmaps[n][b][v] - targets[n][b][v]).square().sum()
                 for n in VERSIONS for b in range(b_size) for v in range(v_size))  # fmt: skip
        out["loss_2d"] = cfg.pose_heatmap_weight * sq / (2 * b_size * numel)
    out["loss"] = sum(out.values())
    out["people"] = torch.tensor(sum(map(len, people)) / b_size)
    return out, root_cubes


def _view_l1_term(batch: Batch, b: int, v: int, A: torch.Tensor,
                  projected: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                  label_w: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # fmt: skip
    """The Hungarian L1 term of one (sample, view): the sum of the matched pair costs between
    the projected people and the pseudo people with a visible joint inside the heatmap."""
    pseudo, visible = [], []
    for q in range(batch.pseudo.joints.shape[2]):
        pts = _affine(batch.pseudo.joints[b, v, q], A)
        inside = ((pts >= -0.5) & (pts <= pts.new_tensor(size) - 0.5)).all(-1)
        if (label_w[b, v, q] * inside).bool().any():
            pseudo.append(pts)
            visible.append(label_w[b, v, q] * inside)
    if not projected or not pseudo:
        return A.new_zeros(())
    cost = [[_match_cost(pred, faithful, t, vis, size)
             for t, vis in zip(pseudo, visible, strict=True)]
            for pred, _, faithful in projected.values()]  # fmt: skip
    rows, cols = linear_sum_assignment([[float(c.detach()) for c in row] for row in cost])
    return sum(cost[r][c] for r, c in zip(rows, cols, strict=True))


def _drop_worst_mean(terms: list[torch.Tensor]) -> torch.Tensor:
    if len(terms) <= 1:
        return sum(terms)
    worst = max(range(len(terms)), key=lambda i: float(terms[i].detach()))
    return sum(t for i, t in enumerate(terms) if i != worst) / (len(terms) - 1)


# -- checks -------------------------------------------------------------------------------

StepFn = Callable[[SelfPose3dModel, Batch, Inputs], tuple[Losses, torch.Tensor]]


def run_once(step: StepFn, model: SelfPose3dModel, inputs: Inputs, batch: Batch | None = None
             ) -> tuple[Losses, torch.Tensor, dict[str, torch.Tensor | None]]:  # fmt: skip
    """One forward + backward from zeroed gradients: losses, root cube, parameter grads."""
    model.zero_grad(set_to_none=True)
    out, cubes = step(model, inputs.batch if batch is None else batch, inputs)
    out["loss"].backward()
    grads = {n: None if p.grad is None else p.grad.clone()
             for n, p in model.named_parameters() if p.requires_grad}  # fmt: skip
    return {k: v.detach() for k, v in out.items()}, cubes.detach(), grads


# Gradients that are exactly 0 in exact arithmetic: the soft-argmax is invariant to adding a
# constant to a joint's output cube, so both versions hold only rounding noise there.
SHIFT_INVARIANT = ("pose_net.v2v.output_layer.bias",)


def _close(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float,
           scale: float | None = None, floor: float = 0.0) -> None:  # fmt: skip
    # An absolute tolerance relative to the tensor's scale: the sums behind a gradient differ
    # in order between the versions, so tiny elements next to large ones differ relatively.
    # ``floor``: float32 rounding of the whole backward pass, for tensors that are all noise.
    if scale is None:
        scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=max(rtol * scale, floor),
                               msg=lambda m: f"{name}: {m}")  # fmt: skip


def assert_same(vec: tuple, loop: tuple, rtol: float = 1e-4, grad_rtol: float = 1e-3) -> None:
    """The two versions' ``run_once`` results agree: losses, root cubes and every gradient
    (a shift-invariant one only up to its module's largest gradient)."""
    (out_v, cubes_v, grads_v), (out_l, cubes_l, grads_l) = vec, loop
    if set(out_v) != set(out_l):
        raise AssertionError(f"loss names differ: {sorted(out_v)} vs {sorted(out_l)}")
    for k in out_v:
        _close(k, out_l[k], out_v[k].to(out_l[k].dtype), rtol)
    _close("root cubes", cubes_l, cubes_v, rtol)
    # Gradients a million times smaller than the largest one are float32 rounding noise.
    floor = 1e-6 * max((float(g.abs().max()) for g in grads_v.values() if g is not None),
                       default=0.0)  # fmt: skip
    for name, g in grads_v.items():
        if (g is None) != (grads_l[name] is None):
            raise AssertionError(f"grad of {name}: present in only one version")
        if g is None:
            continue
        scale = None
        if name in SHIFT_INVARIANT:
            module = name.split(".")[0]
            scale = max(float(x.abs().max()) for n, x in grads_v.items()
                        if x is not None and n.split(".")[0] == module)  # fmt: skip
        _close(f"grad of {name}", grads_l[name], g, grad_rtol, scale, floor)


# -- timing -------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Call:
    """One network call of a step, enough to replay it for its FLOPs."""

    group: str
    module: nn.Module
    shape: tuple[int, ...]
    input_grad: bool
    backward: bool


def _last_backward_node(output: torch.Tensor, x: torch.Tensor) -> torch.autograd.graph.Node:
    """The node of a module's call that the backward pass runs last: the one created first.

    Walks the graph from ``output`` back to the call's input ``x`` (not included) and the
    parameters' AccumulateGrad nodes, the only ways out of a module that uses no other
    tensor needing a gradient (the V2V and ResNet nets)."""
    stop = x.grad_fn._sequence_nr() if x.grad_fn is not None else -1
    first, stack, seen = output.grad_fn, [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or type(node).__name__ == "AccumulateGrad":
            continue
        nr = node._sequence_nr()
        if nr <= stop or nr in seen:
            continue
        seen.add(nr)
        first = node if nr < first._sequence_nr() else first
        stack.extend(f for f, _ in node.next_functions)
    return first


@dataclass
class NetTimer:
    """Seconds spent inside groups of modules during a step (see the module docstring).

    Backward: a hook on the call's output gradient (run just before the output's node)
    starts the interval, a hook after the call's first-created node ends it. Hooks on the
    parameters could not: a parameter used by several calls accumulates its gradient once,
    after the last of them.
    """

    groups: dict[str, list[nn.Module]]
    device: torch.device
    calls: list[Call] = field(default_factory=list)
    forward_s: dict[str, float] = field(default_factory=dict)
    backward_records: list[list] = field(default_factory=list)  # per call: [group, start, end]
    _handles: list = field(default_factory=list)
    _t0: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._group = {id(m): g for g, ms in self.groups.items() for m in ms}
        for m in (m for ms in self.groups.values() for m in ms):
            self._handles.append(m.register_forward_pre_hook(self._pre))
            self._handles.append(m.register_forward_hook(self._post))

    def _now(self) -> float:
        _sync(self.device)
        return time.perf_counter()

    def _pre(self, module: nn.Module, args: tuple) -> None:
        self._t0[id(module)] = self._now()

    def _post(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        group, x = self._group[id(module)], args[0]
        self.forward_s[group] = self.forward_s.get(group, 0.0) + self._now() - self._t0[id(module)]
        self.calls.append(Call(group, module, tuple(x.shape), x.requires_grad,
                               output.requires_grad))  # fmt: skip
        if output.requires_grad:
            record = [group, None, None]
            self.backward_records.append(record)
            output.register_hook(lambda g: record.__setitem__(1, self._now()))
            last = _last_backward_node(output, x)
            last.register_hook(lambda gi, go: record.__setitem__(2, self._now()))

    def reset(self) -> None:
        self.calls, self.forward_s, self.backward_records = [], {}, []

    def seconds(self, group: str) -> float:
        backward = sum(end - start for g, start, end in self.backward_records
                       if g == group and start is not None and end is not None)  # fmt: skip
        return self.forward_s.get(group, 0.0) + backward

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def network_groups(model: SelfPose3dModel) -> dict[str, list[nn.Module]]:
    two_d = [m for m in (model.attn_net_2d, model.heatmap_net_2d) if m is not None]
    return {"3d": [model.root_net.v2v, model.pose_net.v2v], "2d": two_d}


@dataclass
class Timing:
    total: float  # s, forward + backward
    nets3d: float
    nets2d: float
    flops3d: int = 0

    @property
    def other(self) -> float:
        return self.total - self.nets3d - self.nets2d


def timed_step(step: StepFn, model: SelfPose3dModel, inputs: Inputs, timer: NetTimer,
               device: torch.device) -> Timing:  # fmt: skip
    model.zero_grad(set_to_none=True)
    timer.reset()
    _sync(device)
    start = time.perf_counter()
    out, _ = step(model, inputs.batch, inputs)
    out["loss"].backward()
    _sync(device)
    total = time.perf_counter() - start
    return Timing(total, timer.seconds("3d"), timer.seconds("2d"))


def call_flops(calls: list[Call], device: torch.device) -> dict[str, int]:
    """FLOPs per group of the recorded calls, replayed on copies of the networks."""
    out: dict[str, int] = {}
    cache: dict[tuple, int] = {}
    for c in calls:
        if c.group != "3d":  # only the 3D nets' rate is reported
            continue
        key = (id(c.module), c.shape, c.input_grad, c.backward)
        if key not in cache:
            net = copy.deepcopy(c.module)  # the timer's hooks must be removed before this
            x = torch.zeros(c.shape, device=device, requires_grad=c.input_grad)
            counter = FlopCounterMode(display=False)
            with counter, torch.set_grad_enabled(c.backward):
                y = net(x)
                if c.backward:
                    y.backward(torch.ones_like(y))
            cache[key] = counter.get_total_flops()
        out[c.group] = out.get(c.group, 0) + cache[key]
    return out


def matmul_peak_gflops(device: torch.device, sizes: tuple[int, ...] = (1024, 2048, 4096),
                       repeats: int = 4) -> float:  # fmt: skip
    """Best float32 GFLOP/s of n x n matmuls over sizes and repeats (current thread count).

    Several sizes because the best one depends on the caches; the best run because other
    processes can only slow a run down."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        a @ b  # warm-up (allocation, packing buffers)
        for _ in range(repeats if n < 4096 else max(2, repeats // 2)):
            _sync(device)
            start = time.perf_counter()
            a @ b
            _sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


# -- memory (one version per fresh process) -----------------------------------------------


def _status_mb(key: str) -> float | None:
    """A field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident), MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _saved_types() -> list[type]:
    """The classes of a saved batch (those of ``selfpose3d.data.batches`` and its cameras):
    allowed by ``torch.load(weights_only=True)``, which refuses any other class."""
    from selfpose3d.data import batches

    own = [t for t in vars(batches).values()
           if isinstance(t, type) and t.__module__ == batches.__name__]  # fmt: skip
    return [CameraBatch, *own]


def memory_child(inputs_path: Path, version: str, device: torch.device) -> None:
    """Runs in a subprocess: one step of one version; prints its memory as JSON.

    The peak is VmHWM, the high-water mark of this process's own address space:
    ``ru_maxrss`` would not do, Linux carries it over from the parent across fork + exec.
    """
    with torch.serialization.safe_globals(_saved_types()):
        saved = torch.load(inputs_path, weights_only=True)
    inputs = Inputs(**saved | {"cfg": config_from_dict(saved["cfg"], str(inputs_path))})
    inputs.batch = inputs.batch.to(device)
    model = prepare_model(inputs, device)
    before = _status_mb("VmRSS")
    run_once(STEPS[version], model, inputs)
    peak = _status_mb("VmHWM")
    if peak is None or before is None:  # no procfs: the best available, and no baseline
        peak, before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0.0
    if device.type == "cuda":  # the device's allocator peak is what matters there
        before, peak = 0.0, torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps({"peak_mb": peak, "step_mb": peak - before}))


def memory_of(inputs_path: Path, version: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--only", version, "--inputs", str(inputs_path),
           "--threads", str(torch.get_num_threads()), "--device", args.device]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"memory run of {version} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


STEPS: dict[str, StepFn] = {"vectorised": vectorised_step, "loop": loop_pose_step}


# -- main ---------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=Path("configs/cpu.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--people", type=int, default=3, help="proposals flagged as people")
    parser.add_argument("--batch-size", type=int, default=0, help="0 = train.pose.batch_size")
    parser.add_argument("--data", type=Path, help="ingested Parquet dataset with train/")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epoch", type=int, default=-1, help="-1 = train.l1_from_epoch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print, for each version, the N operators of its step "
                             "(forward + backward) with the most self CPU time, per step "
                             "(PyTorch profiler; its overhead inflates them a little)")  # fmt: skip
    parser.add_argument("--only", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.only:
        memory_child(args.inputs, args.only, device)
        return
    cfg = load_config(args.config, args.overrides)
    epoch = cfg.train.l1_from_epoch if args.epoch < 0 else args.epoch
    batch_size = args.batch_size or cfg.train.pose.batch_size
    inputs = build_inputs(cfg, args.people, batch_size, args.seed, epoch, args.data)
    inputs.batch = inputs.batch.to(device)
    peaks = [matmul_peak_gflops(device)]

    model = prepare_model(inputs, device)
    # The check doubles as the warm-up (allocations, kernel selection, projection cache).
    assert_same(run_once(vectorised_step, model, inputs), run_once(loop_pose_step, model, inputs))
    real = prepare_model(inputs, device, frozen_bn=False)  # batch-statistics BN, own copy
    run_once(vectorised_step, real, inputs)
    runs = {"vectorised": (vectorised_step, model), "loop": (loop_pose_step, model),
            "vectorised, BN train": (vectorised_step, real)}  # fmt: skip
    # One timer per model: the hooks of two timers on one module would record each other.
    timers = {id(m): NetTimer(network_groups(m), device) for m in (model, real)}
    timings: dict[str, list[Timing]] = {name: [] for name in runs}
    calls: dict[str, list[Call]] = {}
    for _ in range(args.repeats):
        for name, (step, m) in runs.items():
            timings[name].append(timed_step(step, m, inputs, timers[id(m)], device))
            calls[name] = list(timers[id(m)].calls)
    for timer in timers.values():  # the copies that count FLOPs must not carry the hooks
        timer.close()
    flops = {name: call_flops(c, device) for name, c in calls.items()}
    peaks.append(matmul_peak_gflops(device))
    peak = max(peaks)

    memory: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="step_time-") as tmp:
        path = Path(tmp) / "inputs.pt"
        # A plain dict: the child runs this file as __main__, a test imports it by another name.
        torch.save({"cfg": config_to_dict(cfg), "state": inputs.state,
                    "batch": inputs.batch.to("cpu"), "proposals": inputs.proposals,
                    "epoch": epoch}, path)  # fmt: skip
        for name in STEPS:  # one heavy process at a time
            memory[name] = memory_of(path, name, args)
    report(args, cfg, inputs, timings, flops, memory, peak, peaks)
    if args.profile:
        for name in STEPS:
            print()
            print(operator_profile(name, model, inputs, args.profile))


def operator_profile(name: str, model: SelfPose3dModel, inputs: Inputs, rows: int,
                     steps: int = 3) -> str:  # fmt: skip
    """The ``rows`` operators with the most self CPU time in the step of version ``name``
    (a key of ``STEPS``), ms per step (the networks' convolutions included: they are the top
    rows)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run_once(STEPS[name], model, inputs)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:rows]
    lines = [f"{f'operator ({name} step)':<40} {'self ms/step':>12} {'calls/step':>10}"]
    lines += [f"{e.key[:40]:<40} {e.self_cpu_time_total / 1000 / steps:>12.1f} "
              f"{e.count / steps:>10.1f}" for e in ops]  # fmt: skip
    return "\n".join(lines)


def report(args: argparse.Namespace, cfg: Config, inputs: Inputs,
           timings: dict[str, list[Timing]], flops: dict[str, dict[str, int]],
           memory: dict[str, dict[str, float]], peak: float,
           peaks: list[float]) -> None:  # fmt: skip
    m, t, b = cfg.model, cfg.train, inputs.batch
    print(f"pose step: B={b.size} V={b.cameras.num_views} people={args.people} x 2 "
          f"augmentations, input_mode={m.input_mode}, attention={m.use_attention}, "
          f"pose cube {'x'.join(map(str, m.pose_bins))}, root {'x'.join(map(str, m.root_bins))}, "
          f"v2v width {m.v2v_width}, channels_last={m.v2v_channels_last}, epoch {inputs.epoch} "
          f"(L1 {'on' if inputs.epoch >= t.l1_from_epoch and t.l1_weight > 0 else 'off'}), "
          f"data: {args.data or 'synthetic'}")  # fmt: skip
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
        f"float32 matmul peak {peak:.1f} GFLOP/s (before/after: "
        f"{', '.join(f'{p:.0f}' for p in peaks)}); fastest of {args.repeats} repeats"
    )
    print("losses, root cubes and gradients of the loop version equal the vectorised ones")
    names = ("version", "total ms", "3D nets ms", "2D nets ms", "other ms", "3D GFLOP",
             "GFLOP/s", "% peak", "peak RSS MB", "step RSS MB")  # fmt: skip
    fmt = "{:<21}" + " {:>10}" * (len(names) - 1)
    print(fmt.format(*names))
    print("-" * (21 + 11 * (len(names) - 1)))
    best = {k: min(v, key=lambda t: t.total) for k, v in timings.items()}
    for name, t in best.items():
        rate = flops[name].get("3d", 0) / t.nets3d / 1e9 if t.nets3d else 0.0
        mem = memory.get(name)
        print(fmt.format(name, f"{t.total * 1e3:.0f}", f"{t.nets3d * 1e3:.0f}",
                         f"{t.nets2d * 1e3:.0f}", f"{t.other * 1e3:.0f}",
                         f"{flops[name].get('3d', 0) / 1e9:.1f}", f"{rate:.1f}",
                         f"{100 * rate / peak:.0f}%", f"{mem['peak_mb']:.0f}" if mem else "-",
                         f"{mem['step_mb']:.0f}" if mem else "-"))  # fmt: skip
    v, lp = best["vectorised"], best["loop"]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.1f}x" if b > 0 else "-"

    rate_v = flops["vectorised"].get("3d", 0) / v.nets3d if v.nets3d else 0.0
    rate_l = flops["loop"].get("3d", 0) / lp.nets3d if lp.nets3d else 0.0
    mv, ml = memory["vectorised"], memory["loop"]
    print(fmt.format("speed-up (loop / vec)", ratio(lp.total, v.total), ratio(lp.nets3d, v.nets3d),
                     ratio(lp.nets2d, v.nets2d), ratio(lp.other, v.other), "",
                     ratio(rate_v, rate_l), "", ratio(ml["peak_mb"], mv["peak_mb"]),
                     ratio(ml["step_mb"], mv["step_mb"])))  # fmt: skip
    spread = {k: statistics.median(t.total for t in ts) * 1e3 for k, ts in timings.items()}
    print("median total ms: " + ", ".join(f"{k} {s:.0f}" for k, s in spread.items()))


if __name__ == "__main__":
    main()
