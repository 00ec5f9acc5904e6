"""The Panoptic protocol (AP / Recall@500 / MPJPE). Every expected value is worked out by hand.

AP reminders used below (VOC style): walk predictions by score; after each one,
recall = TP so far / #GT and precision = TP so far / predictions so far; precision is made
non-increasing from the right; AP = sum over the points where recall increases of
Δrecall × (that monotone precision).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfpose3d.evaluation import (
    FrameGT,
    FramePrediction,
    FrameRootPrediction,
    evaluate_panoptic,
    evaluate_roots,
)

THRESHOLDS = (25, 50, 75, 100, 125, 150)
X = np.array([1.0, 0.0, 0.0])


def person(x_mm: float = 0.0) -> np.ndarray:
    """(15, 3) mm: a standing person whose joints are distinct points, shifted by x_mm."""
    rng = np.random.default_rng(7)
    base = rng.uniform(-300.0, 300.0, (15, 3)) + np.array([0.0, 0.0, 1000.0])
    return base + x_mm * X


def gt(*poses: np.ndarray, visible: np.ndarray | None = None) -> FrameGT:
    stack = np.stack(poses) if poses else np.zeros((0, 15, 3))
    vis = np.ones(stack.shape[:2], bool) if visible is None else visible
    return FrameGT(poses=stack, visible=vis)


def pred(*items: tuple[np.ndarray, float]) -> FramePrediction:
    if not items:
        return FramePrediction(poses=np.zeros((0, 15, 3)), scores=np.zeros(0))
    return FramePrediction(
        poses=np.stack([p for p, _ in items]), scores=np.array([s for _, s in items])
    )


def assert_aps(out: dict[str, float], expected: dict[int, float]) -> None:
    for t, value in expected.items():
        assert out[f"ap{t}"] == pytest.approx(value, abs=1e-9), f"ap{t}"


def test_perfect_prediction():
    # One GT, one exact prediction: TP at every threshold, precision 1 at recall 1 -> AP 100.
    out = evaluate_panoptic([pred((person(), 0.9))], [gt(person())])
    assert_aps(out, dict.fromkeys(THRESHOLDS, 100.0))
    assert out["recall500"] == 100.0
    assert out["mpjpe"] == 0.0
    assert out["num_gt"] == 1 and out["num_pred"] == 1


def test_constant_30mm_error():
    # Every joint 30 mm off -> MPJPE = 30: not < 25 (FP, AP25 = 0), < 50 and above (AP = 100).
    out = evaluate_panoptic([pred((person(30.0), 0.9))], [gt(person())])
    assert_aps(out, {25: 0.0, 50: 100.0, 75: 100.0, 100: 100.0, 125: 100.0, 150: 100.0})
    assert out["recall25"] == 0.0 and out["recall50"] == 100.0
    assert out["mpjpe"] == pytest.approx(30.0)
    assert out["recall500"] == 100.0


def test_duplicate_prediction_is_false_positive():
    # Frame A: GT1 with an exact prediction (0.9) and a duplicate (0.8); frame B: GT2 exact (0.7).
    # Order TP, FP, TP: recall .5 .5 1, precision 1 .5 2/3 -> monotone 1 2/3 2/3.
    # AP = .5 * 1 + .5 * 2/3 = 5/6 = 83.333...%
    frames_pred = [pred((person(), 0.9), (person(), 0.8)), pred((person(), 0.7))]
    out = evaluate_panoptic(frames_pred, [gt(person()), gt(person())])
    assert_aps(out, dict.fromkeys(THRESHOLDS, 100.0 * 5 / 6))
    assert out["recall500"] == 100.0
    assert out["mpjpe"] == 0.0  # the duplicate does not enter the MPJPE
    assert out["num_pred"] == 3 and out["num_gt"] == 2


def test_single_gt_duplicate_does_not_lower_ap():
    # TP then FP: recall reaches 1 at precision 1; the later FP adds no recall step -> AP 100.
    out = evaluate_panoptic([pred((person(), 0.9), (person(5.0), 0.8))], [gt(person())])
    assert_aps(out, dict.fromkeys(THRESHOLDS, 100.0))


def test_highest_scored_false_positive():
    # The far prediction (1000 mm, score .95) comes first: FP then TP.
    # recall 0 1, precision 0 .5 -> monotone .5 .5; one recall step 0 -> 1 at .5 -> AP 50.
    frames_pred = [pred((person(1000.0), 0.95), (person(), 0.5))]
    out = evaluate_panoptic(frames_pred, [gt(person())])
    assert_aps(out, dict.fromkeys(THRESHOLDS, 50.0))
    assert out["recall500"] == 100.0  # the exact one is within 500 mm
    assert out["mpjpe"] == 0.0


@pytest.mark.parametrize(
    ("scores", "expected_ap"),
    [
        # (exact GT1, far FP, exact GT2) scores -> order and hand AP:
        ((0.9, 0.8, 0.7), 100.0 * 5 / 6),  # TP FP TP: .5*1 + .5*2/3
        ((0.9, 0.7, 0.8), 100.0),  # TP TP FP: recall 1 reached at precision 1
        ((0.8, 0.9, 0.7), 100.0 * 2 / 3),  # FP TP TP: precision 0 1/2 2/3 -> 2/3 2/3 2/3
    ],
)
def test_score_order_matters(scores, expected_ap):
    gt1, gt2 = person(), person(3000.0)
    frames_pred = [pred((gt1, scores[0]), (gt1 + 1000.0 * X, scores[1]), (gt2, scores[2]))]
    out = evaluate_panoptic(frames_pred, [gt(gt1, gt2)])
    assert_aps(out, dict.fromkeys(THRESHOLDS, expected_ap))


def test_ties_keep_frame_order():
    # Equal scores keep input order (stable sort, as Python's list.sort in the reference).
    # FP (frame A) before TP (frame B): recall 0 .5, precision 0 .5 -> .5*.5 = 25.
    # Frames swapped: TP then FP: recall .5 .5, precision 1 .5 -> .5*1 = 50.
    far = [pred((person(1000.0), 0.5)), gt(person())]
    exact = [pred((person(), 0.5)), gt(person())]
    out = evaluate_panoptic([far[0], exact[0]], [far[1], exact[1]])
    assert out["ap50"] == pytest.approx(25.0)
    out = evaluate_panoptic([exact[0], far[0]], [exact[1], far[1]])
    assert out["ap50"] == pytest.approx(50.0)


def test_prediction_is_matched_to_its_nearest_gt_only():
    # GT2 = GT1 + 100 mm. B is 40 mm from GT1 and 60 mm from GT2, so it belongs to GT1, which
    # A (exact, higher score) already claimed: B is an FP even at 75 mm although GT2 is free.
    # Order TP FP with 2 GT: recall .5 .5 -> AP75 = .5 * 1 = 50.
    gt1 = person()
    gt2 = gt1 + 100.0 * X
    out = evaluate_panoptic([pred((gt1, 0.9), (gt1 + 40.0 * X, 0.8))], [gt(gt1, gt2)])
    assert out["ap75"] == pytest.approx(50.0)
    assert out["recall500"] == 50.0


def test_invisible_joints_are_ignored():
    # Joint 5 invisible: a 10 m error there (and NaN in the GT there) must not count.
    # The 14 visible joints are 20 mm off -> MPJPE = 20 exactly (not (14*20 + 10000) / 15).
    visible = np.ones((1, 15), bool)
    visible[0, 5] = False
    target = person()
    gt_pose = target.copy()
    gt_pose[5] = np.nan
    guess = target + 20.0 * X
    guess[5] += 10_000.0
    out = evaluate_panoptic([pred((guess, 0.9))], [gt(gt_pose, visible=visible)])
    assert out["mpjpe"] == pytest.approx(20.0)
    assert_aps(out, {25: 100.0, 50: 100.0})


def test_frame_without_prediction_lowers_recall():
    # 2 GT, 1 exact prediction: recall .5 at precision 1 -> AP = 50, Recall@500 = 50.
    out = evaluate_panoptic([pred((person(), 0.9)), pred()], [gt(person()), gt(person())])
    assert_aps(out, dict.fromkeys(THRESHOLDS, 50.0))
    assert out["recall500"] == 50.0
    assert out["mpjpe"] == 0.0


def test_predictions_in_frame_without_gt_are_false_positives():
    # Frame B has no GT; its prediction (score .9) is an FP ahead of the TP (.5) -> AP 50.
    out = evaluate_panoptic([pred((person(), 0.5)), pred((person(), 0.9))], [gt(person()), gt()])
    assert_aps(out, dict.fromkeys(THRESHOLDS, 50.0))
    assert out["num_gt"] == 1 and out["num_pred"] == 2
    assert out["recall500"] == 100.0


def test_nan_predictions_are_false_positives():
    # A NaN on a visible joint makes a prediction infinitely far: FP (.9) then TP (.5) -> AP 50.
    broken = person()
    broken[3] = np.nan
    out = evaluate_panoptic([pred((broken, 0.9), (person(), 0.5))], [gt(person())])
    assert_aps(out, dict.fromkeys(THRESHOLDS, 50.0))
    all_nan = np.full((15, 3), np.nan)
    out = evaluate_panoptic([pred((all_nan, 0.9))], [gt(person())])
    assert_aps(out, dict.fromkeys(THRESHOLDS, 0.0))
    assert out["recall500"] == 0.0 and math.isinf(out["mpjpe"])


def test_nan_on_invisible_gt_joint_is_ignored():
    # The NaN sits on a joint the GT does not annotate, so the MPJPE uses the 14 others: 0.
    visible = np.ones((1, 15), bool)
    visible[0, 3] = False
    guess = person()
    guess[3] = np.nan
    out = evaluate_panoptic([pred((guess, 0.9))], [gt(person(), visible=visible)])
    assert out["mpjpe"] == 0.0 and out["ap25"] == 100.0


def test_gt_without_visible_joints_is_not_counted():
    # GT2 has no visible joint: ignored, so 1 GT and the exact prediction gives AP 100.
    visible = np.ones((2, 15), bool)
    visible[1] = False
    out = evaluate_panoptic(
        [pred((person(), 0.9))], [gt(person(), person(3000.0), visible=visible)]
    )
    assert out["num_gt"] == 1
    assert_aps(out, dict.fromkeys(THRESHOLDS, 100.0))


def test_recall500_and_mpjpe_threshold():
    # 400 mm off: FP at every AP threshold (AP 0), but within 500 -> recall 100, MPJPE 400.
    # 600 mm off: outside 500 -> recall 0 and no match for the MPJPE (inf, as the reference).
    out = evaluate_panoptic([pred((person(400.0), 0.9))], [gt(person())])
    assert_aps(out, dict.fromkeys(THRESHOLDS, 0.0))
    assert out["recall500"] == 100.0 and out["mpjpe"] == pytest.approx(400.0)
    out = evaluate_panoptic([pred((person(600.0), 0.9))], [gt(person())])
    assert out["recall500"] == 0.0 and math.isinf(out["mpjpe"])


def test_mpjpe_takes_the_highest_scored_match_per_gt():
    # Two predictions on one GT, 10 mm (.9) and 0 mm (.8): the greedy walk keeps the first
    # by score, so MPJPE = 10, not 0 and not the mean 5.
    out = evaluate_panoptic([pred((person(10.0), 0.9), (person(), 0.8))], [gt(person())])
    assert out["mpjpe"] == pytest.approx(10.0)


def test_empty_inputs():
    out = evaluate_panoptic([], [])
    assert out["num_gt"] == 0 and out["num_pred"] == 0
    assert math.isnan(out["ap25"]) and math.isnan(out["recall500"]) and math.isinf(out["mpjpe"])
    # Frames with nothing in them add nothing: still AP 100 for the one exact prediction.
    out = evaluate_panoptic([pred(), pred((person(), 0.9))], [gt(), gt(person())])
    assert out["ap25"] == 100.0 and out["num_gt"] == 1
    # An empty frame given as bare empty arrays is accepted too.
    empty = FramePrediction(poses=np.zeros(0), scores=np.zeros(0))
    out = evaluate_panoptic([empty], [FrameGT(poses=np.zeros(0), visible=np.zeros(0))])
    assert out["num_gt"] == 0


def test_root_metrics():
    # Root proposals: 30 mm from GT1's root (.9), 200 mm from GT2's root (.8). GT3's root is not
    # visible, so it is ignored (2 GT).
    # t = 25: both FP -> 0. t = 50..150: TP (30 < t), FP (200 >= 150): recall .5 -> AP 50.
    # Recall@500: both within 500 of distinct GT -> 100; MPJPE = (30 + 200) / 2 = 115.
    gt1, gt2, gt3 = person(), person(3000.0), person(-3000.0)
    visible = np.ones((3, 15), bool)
    visible[2, 2] = False
    roots = np.stack([gt1[2] + 30.0 * X, gt2[2] + 200.0 * X])
    out = evaluate_roots(
        [FrameRootPrediction(roots=roots, scores=np.array([0.9, 0.8]))],
        [gt(gt1, gt2, gt3, visible=visible)],
    )
    assert out["root_ap25"] == 0.0
    for t in (50, 75, 100, 125, 150):
        assert out[f"root_ap{t}"] == pytest.approx(50.0)
    assert out["root_recall500"] == 100.0
    assert out["root_mpjpe"] == pytest.approx(115.0)
    assert out["root_num_gt"] == 2


def test_gt_from_xyzv():
    joints = np.concatenate([np.stack([person()]), np.full((1, 15, 1), 0.5)], axis=-1)
    joints[0, 4, 3] = -1.0  # Panoptic's "missing" confidence
    frame = FrameGT.from_xyzv(joints)
    assert frame.visible.sum() == 14 and not frame.visible[0, 4]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="frames"):
        evaluate_panoptic([pred((person(), 0.9))], [])
    with pytest.raises(ValueError, match="finite"):
        pred((person(), float("nan")))
    with pytest.raises(ValueError, match="visible"):
        gt(np.full((15, 3), np.nan))
    with pytest.raises(ValueError, match="joints"):
        evaluate_panoptic(
            [pred((person(), 0.9))], [FrameGT(np.zeros((1, 14, 3)), np.ones((1, 14)))]
        )


def test_metrics_table():
    from selfpose3d.evaluation import format_metrics_table

    rows = {
        "exact": evaluate_panoptic([pred((person(), 0.9))], [gt(person())]),
        "paper": {"ap25": 55.1, "ap50": 96.4, "ap100": 98.5, "mpjpe": 24.5},
    }
    lines = format_metrics_table(rows).splitlines()
    assert lines[0].split() == [
        "Method", "AP25", "AP50", "AP75", "AP100", "AP125", "AP150", "Recall@500", "MPJPE",
    ]  # fmt: skip
    assert lines[2].split() == ["exact"] + ["100.0"] * 7 + ["0.0"]
    assert lines[3].split() == ["paper", "55.1", "96.4", "-", "98.5", "-", "-", "-", "24.5"]
    assert len({len(line) for line in lines}) == 1  # aligned: every line equally wide
    md = format_metrics_table(rows, style="markdown").splitlines()
    assert md[1].startswith("| ---") and md[2].startswith("| exact")
