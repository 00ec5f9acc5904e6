"""The smoke dataset (generated and ingested once per session) and a root_net trained on it.

The root_net fixture is the paper's stage 2 on the smoke preset: synthetic roots only, in
pseudo_heatmaps input mode (no images, no 2D network), 300 steps (~10 s on one core).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from selfpose3d.config import Config, load_config
from selfpose3d.training.evaluate import load_frames
from selfpose3d.training.run import train

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
# The fast self-supervised setting of the learning tests: heatmaps rendered from the pseudo
# labels, no attention network (it would need images), root_net on synthetic roots only.
PSEUDO = [
    "model.input_mode=pseudo_heatmaps",
    "model.use_attention=false",
    "train.root_consistency_weight=0",
    "train.root.epochs=25",  # 12 steps per epoch at batch size 2: 300 steps
    "train.root.batch_size=2",
    "train.pose.batch_size=2",
]


def smoke_config(*overrides: str) -> Config:
    return load_config(SMOKE, list(overrides))


@pytest.fixture
def make_config():
    """``make_config("key=value", ..., pseudo=True)``: the smoke preset with overrides; with
    ``pseudo`` the fast self-supervised setting of the learning tests comes first."""

    def make(*overrides: str, pseudo: bool = False) -> Config:
        return smoke_config(*(PSEUDO if pseudo else []), *overrides)

    return make


@pytest.fixture(autouse=True)
def one_thread():
    """Smoke-sized tensors gain nothing from intra-op threads, and with other processes on
    the machine, OpenMP barriers across threads make steps several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def train_frames(smoke_data):
    return load_frames(smoke_data, "train")


@pytest.fixture(scope="session")
def test_frames(smoke_data):
    return load_frames(smoke_data, "test")


@pytest.fixture(scope="session")
def trained_root(smoke_data, tmp_path_factory) -> Path:
    """A run directory whose model finished the root stage (pseudo_heatmaps mode)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("root_run")
        train(smoke_config(*PSEUDO), smoke_data, out, stages=["root"], progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def trained_pose(trained_root, smoke_data, tmp_path_factory) -> tuple[Path, list[dict]]:
    """The root run continued by 5 epochs of the self-supervised pose stage (60 steps);
    returns the run directory and the per-step metrics."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("pose_run") / "run"
    shutil.copytree(trained_root, out)
    rows: list[dict] = []
    try:
        cfg = smoke_config(*PSEUDO, "train.pose.epochs=5")
        train(cfg, smoke_data, out, stages=["root", "pose"], report=rows.append, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out, rows
