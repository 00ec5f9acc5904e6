"""benchmarks/error_breakdown.py: matching, the offset/shape split and the per-joint radial
sign, on hand-built frames whose answers are worked out by hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import error_breakdown as eb
import numpy as np
import pytest

from selfpose3d.evaluation import FramePrediction
from selfpose3d.skeleton import NUM_JOINTS, ROOT_INDEX, STANDING_POSE

REPO = Path(__file__).resolve().parents[2]


POSE = np.asarray(STANDING_POSE, dtype=np.float64)  # (J, 3) mm, centred near the origin


def frame(sequence: str, *poses: np.ndarray) -> SimpleNamespace:
    xyzv = np.concatenate([np.stack(poses), np.ones((len(poses), NUM_JOINTS, 1))], -1)
    return SimpleNamespace(sequence=sequence, gt_poses=xyzv)


def test_offset_and_shape_split_the_error():
    gt = POSE + [0.0, 0.0, 900.0]
    shifted = gt + [30.0, 40.0, 0.0]  # a pure whole-body offset of 50 mm
    root = gt[ROOT_INDEX]
    shrunk = root + 0.9 * (gt - root)  # the body scaled towards its root
    people = eb.matched_people(
        [FramePrediction(shifted[None], np.ones(1)), FramePrediction(shrunk[None], np.ones(1))],
        [frame("a", gt), frame("b", gt)],
    )
    e = eb.person_errors(people[0])
    assert e["mpjpe"] == pytest.approx(50.0) and e["offset"] == pytest.approx(50.0)
    assert e["shape"] == pytest.approx(0.0, abs=1e-9)
    s = eb.person_errors(people[1])
    assert s["shape"] > 0 and s["mpjpe"] == pytest.approx(
        0.1 * np.linalg.norm(gt - root, axis=-1).mean()
    )
    table = eb.joint_table(people[1:])
    # Every joint but the root is predicted nearer the root: a negative radial error of
    # 10 % of its distance from the root.
    for j, name in enumerate(eb.PANOPTIC15_JOINTS):
        row = next(line for line in table.splitlines() if line.startswith(name + " "))
        expected = -0.1 * np.linalg.norm(gt[j] - root)
        if j == ROOT_INDEX:
            assert row.split()[3] == "-"
        else:
            assert float(row.split()[3]) == pytest.approx(expected, abs=0.06)
    # The same body with its ankles' labels swapped: those two are swaps, nothing else is.
    ankles = [eb.PANOPTIC15_JOINTS.index("l_ankle"), eb.PANOPTIC15_JOINTS.index("r_ankle")]
    crossed = gt.copy()
    crossed[ankles] = gt[ankles[::-1]]
    rows = eb.joint_table(eb.matched_people([FramePrediction(crossed[None], np.ones(1))],
                                            [frame("c", gt)])).splitlines()[1:]  # fmt: skip
    swap = {r.split()[0]: r.split()[4] for r in rows}
    assert swap["l_ankle"] == swap["r_ankle"] == "100.0"
    assert swap["l_knee"] == "0.0" and swap["neck"] == "-"


def test_vertical_and_horizontal_parts_of_the_joint_error():
    gt = POSE + [0.0, 0.0, 900.0]
    lifted = gt + [30.0, 40.0, 0.0]  # 50 mm sideways ...
    lifted[eb.PANOPTIC15_JOINTS.index("l_ankle"), 2] += 60.0  # ... and one ankle 60 mm too high
    sunk = gt.copy()
    sunk[eb.PANOPTIC15_JOINTS.index("l_ankle"), 2] -= 20.0  # another person's ankle too low
    people = eb.matched_people(
        [FramePrediction(lifted[None], np.ones(1)), FramePrediction(sunk[None], np.ones(1))],
        [frame("a", gt), frame("b", gt)],
    )
    rows = {r.split()[0]: r.split() for r in eb.joint_table(people).splitlines()[1:]}
    dz, abs_dz, dxy = (float(x) for x in rows["l_ankle"][5:8])
    assert (dz, abs_dz, dxy) == pytest.approx((20.0, 40.0, 25.0))  # means over the two people
    assert [float(x) for x in rows["neck"][5:8]] == pytest.approx([0.0, 0.0, 25.0])
    # Both bodies keep every joint's horizontal place relative to their root: the "xy r" of
    # the two is undefined (no spread across people, the same GT twice).
    assert rows["l_ankle"][8] == "-" and rows["mid_hip"][8] == "-"
    # Two people whose arms point different ways: predictions that follow them score 1,
    # predictions with the two directions exchanged -1.
    wrist = eb.PANOPTIC15_JOINTS.index("l_wrist")
    a, b = gt.copy(), gt.copy()
    a[wrist, :2] += [300.0, 0.0]
    b[wrist, :2] -= [300.0, 0.0]
    for pred_a, pred_b, want in ((a, b, "1.00"), (b, a, "-1.00")):
        people = eb.matched_people(
            [FramePrediction(pred_a[None], np.ones(1)), FramePrediction(pred_b[None], np.ones(1))],
            [frame("a", a), frame("b", b)],
        )
        rows = {r.split()[0]: r.split() for r in eb.joint_table(people).splitlines()[1:]}
        assert rows["l_wrist"][8] == want


def test_closest_prediction_wins_and_far_or_absent_ones_are_missed():
    a = POSE + [0.0, 0.0, 900.0]
    b = POSE + [2000.0, 0.0, 900.0]
    preds = np.stack([a + 80.0, a + 10.0, b + 600.0])  # two near a, one > 500 mm from b
    people = eb.matched_people(
        [FramePrediction(preds, np.array([0.9, 0.5, 0.8])), FramePrediction(np.zeros((0, 15, 3)),
                                                                            np.zeros(0))],
        [frame("s", a, b), frame("s", a)],
    )  # fmt: skip
    assert [p["crowd"] for p in people] == [2, 2, 1]
    np.testing.assert_allclose(people[0]["pred"], a + 10.0)  # the closer one, not the higher score
    assert people[1]["pred"] is None and people[2]["pred"] is None
    errors = {i: eb.person_errors(p) for i, p in enumerate(people) if p["pred"] is not None}
    table = eb.group_table("sequence", {"s": [0, 1, 2]}, errors)
    row = table.splitlines()[1].split()
    assert row[:3] == ["s", "3", "2"]  # 3 people, 2 missed
    assert float(row[3]) == pytest.approx(np.sqrt(300.0), abs=0.05)  # 10 mm on each axis
    assert float(row[4]) == pytest.approx(100 / 3, abs=0.05)  # 1 of 3 under 50 mm


def test_label_table_counts_missing_border_and_pixel_errors():
    from selfpose3d.geometry.camera import Camera

    # A camera 4 m in front of the person, looking along +y (world z up).
    R = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    cam = Camera(name="c", K=[[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]], dist=np.zeros(5),
                 R=R, t=-R @ np.array([0.0, -4000.0, 900.0]), width=640, height=480)  # fmt: skip
    gt = POSE + [0.0, 0.0, 900.0]
    det = np.concatenate([cam.project(gt), np.ones((NUM_JOINTS, 1))], -1)
    det[0, :2] += [3.0, 4.0]  # 5 px off
    det[1, 2] = 0.0  # not detected
    det[2, :2] = [det[2, 0], 479.0]  # clipped to the bottom border
    det[3, :2] += [30.0, 0.0]  # 30 px off
    xyzv = np.concatenate([gt, np.ones((NUM_JOINTS, 1))], -1)[None]
    frame = SimpleNamespace(gt_poses=xyzv, cameras=[cam], pseudo_poses=[det[None]])
    rows = {line.split()[0]: line.split()[1:] for line in
            eb.label_table([frame]).splitlines()[2:]}  # fmt: skip
    name = eb.PANOPTIC15_JOINTS
    assert rows[name[0]] == ["0.0", "0.0", "5.0", "0.0"]
    assert rows[name[1]][0] == "100.0" and rows[name[1]][2] == "nan"
    assert rows[name[2]][:2] == ["0.0", "100.0"]
    assert rows[name[3]][2:] == ["30.0", "100.0"]
    assert rows[name[4]] == ["0.0", "0.0", "0.0", "0.0"]


def test_augmented_table_counts_joints_the_augmentations_crop_out(tmp_path):
    import dataclasses

    from pipelines.ingest import ingest
    from selfpose3d.config import load_config
    from selfpose3d.data.config import DataConfig
    from selfpose3d.data.schema import read_dataset
    from selfpose3d.data.synthetic import make_tiny_dataset

    make_tiny_dataset(tmp_path / "raw")
    ingest(tmp_path / "raw", tmp_path / "pq", DataConfig(), engine="plain", progress=False)
    frames = list(read_dataset(tmp_path / "pq" / "train"))
    cfg = load_config(REPO / "configs" / "smoke.yaml", ["model.input_mode=pseudo_heatmaps"])

    def shares(border_px: float = 1.0, **augment) -> list[tuple[float, float]]:
        c = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, augment=dataclasses.replace(cfg.train.augment, **augment)))  # fmt: skip
        rows = eb.augmented_table(frames, c, border_px=border_px).splitlines()[2:]
        return [tuple(float(x) for x in r.split()[1:4]) for r in rows]

    gentle = shares(rotation_prob=0.0, scale_range=[0.0, 0.0])
    rough = shares(rotation_prob=1.0, max_rotation_deg=90.0, scale_range=[0.3, 0.3])
    assert all(a3 == 100.0 for a3, _, _ in gentle + rough)  # A3 shows every detected joint
    assert sum(r[1] for r in rough) < sum(g[1] for g in gentle) <= 100.0 * len(gentle)
    assert sum(r[2] for r in rough) < sum(g[2] for g in gentle) <= 100.0 * len(gentle)
    # A border wider than half the image leaves no joint off it: nothing to count.
    assert all(off == 0.0 for _, _, off in shares(border_px=1e4, rotation_prob=0.0))
