"""The step functions: named losses, which networks they train, GT never read, invariances."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from selfpose3d.data.batches import GroundTruth, iterate_batches, make_batch
from selfpose3d.models.model import build_model
from selfpose3d.skeleton import PANOPTIC15_JOINTS
from selfpose3d.training.config import TrainConfig
from selfpose3d.training.evaluate import load_trained_model, predict_batch
from selfpose3d.training.loop import train_stage
from selfpose3d.training.run import train
from selfpose3d.training.schedule import set_trainable
from selfpose3d.training.steps import STAGES, batch_spec, project_poses


def _batch(frames, stage, cfg, n=1, seed=0):
    return make_batch(frames[:n], batch_spec(stage, cfg.model, cfg.train),
                      np.random.default_rng(seed))  # fmt: skip


def _grads(module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_images_mode_steps_return_named_losses_and_train_their_networks(train_frames,
                                                                       make_config):  # fmt: skip
    cfg = make_config()
    torch.manual_seed(0)
    model = build_model(cfg.model)
    # Every proposal a person: an untrained root_net proposes nobody.
    torch.nn.init.constant_(model.root_net.v2v.output_layer.bias, 1.0)
    expected = {
        "backbone": ({"loss_2d"}, ["heatmap_net_2d"], ["root_net", "pose_net"]),
        "root": ({"loss_root_syn", "loss_root_consistency"}, ["root_net"],
                 ["heatmap_net_2d", "pose_net"]),
        "pose": ({"loss_reproj", "loss_attention", "loss_l1", "loss_2d", "people"},
                 ["pose_net", "attn_net_2d", "heatmap_net_2d"], ["root_net"]),
        "supervised": ({"loss_2d", "loss_root", "loss_pose", "matched"},
                       ["heatmap_net_2d", "root_net"], ["attn_net_2d"]),
    }  # fmt: skip
    for stage, (keys, trained, frozen) in expected.items():
        spec = STAGES[stage]
        set_trainable(model, spec.modules(model, cfg.train))
        model.zero_grad(set_to_none=True)
        batch = _batch(train_frames, stage, cfg)
        out = spec.step(model, batch if spec.uses_gt else batch.without_gt(), cfg.train, 0)
        assert set(out) == keys | {"loss"}, stage
        assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
        out["loss"].backward()
        for name in trained:
            assert _grads(getattr(model, name)), (stage, name)
        for name in frozen:
            assert not _grads(getattr(model, name)), (stage, name)


def test_only_the_supervised_stage_may_read_ground_truth(train_frames, make_config,
                                                         trained_root):  # fmt: skip
    assert [s for s, spec in STAGES.items() if spec.uses_gt] == ["supervised"]
    cfg = make_config(pseudo=True)
    model, _ = load_trained_model(trained_root)
    for stage in ("root", "pose", "finetune"):
        batch = _batch(train_frames, stage, cfg).without_gt()  # reading GT would raise
        out = STAGES[stage].step(model, batch, cfg.train, 0)
        assert torch.isfinite(out["loss"])
    with pytest.raises(RuntimeError, match="withheld"):
        STAGES["supervised"].step(model, _batch(train_frames, "supervised", cfg).without_gt(),
                                  cfg.train, 0)  # fmt: skip


def _train_pose(model, frames, cfg, corrupt_gt: bool):
    spec = batch_spec("pose", cfg.model, cfg.train)

    def batches(epoch, skip):
        for batch in iterate_batches(frames, 2, np.random.default_rng(epoch), spec, skip=skip,
                                     limit=3):  # fmt: skip
            if corrupt_gt:
                batch.gt = GroundTruth(
                    poses=torch.full_like(batch.gt.poses, torch.nan),
                    visible=torch.ones_like(batch.gt.visible),
                )
            yield batch

    return train_stage(model, "pose", cfg.train, batches, progress=False)


def test_self_supervised_training_is_identical_with_nan_ground_truth(train_frames, make_config,
                                                                     trained_root):  # fmt: skip
    cfg = make_config("train.l1_from_epoch=0", pseudo=True)
    clean, _ = load_trained_model(trained_root)
    nan, _ = load_trained_model(trained_root)
    m1 = _train_pose(clean, train_frames, cfg, corrupt_gt=False)
    m2 = _train_pose(nan, train_frames, cfg, corrupt_gt=True)
    timing = {"seconds_per_step", "samples_per_s"}
    assert m1["people"] > 0
    assert {k: v for k, v in m1.items() if k not in timing} == {
        k: v for k, v in m2.items() if k not in timing
    }
    for (name, a), b in zip(clean.state_dict().items(), nan.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    initial = load_trained_model(trained_root)[0].pose_net.state_dict()
    assert any(not torch.equal(v, initial[k]) for k, v in clean.pose_net.state_dict().items())


def test_permuting_the_cameras_leaves_predictions_unchanged(trained_pose, test_frames,
                                                           make_config):  # fmt: skip
    run, _ = trained_pose
    model, cfg = load_trained_model(run)
    batch = _batch(test_frames, "supervised", cfg, n=3)  # a3 only, no images needed
    out = predict_batch(model, batch)
    assert out.is_person.any()
    for perm in ([2, 0, 1], [1, 0, 2]):
        permuted = predict_batch(model, batch.select_views(perm))
        torch.testing.assert_close(permuted.proposals, out.proposals, atol=1e-3, rtol=0)
        torch.testing.assert_close(permuted.poses, out.poses, atol=0.01, rtol=0)  # mm


def test_the_supervised_baseline_gets_ground_truth_through_the_loop(tmp_path, smoke_data,
                                                                    make_config):  # fmt: skip
    cfg = make_config("train.max_steps_per_epoch=2", pseudo=True)
    rows: list[dict] = []
    summary = train(cfg, smoke_data, tmp_path / "run", stages=["supervised"],
                    report=rows.append, progress=False)  # fmt: skip
    assert summary["stages"] == ["supervised"] and len(rows) == 2
    assert all(np.isfinite(r["loss_root"]) and "loss_pose" in r for r in rows)


def test_a_batch_without_proposals_trains_nothing_but_does_not_fail(train_frames, make_config):
    cfg = make_config(pseudo=True)
    torch.manual_seed(0)
    model = build_model(cfg.model)  # an untrained root_net proposes nobody
    spec = batch_spec("pose", cfg.model, cfg.train)
    before = {k: v.clone() for k, v in model.pose_net.state_dict().items()}

    def batches(epoch, skip):
        return iterate_batches(train_frames, 1, np.random.default_rng(0), spec, limit=2)

    metrics = train_stage(model, "pose", cfg.train, batches, progress=False)
    assert metrics["people"] == 0 and metrics["loss"] == 0
    for k, v in model.pose_net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_non_finite_loss_stops_the_stage_naming_the_frames(train_frames, make_config,
                                                             monkeypatch):  # fmt: skip
    import dataclasses

    from selfpose3d.training import loop

    cfg = make_config(pseudo=True)
    model = build_model(cfg.model)
    nan_step = dataclasses.replace(STAGES["root"], step=lambda m, b, c, e: {
        "loss": torch.tensor(float("nan"), requires_grad=True)})  # fmt: skip
    monkeypatch.setitem(loop.STAGES, "root", nan_step)
    spec = batch_spec("root", cfg.model, cfg.train)

    def batches(epoch, skip):
        return iterate_batches(train_frames, 1, np.random.default_rng(0), spec, shuffle=False)

    key = f"{train_frames[0].sequence}', {train_frames[0].frame}"
    with pytest.raises(FloatingPointError, match=f"stage root, epoch 0, step 0: .*{key}"):
        train_stage(model, "root", cfg.train, batches, progress=False)


def test_a_non_finite_gradient_skips_the_update_and_is_counted(train_frames, make_config,
                                                               monkeypatch):  # fmt: skip
    import dataclasses

    from selfpose3d.training import loop

    cfg = make_config(pseudo=True)
    model = build_model(cfg.model)
    weight = next(model.root_net.parameters())

    def step(m, b, c, e):
        # sqrt at 0 is finite forward (0) and infinite backward: a finite loss, a NaN update.
        return {"loss": torch.sqrt((weight - weight.detach()).square().sum())}

    monkeypatch.setitem(loop.STAGES, "root", dataclasses.replace(STAGES["root"], step=step))
    spec = batch_spec("root", cfg.model, cfg.train)
    before = {k: v.clone() for k, v in model.root_net.state_dict().items()}

    def batches(epoch, skip):
        return iterate_batches(train_frames, 1, np.random.default_rng(0), spec, limit=2)

    with pytest.warns(RuntimeWarning, match="non-finite gradient, update skipped") as record:
        metrics = train_stage(model, "root", cfg.train, batches, progress=False)
    # The per-epoch schedule advancing after an epoch without an update is expected.
    assert not [w for w in record if "lr_scheduler" in str(w.message)]
    assert metrics["skipped_updates"] == metrics["step"] > 0  # every update was skipped
    for k, v in model.root_net.state_dict().items():
        assert torch.equal(v, before[k]), k


def _gt_in_every_slot(frames, cfg):
    """A model whose root_net flags every proposal slot as a person, a pose batch of the
    first frame, and its GT people repeated over the K slots (K, J, 3) mm, to stand in for
    pose_net's output."""
    torch.manual_seed(0)
    model = build_model(cfg.model)
    torch.nn.init.constant_(model.root_net.v2v.output_layer.bias, 1.0)
    batch = _batch(frames, "pose", cfg)
    gt = batch.gt.poses[0, : int(batch.gt.valid[0].sum())]  # (G, J, 3)
    return model, batch, gt[torch.arange(cfg.model.max_people) % len(gt)].clone()


def test_the_l1_term_pulls_back_a_joint_that_left_every_picture(train_frames, make_config):
    # A predicted ankle moved where no view sees it but every camera still projects it
    # faithfully (in front, inside the distortion's monotonic radius): the heatmap term
    # cannot draw it, but the L1 term must still compare it with its label.
    cfg = make_config("train.l1_from_epoch=0", pseudo=True)
    model, batch, base = _gt_in_every_slot(train_frames, cfg)
    ankle = PANOPTIC15_JOINTS.index("l_ankle")
    cams, affines = batch.cameras, batch.view("a1").affines
    for lift in (1000.0, 2000.0, 3000.0, 4000.0):
        moved = base.clone()
        moved[:, ankle, 2] += lift
        _, seen, faithful = project_poses(moved[None], cams, affines)
        if not seen[..., ankle].any() and faithful[..., ankle].all():
            break
    else:
        pytest.fail("no lift puts the ankle out of every view while projecting faithfully")
    pred = moved.requires_grad_(True)
    model.poses = lambda heatmaps, *args: pred.expand(heatmaps.shape[0], -1, -1, -1)
    out = STAGES["pose"].step(model, batch, cfg.train, epoch=0)
    (grad,) = torch.autograd.grad(out["loss_l1"], pred, retain_graph=True)
    assert grad[:, ankle].abs().sum() > 0  # pulled back, though no view sees it
    (grad,) = torch.autograd.grad(out["loss_reproj"], pred, allow_unused=True)
    assert grad is None or grad[:, ankle].abs().sum() == 0  # it cannot be drawn anywhere


def test_l1_border_px_leaves_border_parked_labels_out_of_the_l1_term(train_frames, make_config):
    # A heatmap detector parks a joint it cannot see on the image border. With l1_border_px
    # the L1 term ignores such labels (moving one along the border changes nothing) and still
    # compares a label 2 px inside the border; without it, the parked label counts.
    cfg = make_config("train.l1_from_epoch=0", pseudo=True)
    model, batch, pred = _gt_in_every_slot(train_frames, cfg)
    model.poses = lambda heatmaps, *args: pred.expand(heatmaps.shape[0], -1, -1, -1)
    ankle = PANOPTIC15_JOINTS.index("l_ankle")
    detected = batch.pseudo.confidence[0, :, :, ankle] > 0  # (V, Q)
    assert detected.any()
    width, height = batch.cameras.size[0, :, 0], batch.cameras.size[0, :, 1]  # (V,)

    def l1(border_px: float, v_offset: float, u_shift: float) -> float:
        joints = batch.pseudo.joints.clone()
        u = joints[0, :, :, ankle, 0]
        u = torch.where(detected, (0.3 * width[:, None] + u_shift), u)
        v = torch.where(detected, (height - 1 - v_offset)[:, None], joints[0, :, :, ankle, 1])
        joints[0, :, :, ankle] = torch.stack([u, v], -1)
        moved = dataclasses.replace(batch, pseudo=dataclasses.replace(batch.pseudo,
                                                                      joints=joints))  # fmt: skip
        train_cfg = dataclasses.replace(cfg.train, l1_border_px=border_px)
        return float(STAGES["pose"].step(model, moved, train_cfg, epoch=0)["loss_l1"])

    # On the bottom border: ignored with l1_border_px, compared without it.
    assert l1(1.0, 0.0, 0.0) == l1(1.0, 0.0, 40.0)
    assert l1(0.0, 0.0, 0.0) != l1(0.0, 0.0, 40.0)
    # 2 px above the border: compared either way.
    assert l1(1.0, 2.0, 0.0) != l1(1.0, 2.0, 40.0)


def test_l1_border_px_is_validated():
    with pytest.raises(ValueError, match=r"train.l1_border_px must be in \[0, 100\) px"):
        TrainConfig(l1_border_px=-1.0)
