"""benchmarks/input_bound.py: the per-joint table, on errors worked out by hand."""

from __future__ import annotations

import input_bound
import numpy as np

from selfpose3d.skeleton import NUM_JOINTS, PANOPTIC15_JOINTS


def test_joint_table_gives_medians_and_far_shares_ignoring_invisible_joints():
    a = np.full((4, NUM_JOINTS), 10.0)
    a[:, 0] = [10.0, 30.0, 250.0, np.nan]  # neck: one invisible person, one far error
    b = np.full((2, NUM_JOINTS), 300.0)
    rows = {r.split()[0]: r.split()[1:]
            for r in input_bound.joint_table({"a": a, "b": b}).splitlines()[1:]}  # fmt: skip
    assert list(rows) == list(PANOPTIC15_JOINTS)
    assert rows["neck"] == ["30.0", "33.3", "300.0", "100.0"]
    assert rows["l_ankle"] == ["10.0", "0.0", "300.0", "100.0"]
