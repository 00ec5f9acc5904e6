"""benchmarks/loss_optimum.py: free 3D joints optimised on the pose stage's losses."""

from __future__ import annotations

from pathlib import Path

import loss_optimum
import numpy as np
import pytest

from selfpose3d.config import load_config
from selfpose3d.skeleton import ROOT_INDEX

REPO = Path(__file__).resolve().parents[2]


def test_free_joints_started_off_the_gt_come_back_to_it(smoke_data):
    pseudo = ["model.input_mode=pseudo_heatmaps", "model.use_attention=false"]
    cfg = load_config(REPO / "configs" / "smoke.yaml", pseudo)
    frames = loss_optimum.pick_frames(smoke_data, 4, seed=0)
    results = loss_optimum.optimise(cfg, frames, "reproj+l1", noise=150.0, iterations=60,
                                    lr=10.0, seed=0)  # fmt: skip
    before, after, dxy, dz, grad = results
    assert before.shape == after.shape == grad.shape and before.shape[0] >= 4
    assert np.nanmean(before) > 150.0
    assert np.nanmean(after) < 0.4 * np.nanmean(before)  # the losses lead the joints back
    assert np.all(after[:, ROOT_INDEX] == 0.0)  # the root is the proposal: it stays put
    assert np.nanmean(grad) == pytest.approx(1.0)  # the gradient share is relative to its mean
    rows = loss_optimum.joint_rows(before, after, dxy, dz, grad)
    assert len(rows) == before.shape[1] + 1 and rows[-1].startswith("| all |")
