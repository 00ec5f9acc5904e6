"""Model export: the exported networks + plain geometry predict what the model predicts, the
export loads in a fresh process without the training code, and bad inputs are named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from selfpose3d.cli import main
from selfpose3d.config import config_to_dict, load_config
from selfpose3d.data.batches import BatchSpec, make_batch
from selfpose3d.export import ExportedModel, export_model
from selfpose3d.models.model import build_model
from selfpose3d.training.checkpoint import model_signature, save_checkpoint
from selfpose3d.training.evaluate import load_frames, load_trained_model

REPO = Path(__file__).resolve().parents[1]
PSEUDO = ["model.input_mode=pseudo_heatmaps", "model.use_attention=false"]


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors gain nothing from intra-op threads on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise(model: nn.Module, seed: int = 0) -> None:
    """Weights and BatchNorm statistics of order 1, so that heatmaps, cubes and poses are
    far from the near-zero outputs of the initialisation; root scores around 1, so that
    every proposal slot is a person and pose_net runs on all of them."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                m.reset_parameters()
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        model.root_net.v2v.output_layer.bias.fill_(1.0)


def write_checkpoint(directory: Path, overrides: list[str]) -> Path:
    """A smoke-preset model with random weights saved as `train` saves its final model."""
    cfg = load_config(REPO / "configs" / "smoke.yaml", overrides)
    model = build_model(cfg.model)
    randomise(model)
    save_checkpoint(directory / "final" / "model.pt", {
        "signature": model_signature(model, cfg.model, "smoke"), "config": config_to_dict(cfg),
        "model": model.state_dict(),
    })  # fmt: skip
    return directory


@pytest.fixture(scope="module")
def smoke_batch(smoke_data):
    """Two test frames of the smoke dataset, un-augmented (what evaluation feeds)."""
    cfg = load_config(REPO / "configs" / "smoke.yaml")
    frames = load_frames(smoke_data, "test")[:2]
    return make_batch(frames, BatchSpec.from_configs(cfg.model, versions=("a3",)))


@pytest.fixture(scope="module")
def images_run(tmp_path_factory) -> Path:
    """A checkpoint of the smoke preset as it is: images input, attention net."""
    return write_checkpoint(tmp_path_factory.mktemp("images") / "run", [])


@pytest.fixture(scope="module")
def pseudo_run(tmp_path_factory) -> Path:
    """A checkpoint in pseudo_heatmaps input mode (no 2D networks)."""
    return write_checkpoint(tmp_path_factory.mktemp("pseudo") / "run", PSEUDO)


@pytest.fixture(scope="module")
def pseudo_export(pseudo_run, tmp_path_factory) -> Path:
    """``pseudo_run`` exported as TorchScript."""
    return export_model(pseudo_run, tmp_path_factory.mktemp("pseudo_export"))


def inputs(batch) -> dict:
    a3 = batch.view("a3")
    return {"cameras": batch.cameras, "affines": a3.affines, "images": a3.images,
            "pseudo_joints": batch.pseudo.joints,
            "pseudo_weights": batch.pseudo.weights("soft", 1.0)}  # fmt: skip


@pytest.mark.parametrize(("mode", "fmt"), [("images", "torchscript"),
                                           ("pseudo_heatmaps", "torchscript"),
                                           ("pseudo_heatmaps", "torch_export")])  # fmt: skip
def test_exported_model_predicts_what_the_model_predicts(
    tmp_path, smoke_batch, images_run, pseudo_run, mode, fmt
):
    run = images_run if mode == "images" else pseudo_run
    out = export_model(run, tmp_path / "export", format=fmt)
    suffix = ".pt" if fmt == "torchscript" else ".pt2"
    meta = json.loads((out / "geometry.json").read_text())
    expected = {"root_v2v", "pose_v2v"} | ({"heatmap_net_2d", "attention_net_2d"}
                                           if mode == "images" else set())  # fmt: skip
    assert set(meta["files"]) == expected and meta["format"] == fmt
    assert all((out / f).is_file() and f.endswith(suffix) for f in meta["files"].values())
    g = meta["geometry"]
    assert g["input_mode"] == mode and g["root_bins"] == [20, 20, 8] and g["beta"] == 100.0
    assert g["space_size"] == [4000.0, 4000.0, 2000.0] and g["heatmap_size"] == [80, 48]
    assert len(g["joints"]) == 15 and meta["source"] == str(run / "final" / "model.pt")

    model, _ = load_trained_model(run)
    x = inputs(smoke_batch)
    want = model.predict(**x)
    exported = ExportedModel.load(out)
    got = exported.predict(**x)
    assert want.is_person.all()  # every slot regressed: the poses are a real comparison
    assert torch.equal(got.is_person, want.is_person)
    torch.testing.assert_close(got.heatmaps, want.heatmaps, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.root_cubes, want.root_cubes, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.proposals, want.proposals, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.poses, want.poses, atol=1e-4, rtol=0)
    if mode == "images":  # the attention net is exported too, though predict does not use it
        view = x["images"][:1, :1]
        with torch.no_grad():
            attention = model.eval().attention(view)
        torch.testing.assert_close(exported.attention(view), attention, atol=1e-5, rtol=0)


def test_prepare_views_builds_the_evaluation_inputs(smoke_batch, smoke_data, pseudo_export):
    import cv2

    exported = ExportedModel.load(pseudo_export)
    frame = load_frames(smoke_data, "test")[0]
    rgb = [cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB) for b in frame.images]  # fmt: skip
    cams, affines, images = exported.prepare_views(frame.cameras, rgb)
    a3 = smoke_batch.view("a3")
    torch.testing.assert_close(affines, a3.affines[:1])
    torch.testing.assert_close(images, a3.images[:1])
    for key in ("K", "dist", "R", "t", "size"):
        torch.testing.assert_close(getattr(cams, key), getattr(smoke_batch.cameras, key)[:1])
    assert exported.prepare_views(frame.cameras)[2] is None
    with pytest.raises(ValueError, match="2 images for 3 cameras"):
        exported.prepare_views(frame.cameras, rgb[:2])


def test_export_loads_in_a_fresh_process_without_training_code(
    tmp_path, smoke_batch, pseudo_run, pseudo_export
):
    run, out = pseudo_run, pseudo_export
    x = inputs(smoke_batch)
    cams = {k: getattr(x["cameras"], k) for k in ("K", "dist", "R", "t", "size")}
    torch.save({"cameras": cams, "affines": x["affines"], "pseudo_joints": x["pseudo_joints"],
                "pseudo_weights": x["pseudo_weights"]}, tmp_path / "inputs.pt")  # fmt: skip
    # Importing the training code, the losses or the model classes fails in this process.
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[:2] in (["selfpose3d", "training"], ["selfpose3d", "losses"]) \\
                or name == "selfpose3d.models.model":
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import torch
torch.set_num_threads(1)
from selfpose3d.export import ExportedModel
x = torch.load({str(tmp_path / "inputs.pt")!r})
out = ExportedModel.load({str(out)!r}).predict(**x)
torch.save({{"proposals": out.proposals, "poses": out.poses}}, {str(tmp_path / "out.pt")!r})
loaded = [m for m in sys.modules if m.startswith(("selfpose3d.training", "selfpose3d.losses"))]
assert not loaded, loaded
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    fresh = torch.load(tmp_path / "out.pt")
    want = load_trained_model(run)[0].predict(**x)
    assert want.is_person.any()
    torch.testing.assert_close(fresh["proposals"], want.proposals, atol=1e-4, rtol=0)
    torch.testing.assert_close(fresh["poses"], want.poses, atol=1e-4, rtol=0)


def test_export_cli_and_bad_inputs(tmp_path, capsys, pseudo_run, pseudo_export):
    run = pseudo_run
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "export")]) == 0
    assert "exported" in capsys.readouterr().out
    assert (tmp_path / "export" / "geometry.json").is_file()

    code = main(["export", "--checkpoint", str(tmp_path / "nothing"), "--out",
                 str(tmp_path / "x")])  # fmt: skip
    assert code == 2 and "no checkpoint here" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="geometry.json: not found"):
        ExportedModel.load(run)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "geometry.json").write_text("{")
    with pytest.raises(ValueError, match="geometry.json: not valid JSON"):
        ExportedModel.load(broken)
    meta = json.loads((tmp_path / "export" / "geometry.json").read_text())
    (tmp_path / "export" / meta["files"]["pose_v2v"]).unlink()
    with pytest.raises(FileNotFoundError, match="pose_v2v.pt: exported network not found"):
        ExportedModel.load(tmp_path / "export")
    exported = ExportedModel.load(pseudo_export)
    with pytest.raises(ValueError, match="needs pseudo_joints and pseudo_weights"):
        exported.predict({}, torch.zeros(1, 3, 2, 3))
    with pytest.raises(ValueError, match="format must be one of"):
        export_model(run, tmp_path / "x", format="onnx")


def test_the_pose_cube_offset_is_read_and_defaults_for_older_exports(tmp_path, pseudo_export):
    import shutil

    base = ExportedModel.load(pseudo_export)
    for name, edit in (("old", lambda g: g.pop("pose_cube_offset")),
                       ("lowered", lambda g: g.update(pose_cube_offset=[0.0, 0.0, -200.0]))):
        copy = shutil.copytree(pseudo_export, tmp_path / name)
        meta = json.loads((copy / "geometry.json").read_text())
        edit(meta["geometry"])
        (copy / "geometry.json").write_text(json.dumps(meta))
        want = (0.0, 0.0, 0.0 if name == "old" else -200.0)
        for a, b, w in zip(ExportedModel.load(copy).axes, base.axes, want, strict=True):
            torch.testing.assert_close(a - b, torch.full_like(a, w))
