"""One training step per stage: ``(model, batch, cfg, epoch) -> dict[str, Tensor]`` (DESIGN §2.2).

Every step returns its named, weighted losses and their sum under ``"loss"`` (plus a few
detached diagnostics, e.g. ``"people"`` = proposals per sample); the loop only backpropagates
``"loss"``. The versions of a batch are stacked along the batch axis so that each network runs
once per step, whatever the number of versions.

:data:`STAGES` says, per stage, which batch versions and images the step needs, which modules
it trains, and whether it may see 3D ground truth: only ``supervised`` does; the loop hands
every other step a batch whose GT is withheld.

Shape legend: B samples, n versions, V views, K proposals, J joints, Q pseudo people,
(h, w) heatmap px, (X, Y, Z) root voxels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from selfpose3d import losses
from selfpose3d.data.batches import Batch, BatchSpec, Labels, VersionName, off_border
from selfpose3d.models.config import ModelConfig
from selfpose3d.models.heatmaps import render_cubes, render_heatmaps
from selfpose3d.models.model import SelfPose3dModel, apply_affine
from selfpose3d.models.voxel import CameraBatch, inside_image, project_to_views
from selfpose3d.skeleton import ROOT_INDEX
from selfpose3d.training.config import Stage, TrainConfig
from selfpose3d.training.synthetic_roots import root_heatmaps, sample_roots

StepFn = Callable[[SelfPose3dModel, Batch, TrainConfig, int], dict[str, torch.Tensor]]


# -- helpers: several versions of a batch stacked along the batch axis --------------------


def _cameras(batch: Batch, n: int) -> CameraBatch:
    return CameraBatch.cat([batch.cameras] * n) if n > 1 else batch.cameras


def _affines(batch: Batch, names: tuple[VersionName, ...]) -> torch.Tensor:
    return torch.cat([batch.view(n).affines for n in names])  # (n B, V, 2, 3)


def _images(batch: Batch, names: tuple[VersionName, ...]) -> torch.Tensor:
    views = [batch.view(n) for n in names]
    if any(v.images is None for v in views):
        raise ValueError(f"this step needs images of versions {names}; the batch was built "
                         f"without images")  # fmt: skip
    return torch.cat([v.images for v in views])  # (n B, V, 3, H, W)


def _pseudo_heatmaps(
    model: SelfPose3dModel, batch: Batch, names: tuple[VersionName, ...], weights: torch.Tensor
) -> torch.Tensor:
    """Heatmaps rendered from the pseudo poses in every version: (n B, V, J, h, w)."""
    n = len(names)
    joints = batch.pseudo.joints.repeat(n, 1, 1, 1, 1)
    return model.pseudo_heatmaps(joints, weights.repeat(n, 1, 1, 1), _affines(batch, names))


def _input_heatmaps(
    model: SelfPose3dModel, batch: Batch, names: tuple[VersionName, ...]
) -> torch.Tensor:
    """What the 3D nets see, per ``input_mode``: (n B, V, J, h, w). Pseudo heatmaps are the
    detector's output, so they use every detected joint (soft labels)."""
    if model.cfg.input_mode == "images":
        return model.heatmaps(_images(batch, names))
    soft = batch.pseudo.weights("soft", 1.0)
    return _pseudo_heatmaps(model, batch, names, soft)


def _root_heatmaps(
    model: SelfPose3dModel, batch: Batch, names: tuple[VersionName, ...]
) -> torch.Tensor:
    """The root channel of :func:`_input_heatmaps`, all root_net reads: (n B, V, 1, h, w).
    Pseudo heatmaps render that one joint only."""
    root = slice(ROOT_INDEX, ROOT_INDEX + 1)
    if model.cfg.input_mode == "images":
        return model.heatmaps(_images(batch, names))[:, :, root]
    n = len(names)
    joints = batch.pseudo.joints[..., root, :].repeat(n, 1, 1, 1, 1)
    soft = batch.pseudo.weights("soft", 1.0)[..., root].repeat(n, 1, 1, 1)
    return model.pseudo_heatmaps(joints, soft, _affines(batch, names))


def _trains(module: nn.Module | None) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


def _total(out: dict[str, torch.Tensor], diagnostics: tuple[str, ...] = ()) -> dict:
    out["loss"] = sum(v for k, v in out.items() if k not in diagnostics)
    return out


def project_poses(
    poses: torch.Tensor, cameras: CameraBatch, affines: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """poses (B, K, J, 3) mm -> (B, V, K, J, 2) heatmap px of every view and two (B, V, K, J)
    masks: ``seen``, the joints that project inside the original image, and ``faithful``, those
    whose pixel is a true projection wherever it falls (in front of the camera, inside the
    distortion's monotonic radius). A joint can only be drawn where it is seen, but it can be
    compared with a label wherever it is faithful: a prediction that leaves the picture is
    still wrong."""
    b, k, j = poses.shape[:3]
    uv, faithful = project_to_views(poses.reshape(b, k * j, 3), cameras, within_image=False)
    seen = faithful & inside_image(uv, cameras.size)
    points = apply_affine(uv, affines.to(uv.dtype))
    return tuple(x.reshape(b, -1, k, j, *x.shape[3:]) for x in (points, seen, faithful))


# -- the steps ----------------------------------------------------------------------------


def backbone_step(
    model: SelfPose3dModel, batch: Batch, cfg: TrainConfig, epoch: int
) -> dict[str, torch.Tensor]:
    """heatmap_net_2d against Gaussian heatmaps of the soft pseudo labels, every version."""
    names = tuple(n for n in ("a3", "a1", "a2") if n in batch.versions)
    heatmaps = model.heatmaps(_images(batch, names))
    targets = _pseudo_heatmaps(model, batch, names, batch.pseudo.weights("soft", 1.0))
    return _total({"loss_2d": losses.heatmap_mse(heatmaps, targets)})


def root_step(
    model: SelfPose3dModel, batch: Batch, cfg: TrainConfig, epoch: int
) -> dict[str, torch.Tensor]:
    """root_net on synthetic roots in every version (+ optional consistency on real views).

    The synthetic loss is summed over the versions, as in the reference implementation.
    """
    mcfg = model.cfg
    names: tuple[VersionName, ...] = ("a3",)
    if cfg.root_consistency_weight > 0:
        names = ("a3", "a1", "a2")
    n, b = len(names), batch.size
    cameras, affines = _cameras(batch, n), _affines(batch, names)
    roots, valid = sample_roots(
        n * b, mcfg.max_people, mcfg.space_center, mcfg.space_size,
        cfg.synthetic_root_margins, cfg.synthetic_root_z_jitter,
    )  # fmt: skip
    inputs = [root_heatmaps(roots, valid, cameras, affines, mcfg.heatmap_size,
                            mcfg.heatmap_sigma, cfg.synthetic_heatmap_noise)]  # fmt: skip
    if n > 1:
        with torch.no_grad():  # the 2D net is frozen here; only root_net learns
            real = _root_heatmaps(model, batch, names)
        inputs.append(real)
    both = len(inputs)
    cubes = model.root_cube(torch.cat(inputs), _cameras(batch, n * both),
                            affines.repeat(both, 1, 1, 1))  # fmt: skip
    target = render_cubes(roots, valid, model.root_net.axes(), cfg.root_target_sigma)
    out = {"loss_root_syn": cfg.synthetic_root_weight * n
           * losses.root_cube_mse(cubes[: n * b], target)}  # fmt: skip
    if n > 1:
        c3, c1, c2 = cubes[n * b :].reshape(n, b, *cubes.shape[1:])
        out["loss_root_consistency"] = cfg.root_consistency_weight * (
            losses.root_consistency_loss([c1, c2], c3)
        )
    return _total(out)


def pose_step(
    model: SelfPose3dModel,
    batch: Batch,
    cfg: TrainConfig,
    epoch: int,
    *,
    labels: Labels = "soft",
    l1_from_epoch: int | None = None,
) -> dict[str, torch.Tensor]:
    """Self-supervised pose_net: cross-augmentation reprojection with attention (+ L1).

    Proposals come from the frozen root_net on A3; pose_net regresses P1 from A1 and P2
    from A2 (one call); P2 is drawn into the A1 views and P1 into the A2 views and compared
    with the pseudo-label heatmaps there, weighted by the attention of those views. The two
    directions are summed (reference implementation).
    """
    mcfg = model.cfg
    b = batch.size
    names: tuple[VersionName, ...] = ("a1", "a2")
    with torch.no_grad():
        cubes = model.root_cube(_root_heatmaps(model, batch, ("a3",)), batch.cameras,
                                batch.view("a3").affines)  # fmt: skip
        proposals = model.root_net.propose(cubes)
    person = proposals[..., 4] > 0.5  # (B, K)
    cameras, affines = _cameras(batch, 2), _affines(batch, names)
    heatmaps = _input_heatmaps(model, batch, names)  # (2B, V, J, h, w)
    poses = model.poses(heatmaps, proposals, batch.cameras, affines)  # (2B, K, J, 3)
    # Row i of the target versions (A1 then A2) is compared with the other version's poses.
    crossed = torch.cat([poses[b:], poses[:b]])
    points, seen, faithful = project_poses(crossed, cameras, affines)  # (2B, V, K, J[, 2])
    person2 = person.repeat(2, 1)  # (2B, K)
    draw = seen & person2[:, None, :, None]

    label_w = batch.pseudo.weights(labels, cfg.hard_label_threshold)  # (B, V, Q, J)
    if labels == "soft" and mcfg.input_mode == "pseudo_heatmaps":
        targets = heatmaps  # the input heatmaps are the soft labels' heatmaps already
    else:
        targets = _pseudo_heatmaps(model, batch, names, label_w)  # (2B, V, J, h, w)
    attention = model.attention(_images(batch, names)) if model.attn_net_2d is not None else None
    per_sample = losses.reprojection_loss(points, draw, targets, mcfg.heatmap_sigma, attention)
    has = person.any(-1).to(per_sample.dtype).repeat(2).reshape(2, b)
    per_direction = (per_sample.reshape(2, b) * has).sum(1) / has.sum(1).clamp(min=1.0)
    out = {"loss_reproj": per_direction.sum()}
    if attention is not None:
        # Two equally sized versions: the sum of their two means is twice the joint mean.
        out["loss_attention"] = cfg.attention_weight * 2 * losses.attention_regularizer(attention)
    l1_from = cfg.l1_from_epoch if l1_from_epoch is None else l1_from_epoch
    if epoch >= l1_from and cfg.l1_weight > 0:
        w, h = mcfg.heatmap_size
        compared = label_w
        if cfg.l1_border_px > 0:  # border-parked labels say only "beyond this edge"
            size = batch.cameras.size[:, :, None, None]  # (B, V, 1, 1, 2)
            compared = compared * off_border(batch.pseudo.joints, size, cfg.l1_border_px)
        pseudo = apply_affine(batch.pseudo.joints.repeat(2, 1, 1, 1, 1), affines)
        inside = inside_image(pseudo, pseudo.new_tensor([w, h]))
        terms = losses.hungarian_l1_terms(
            points, person2[:, None].expand(-1, points.shape[1], -1), pseudo,
            compared.repeat(2, 1, 1, 1) * inside, (w, h), pred_visible=faithful,
        )  # fmt: skip
        out["loss_l1"] = cfg.l1_weight * losses.drop_worst_mean(terms.reshape(2, -1)).sum()
    if cfg.pose_heatmap_weight > 0 and _trains(model.heatmap_net_2d):
        out["loss_2d"] = cfg.pose_heatmap_weight * losses.heatmap_mse(heatmaps, targets)
    out["people"] = person.sum(-1).to(per_sample.dtype).mean()
    return _total(out, diagnostics=("people",))


finetune_step = functools.partial(pose_step, labels="hard", l1_from_epoch=0)
finetune_step.__doc__ = "The pose objective on hard pseudo labels, L1 from the first epoch."


def supervised_step(
    model: SelfPose3dModel, batch: Batch, cfg: TrainConfig, epoch: int
) -> dict[str, torch.Tensor]:
    """The VoxelPose baseline: 2D heatmaps of the projected GT, root cube from GT roots, and
    L1 to the GT joints of the proposals within ``supervised_match_radius`` of a GT root."""
    gt = batch.gt
    if gt is None:
        raise ValueError("the supervised stage needs 3D ground truth; this data has none")
    mcfg = model.cfg
    cams, affines = batch.cameras, batch.view("a3").affines
    heatmaps = _input_heatmaps(model, batch, ("a3",))
    out: dict[str, torch.Tensor] = {}
    if mcfg.input_mode == "images":
        points, seen, _ = project_poses(gt.poses, cams, affines)  # (B, V, G, J, 2)
        weights = (seen & gt.visible[:, None]).to(points.dtype)
        target = render_heatmaps(points, weights, mcfg.heatmap_size, mcfg.heatmap_sigma)
        out["loss_2d"] = losses.heatmap_mse(heatmaps, target)
    cubes, proposals = model.proposals(heatmaps, cams, affines)
    gt_roots, root_ok = gt.poses[:, :, ROOT_INDEX], gt.visible[:, :, ROOT_INDEX]
    target = render_cubes(gt_roots, root_ok, model.root_net.axes(), cfg.root_target_sigma)
    out["loss_root"] = losses.root_cube_mse(cubes, target)
    matched, index = losses.match_to_gt(proposals[..., :3], gt_roots, root_ok,
                                        cfg.supervised_match_radius)  # fmt: skip
    trained = proposals.clone()
    trained[..., 4] = matched.to(trained.dtype)
    poses = model.poses(heatmaps, trained, cams, affines)  # (B, K, J, 3)
    s, k = torch.nonzero(matched, as_tuple=True)
    g = index[s, k]
    out["loss_pose"] = losses.pose_l1(poses[s, k], gt.poses[s, g], gt.visible[s, g])
    out["matched"] = matched.sum(-1).to(cubes.dtype).mean()
    return _total(out, diagnostics=("matched",))


# -- what each stage needs ----------------------------------------------------------------


def _pose_modules(model: SelfPose3dModel, cfg: TrainConfig) -> list[nn.Module]:
    modules: list[nn.Module] = [model.pose_net]
    if model.attn_net_2d is not None:
        modules.append(model.attn_net_2d)
    if model.heatmap_net_2d is not None and cfg.train_heatmap_net_in_pose:
        modules.append(model.heatmap_net_2d)
    return modules


def _backbone_modules(model: SelfPose3dModel, cfg: TrainConfig) -> list[nn.Module]:
    if model.heatmap_net_2d is None:
        raise ValueError("the backbone stage trains heatmap_net_2d, which a model with "
                         "input_mode 'pseudo_heatmaps' does not have")  # fmt: skip
    return [model.heatmap_net_2d]


@dataclass(frozen=True)
class StageSpec:
    step: StepFn
    uses_gt: bool
    versions: Callable[[TrainConfig], tuple[VersionName, ...]]
    needs_images: Callable[[ModelConfig, TrainConfig], bool]
    modules: Callable[[SelfPose3dModel, TrainConfig], list[nn.Module]]


def _images_or_attention(m: ModelConfig, t: TrainConfig) -> bool:
    return m.input_mode == "images" or m.use_attention


STAGES: dict[Stage, StageSpec] = {
    # One un-augmented and one augmented version per frame (the reference uses all three).
    "backbone": StageSpec(backbone_step, False, lambda t: ("a3", "a1"), lambda m, t: True,
                          _backbone_modules),
    "root": StageSpec(root_step, False,
                      lambda t: ("a3", "a1", "a2") if t.root_consistency_weight > 0 else ("a3",),
                      lambda m, t: m.input_mode == "images" and t.root_consistency_weight > 0,
                      lambda model, t: [model.root_net]),
    "pose": StageSpec(pose_step, False, lambda t: ("a3", "a1", "a2"), _images_or_attention,
                      _pose_modules),
    "finetune": StageSpec(finetune_step, False, lambda t: ("a3", "a1", "a2"),
                          _images_or_attention, _pose_modules),
    "supervised": StageSpec(supervised_step, True, lambda t: ("a3",),
                            lambda m, t: m.input_mode == "images",
                            lambda model, t: [x for x in (model.heatmap_net_2d, model.root_net,
                                                          model.pose_net) if x is not None]),
}  # fmt: skip


def batch_spec(stage: Stage, model_cfg: ModelConfig, cfg: TrainConfig) -> BatchSpec:
    """What the batches of ``stage`` must hold."""
    spec = STAGES[stage]
    return BatchSpec.from_configs(model_cfg, cfg.augment, spec.versions(cfg),
                                  spec.needs_images(model_cfg, cfg))  # fmt: skip
