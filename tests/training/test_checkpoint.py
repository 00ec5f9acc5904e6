"""Checkpoints: round trip, refusal of other presets and shapes, pruning, bad files."""

from __future__ import annotations

import pytest
import torch

from selfpose3d.models.model import build_model
from selfpose3d.training.checkpoint import (
    CheckpointManager,
    CheckpointMismatchError,
    load_checkpoint,
    load_model_weights,
    model_signature,
    save_checkpoint,
)
from selfpose3d.training.run import train
from selfpose3d.training.schedule import build_optimizer


def _state(model, cfg, preset="smoke", **extra):
    return {"signature": model_signature(model, cfg.model, preset), "model": model.state_dict(),
            **extra}  # fmt: skip


def test_round_trip_restores_model_and_optimizer(tmp_path, make_config):
    cfg = make_config(pseudo=True)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    optimizer, scheduler = build_optimizer([model.root_net], cfg.train.root)
    model.root_net(torch.rand(1, 3, 15, 48, 80), *_rig(model))[0].mean().backward()
    optimizer.step()
    scheduler.step()
    save_checkpoint(tmp_path / "c.pt", _state(model, cfg, optimizer=optimizer.state_dict(),
                                              scheduler=scheduler.state_dict()))  # fmt: skip
    state = load_checkpoint(tmp_path / "c.pt")  # weights_only=True inside

    torch.manual_seed(1)
    other = build_model(cfg.model)
    load_model_weights(other, state, model_signature(other, cfg.model, "smoke"), "c.pt")
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    opt2, sched2 = build_optimizer([other.root_net], cfg.train.root)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    s1, s2 = optimizer.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and all(torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"])
                                          for i in s1)  # fmt: skip
    assert sched2.last_epoch == scheduler.last_epoch


def _rig(model):
    """Cameras and affines of the smoke rig's shape (values do not matter here)."""
    from selfpose3d.models.voxel import CameraBatch

    K = torch.tensor([[300.0, 0, 160], [0, 300, 90], [0, 0, 1]])
    cams = CameraBatch(K=K.expand(1, 3, 3, 3), dist=torch.zeros(1, 3, 5),
                       R=torch.eye(3).expand(1, 3, 3, 3),
                       t=torch.tensor([0.0, 0, 4000]).expand(1, 3, 3),
                       size=torch.tensor([320.0, 180]).expand(1, 3, 2))  # fmt: skip
    affines = torch.tensor([[0.25, 0, -0.375], [0, 0.25, -0.375]]).expand(1, 3, 2, 3)
    return cams, affines


def test_a_checkpoint_of_another_preset_is_refused_with_a_clear_message(tmp_path, make_config):
    cfg = make_config(pseudo=True)
    model = build_model(cfg.model)
    save_checkpoint(tmp_path / "c.pt", _state(model, cfg, preset="cpu"))
    with pytest.raises(CheckpointMismatchError,
                       match=r"c\.pt: refusing .* written for preset 'cpu', this run uses "
                             r"preset 'smoke'"):  # fmt: skip
        load_model_weights(
            model,
            load_checkpoint(tmp_path / "c.pt"),
            model_signature(model, cfg.model, "smoke"),
            tmp_path / "c.pt",
        )


def test_a_checkpoint_of_another_model_shape_is_refused(tmp_path, make_config):
    small_cfg = make_config("model.v2v_width=4", "model.root_bins=[16,16,8]", pseudo=True)
    small = build_model(small_cfg.model)
    save_checkpoint(tmp_path / "c.pt", _state(small, small_cfg))
    cfg = make_config(pseudo=True)
    model = build_model(cfg.model)
    with pytest.raises(CheckpointMismatchError) as info:
        load_model_weights(
            model,
            load_checkpoint(tmp_path / "c.pt"),
            model_signature(model, cfg.model, "smoke"),
            "c.pt",
        )
    message = str(info.value)
    assert "model.root_bins is [16, 16, 8] there, [20, 20, 8] here" in message
    assert "model.v2v_width is 4 there, 8 here" in message
    assert "has shape" in message and "written for preset" not in message


def test_a_cube_offset_must_match_and_old_signatures_have_none(tmp_path, make_config):
    cfg = make_config(pseudo=True)
    model = build_model(cfg.model)
    save_checkpoint(tmp_path / "c.pt", _state(model, cfg))
    state = load_checkpoint(tmp_path / "c.pt")
    del state["signature"]["model"]["pose_cube_offset"]  # written before the field existed
    load_model_weights(model, state, model_signature(model, cfg.model, "smoke"), "c.pt")
    lowered = make_config("model.pose_cube_offset=[0,0,-200]", pseudo=True)
    with pytest.raises(CheckpointMismatchError, match=r"model.pose_cube_offset is \[0.0, 0.0, "
                       r"0.0\] there, \[0.0, 0.0, -200.0\] here"):  # fmt: skip
        load_model_weights(model, state, model_signature(model, lowered.model, "smoke"), "c.pt")


def test_train_refuses_to_resume_a_run_of_another_preset(tmp_path, smoke_data, make_config):
    cfg = make_config("train.root.epochs=1", "train.max_steps_per_epoch=1", pseudo=True)
    train(cfg, smoke_data, tmp_path / "run", stages=["root"], preset="cpu", progress=False)
    with pytest.raises(CheckpointMismatchError, match="preset 'cpu', this run uses preset 'smoke'"):
        train(cfg, smoke_data, tmp_path / "run", stages=["root"], progress=False)


def test_manager_keeps_the_newest_and_points_at_the_latest(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    assert manager.latest() is None
    for step in (1, 2, 3):
        manager.save({"stage": "root", "epoch": 0, "step": step, "x": torch.tensor(step)})
    files = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert files == ["root-e000-s0000002.pt", "root-e000-s0000003.pt"]
    assert manager.latest()["x"].item() == 3
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_unreadable_checkpoints_are_named(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad\.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: not a selfpose3d checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
