"""PCP on Shelf/Campus: reading the real GT files and hand-worked PCP values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfpose3d.evaluation import (
    SHELF_EVAL_FRAMES,
    evaluate_pcp,
    load_actors_gt,
    panoptic15_to_shelf14,
)
from selfpose3d.evaluation.pcp import PCP_PARTS


@pytest.fixture(scope="module")
def shelf_gt(fixtures_dir):
    return load_actors_gt(fixtures_dir / "shelf" / "actorsGT.mat")


def present(actor: np.ndarray) -> list[bool]:
    return np.isfinite(actor).all(axis=(1, 2)).tolist()


def test_load_shelf(shelf_gt):
    # The fixture holds 4 actors over 3 frames; actors 1 and 3 are absent from all of them.
    assert len(shelf_gt) == 4
    assert all(a.shape == (3, 14, 3) for a in shelf_gt)
    assert [present(a) for a in shelf_gt] == [[True] * 3, [False] * 3, [True] * 3, [False] * 3]
    a0 = shelf_gt[0][0]
    # Metres became mm: the top of actor 0's head is 1.607 m above the floor in the file.
    assert a0[13, 2] == pytest.approx(1607.4, abs=0.1)
    # Right shin (ankle (-.143, -.092, -.041) m -> knee (-.080, -.068, .385) m): about 431 mm.
    assert np.linalg.norm(a0[0] - a0[1]) == pytest.approx(431.1, abs=0.5)
    # Every part of every present actor has a human length.
    start, end = np.array(PCP_PARTS[:9]).T
    for actor in (shelf_gt[0], shelf_gt[2]):
        lengths = np.linalg.norm(actor[:, start] - actor[:, end], axis=-1)
        assert ((lengths > 100) & (lengths < 700)).all()


def test_load_campus(fixtures_dir):
    actors = load_actors_gt(fixtures_dir / "campus" / "actorsGT.mat")
    # 3 actors over 3 frames, only the first present; its head top is ~1.95 m high.
    assert len(actors) == 3 and all(a.shape == (3, 14, 3) for a in actors)
    assert [present(a) for a in actors] == [[True] * 3, [False] * 3, [False] * 3]
    assert 1900 < actors[0][0, 13, 2] < 2000


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "actorsGT.mat"
    bad.write_text("not a mat file")
    with pytest.raises(ValueError, match="actorsGT.mat"):
        load_actors_gt(bad)


def shelf_predictions(actors: list[np.ndarray]) -> list[np.ndarray]:
    """Per frame, the present actors' GT as (N, 14, 3) predictions."""
    frames = []
    for f in range(len(actors[0])):
        frames.append(np.stack([a[f] for a in actors if np.isfinite(a[f]).all()]))
    return frames


def test_perfect_prediction(shelf_gt):
    result = evaluate_pcp(shelf_predictions(shelf_gt), shelf_gt)
    # Present actors: 100; absent ones: NaN; the average is over actors 0 and 2 (1 is absent).
    assert result.actor_pcp[0] == 100.0 and result.actor_pcp[2] == 100.0
    assert math.isnan(result.actor_pcp[1]) and math.isnan(result.actor_pcp[3])
    assert result.average_pcp == 100.0
    assert result.recall500 == 100.0
    assert result.num_gt.tolist() == [3, 0, 3, 0]
    metrics = result.as_dict()
    assert metrics["pcp_average"] == 100.0 and metrics["pcp_torso"] == 100.0


def test_moving_a_wrist_breaks_exactly_the_lower_arm(shelf_gt):
    preds = shelf_predictions(shelf_gt)
    a0 = shelf_gt[0][0]
    forearm = a0[11] - a0[10]  # left elbow -> left wrist
    length = np.linalg.norm(forearm)
    # Move actor 0's left wrist in frame 0 on along the forearm by 1.5 lengths: endpoint errors
    # 0 and 1.5 L, mean 0.75 L > 0.5 L -> only part (10, 11) is wrong.
    # Actor 0: 30 parts over 3 frames, 29 right -> 96.667; lower arms: 6 parts, 5 right -> 83.333.
    # Average over actors 0 and 2: (96.667 + 100) / 2 = 98.333.
    preds[0] = preds[0].copy()
    preds[0][0, 11] += 1.5 * forearm
    result = evaluate_pcp(preds, shelf_gt)
    assert result.actor_pcp[0] == pytest.approx(100.0 * 29 / 30)
    assert result.part_pcp["lower_arms"][0] == pytest.approx(100.0 * 5 / 6)
    assert result.part_pcp["upper_arms"][0] == 100.0
    assert result.actor_pcp[2] == 100.0
    assert result.average_pcp == pytest.approx((100.0 * 29 / 30 + 100.0) / 2)
    # 0.9 lengths: mean error 0.45 L <= 0.5 L -> still right.
    preds[0][0, 11] += (0.9 - 1.5) * forearm
    assert evaluate_pcp(preds, shelf_gt).actor_pcp[0] == 100.0
    assert length > 150  # the move is a real forearm, not a degenerate one


def test_torso_uses_the_hip_centre(shelf_gt):
    # Push actor 0's right hip out and left hip in by the same vector (2 × the right thigh
    # length, in frame 0): the hip centre does not move, so the torso stays right, while both
    # thighs (hip error 2 L_thigh-ish, mean > 0.5 L) are wrong: 8 of 10 parts in that frame.
    # Actor 0: 28 / 30 -> 93.333; upper legs: 4 / 6 -> 66.667; torso 3 / 3.
    preds = shelf_predictions(shelf_gt)
    a0 = shelf_gt[0][0]
    push = 2.0 * max(np.linalg.norm(a0[2] - a0[1]), np.linalg.norm(a0[3] - a0[4]))
    preds[0] = preds[0].copy()
    preds[0][0, 2, 0] += push
    preds[0][0, 3, 0] -= push
    result = evaluate_pcp(preds, shelf_gt)
    assert result.part_pcp["torso"][0] == 100.0
    assert result.part_pcp["upper_legs"][0] == pytest.approx(100.0 * 4 / 6)
    assert result.actor_pcp[0] == pytest.approx(100.0 * 28 / 30)


def test_frame_without_predictions_counts_as_wrong(shelf_gt):
    # Frame 1 gets no prediction: actors 0 and 2 lose all 10 parts there -> 20 / 30 = 66.667,
    # and 2 of the 6 GT actor instances are not found -> recall 66.667.
    preds = shelf_predictions(shelf_gt)
    preds[1] = np.zeros((0, 15, 3))
    result = evaluate_pcp(preds, shelf_gt)
    assert result.actor_pcp[0] == pytest.approx(100.0 * 2 / 3)
    assert result.actor_pcp[2] == pytest.approx(100.0 * 2 / 3)
    assert result.recall500 == pytest.approx(100.0 * 4 / 6)


def test_each_actor_takes_its_closest_prediction(shelf_gt):
    # Frames 0 and 2 only, predictions listed in reverse actor order plus a NaN one:
    # the lowest-MPJPE choice still pairs each actor with its own pose -> 100.
    preds = [p[::-1] for p in shelf_predictions(shelf_gt)]
    preds = [np.concatenate([np.full((1, 14, 3), np.nan), p]) for p in preds]
    result = evaluate_pcp([preds[0], preds[2]], shelf_gt, frames=[0, 2])
    assert result.num_gt.tolist() == [2, 0, 2, 0]
    assert result.average_pcp == 100.0


def test_panoptic15_to_shelf14_by_hand():
    pose = np.arange(45.0).reshape(15, 3)
    pose[3] = (-10.0, 0.0, 0.0)  # l_shoulder
    pose[9] = (10.0, 0.0, 0.0)  # r_shoulder -> shoulder midpoint S = 0
    pose[1] = (40.0, 0.0, 100.0)  # nose n
    shelf = panoptic15_to_shelf14(pose)
    # Limbs: r_ankle=14, r_knee=13, r_hip=12, l_hip=6, l_knee=7, l_ankle=8, r_wrist=11,
    # r_elbow=10, r_shoulder=9, l_shoulder=3, l_elbow=4, l_wrist=5 of Panoptic-15.
    np.testing.assert_array_equal(shelf[:12], pose[[14, 13, 12, 6, 7, 8, 11, 10, 9, 3, 4, 5]])
    # Bottom head = (S + n) / 2 = (20, 0, 50).
    np.testing.assert_allclose(shelf[12], [20.0, 0.0, 50.0])
    # Top head = .75 (S + (n - S)(.75, .75, 1.5)) + .25 (n + (n - S) / 2)
    #          = .75 (30, 0, 150) + .25 (60, 0, 150) = (37.5, 0, 150).
    np.testing.assert_allclose(shelf[13], [37.5, 0.0, 150.0])


def test_panoptic_predictions_are_mapped(shelf_gt):
    # Panoptic-15 input goes through the mapping: put the GT limb joints at their Panoptic
    # indices (head derived from the shoulders and a nose at the GT head bottom) and all eight
    # limb parts of both present actors come out right (the head and torso depend on the
    # derived head, so they are not asserted).
    preds = []
    for gt_N14 in shelf_predictions(shelf_gt):
        pose_N15 = np.zeros((len(gt_N14), 15, 3))
        pose_N15[:, [14, 13, 12, 6, 7, 8, 11, 10, 9, 3, 4, 5]] = gt_N14[:, :12]
        pose_N15[:, 1] = gt_N14[:, 12]
        preds.append(pose_N15)
    result = evaluate_pcp(preds, shelf_gt)
    for group in ("upper_arms", "lower_arms", "upper_legs", "lower_legs"):
        assert result.part_pcp[group][[0, 2]].tolist() == [100.0, 100.0], group


def test_bad_frames_raise(shelf_gt):
    with pytest.raises(ValueError, match="outside"):
        evaluate_pcp([np.zeros((0, 15, 3))], shelf_gt, frames=[SHELF_EVAL_FRAMES[0]])
    with pytest.raises(ValueError, match="frame ids"):
        evaluate_pcp([np.zeros((0, 15, 3))] * 2, shelf_gt, frames=[0])
