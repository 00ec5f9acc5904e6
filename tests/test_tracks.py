"""3D tracking: people keep their ids through crossings and short misses, lose them after long
ones; id switches are counted the CLEAR-MOT way."""

from __future__ import annotations

import numpy as np
import pytest

from selfpose3d.tracks import (
    Tracker,
    TrackerConfig,
    count_id_switches,
    match_to_gt,
    track_poses,
)

FPS = 10.0  # the synthetic recordings' frame rate
SPEED = 1200.0 / FPS  # 1.2 m/s walking, mm per frame


def crossing(rng: np.random.Generator, lateral: float, n: int = 30, noise: float = 20.0
             ) -> np.ndarray:  # fmt: skip
    """(n, 2, 3) roots, mm: person 0 walks +x, person 1 walks -x, ``lateral`` mm apart in y,
    passing each other at frame n / 2; Gaussian noise of ``noise`` mm on every coordinate."""
    t = np.arange(n) - n / 2
    a = np.stack([SPEED * t, np.full(n, lateral / 2), np.full(n, 950.0)], -1)
    b = np.stack([-SPEED * t, np.full(n, -lateral / 2), np.full(n, 950.0)], -1)
    return np.stack([a, b], 1) + rng.normal(0, noise, (n, 2, 3))


def person_ids(ids: list[np.ndarray], order: list[np.ndarray]) -> list[set[int]]:
    """Track ids given to each person (by its index in ``order``) over all frames."""
    n_people = max(int(o.max()) + 1 for o in order if len(o))
    out: list[set[int]] = [set() for _ in range(n_people)]
    for frame_ids, people in zip(ids, order, strict=True):
        for track, person in zip(frame_ids.tolist(), people.tolist(), strict=True):
            out[person].add(track)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_two_people_walking_past_each_other_keep_their_ids(seed: int) -> None:
    rng = np.random.default_rng(seed)
    roots = crossing(rng, lateral=400.0)
    # Detections come in a random order every frame: ids must follow the people, not rows.
    order = [rng.permutation(2) for _ in roots]
    ids = track_poses([r[o] for r, o in zip(roots, order, strict=True)])
    assert person_ids(ids, order) == [{0}, {1}] or person_ids(ids, order) == [{1}, {0}]
    gt_ids = [o + 10 for o in order]  # GT person ids 10 and 11
    matches = match_to_gt([r[o] for r, o in zip(roots, order, strict=True)],
                          [r[o] for r, o in zip(roots, order, strict=True)])  # fmt: skip
    assert count_id_switches(ids, gt_ids, matches) == 0


@pytest.mark.parametrize("seed", range(5))
def test_constant_velocity_bridges_a_crossing_both_people_are_hidden_in(seed: int) -> None:
    rng = np.random.default_rng(seed)
    roots = crossing(rng, lateral=150.0, n=24)
    # Frames 11-13 (where they pass each other, 150 mm apart) have no detections.
    seen = [r if not 11 <= i <= 13 else r[:0] for i, r in enumerate(roots)]
    ids = track_poses(seen)
    assert {int(i[0]) for i in ids if len(i)} == {0} and {int(i[1]) for i in ids if len(i)} == {1}
    # Without the motion model the last positions are closer to the wrong person afterwards:
    # 4 frames x 120 mm = 480 mm along x, against 150 mm across.
    still = track_poses(seen, cfg=TrackerConfig(velocity_weight=0.0))
    assert still[10].tolist() == [0, 1] and still[14].tolist() == [1, 0]


def test_a_person_missed_for_three_frames_keeps_the_id() -> None:
    # Subsampled frame numbers (every 12th, like the Panoptic test frames) must count as one
    # step each; the person walks 120 mm per step.
    frames = [12 * i for i in range(12)]
    roots = [np.array([[SPEED * i, 0.0, 950.0]]) for i in range(12)]
    missed = [r if not 4 <= i <= 6 else r[:0] for i, r in enumerate(roots)]
    ids = track_poses(missed, frames=frames)
    assert [i.tolist() for i in ids] == [[0]] * 4 + [[]] * 3 + [[0]] * 5


def test_prediction_is_advanced_by_the_frames_elapsed() -> None:
    # 100 mm per frame; missed in frames 2-4; at frame 5 the person is 400 mm from where it
    # was last seen but exactly where 100 + 4 x 100 predicts. A 100 mm gate accepts it only
    # with the motion model.
    xs = {0: 0.0, 1: 100.0, 5: 500.0}
    roots = [np.array([[xs[f], 0.0, 900.0]]) if f in xs else np.zeros((0, 3)) for f in range(6)]
    ids = track_poses(roots, cfg=TrackerConfig(max_distance=100.0))
    assert ids[5].tolist() == [0]
    ids = track_poses(roots, cfg=TrackerConfig(max_distance=100.0, velocity_weight=0.0))
    assert ids[5].tolist() == [1]


@pytest.mark.parametrize(("missed", "same"), [(5, True), (6, False)])
def test_max_gap_is_the_longest_miss_a_track_survives(missed: int, same: bool) -> None:
    roots = [np.array([[0.0, 0.0, 900.0]])] * 3 + [np.zeros((0, 3))] * missed \
        + [np.array([[10.0, 0.0, 900.0]])]  # fmt: skip
    ids = track_poses(roots, cfg=TrackerConfig(max_gap=5))
    assert ids[-1].tolist() == ([0] if same else [1])


def test_a_person_entering_gets_a_new_id_and_ids_are_never_reused() -> None:
    tracker = Tracker(TrackerConfig(max_gap=1))
    a, b = np.array([0.0, 0.0, 900.0]), np.array([2000.0, 0.0, 900.0])
    assert tracker.update(a[None], frame=0).tolist() == [0]
    assert tracker.update(a[None], frame=1).tolist() == [0]
    assert tracker.update(np.stack([b, a]), frame=2).tolist() == [1, 0]  # b enters
    assert tracker.update(b[None], frame=3).tolist() == [1]
    assert tracker.update(b[None], frame=4).tolist() == [1]
    # a was last seen at frame 2 and has missed frames 3 and 4 (> max_gap): its track ended,
    # and coming back it gets a fresh id, not 0 again.
    assert tracker.update(np.stack([a, b]), frame=5).tolist() == [2, 1]


def test_detections_below_min_score_are_ignored() -> None:
    tracker = Tracker(TrackerConfig(min_score=0.5))
    a = np.array([[0.0, 0.0, 900.0]])
    assert tracker.update(a, np.array([0.9]), 0).tolist() == [0]
    # A weak detection near the track must not take it, nor start a track.
    pair = np.array([[20.0, 0.0, 900.0], [5.0, 0.0, 900.0]])
    assert tracker.update(pair, np.array([0.1, 0.8]), 1).tolist() == [-1, 0]
    assert tracker.update(np.array([[3000.0, 0.0, 900.0]]), np.array([0.2]), 2).tolist() == [-1]
    assert tracker.update(np.array([[3000.0, 0.0, 900.0]]), np.array([0.6]), 3).tolist() == [1]
    # A root that is not finite cannot be tracked either.
    assert tracker.update(np.array([[np.nan, 0.0, 0.0]]), None, 4).tolist() == [-1]


def test_empty_frames_and_bad_input() -> None:
    tracker = Tracker()
    assert tracker.update(np.zeros((0, 3)), frame=3).shape == (0,)
    assert tracker.update(np.array([[0.0, 0.0, 0.0]]), frame=4).tolist() == [0]
    with pytest.raises(ValueError, match="frame 4 does not follow frame 4"):
        tracker.update(np.zeros((0, 3)), frame=4)
    with pytest.raises(ValueError, match=r"roots must be \(P, 3\)"):
        tracker.update(np.zeros((2, 2)), frame=5)
    with pytest.raises(ValueError, match="2 roots but scores of shape"):
        tracker.update(np.zeros((2, 3)), np.ones(3), frame=5)
    for bad in ({"max_distance": 0.0}, {"max_gap": -1}, {"velocity_weight": 1.5},
                {"frame_step": -2}):  # fmt: skip
        with pytest.raises(ValueError, match="tracking"):
            TrackerConfig(**bad)


def test_match_to_gt_is_the_minimum_total_distance_within_500_mm() -> None:
    # Greedy nearest-first would pair pred 1 with GT 0 (100 mm) and pred 0 with GT 1 (450 mm),
    # 550 mm in all; the optimum pairs them straight, 200 + 150 = 350 mm.
    pred = np.array([[0.0, 0, 0], [300.0, 0, 0], [5000.0, 0, 0]])
    gt = np.array([[200.0, 0, 0], [450.0, 0, 0], [np.nan, np.nan, np.nan]])
    (pairs,) = match_to_gt([pred], [gt])
    assert sorted(pairs.tolist()) == [[0, 0], [1, 1]]
    # Nothing within 500 mm; empty frames.
    far, empty = match_to_gt([pred[2:], pred], [gt[:1], np.zeros((0, 3))])
    assert far.shape == (0, 2) and empty.shape == (0, 2)


def test_count_id_switches_by_hand() -> None:
    def frame(pred_ids: list[int], gt_ids: list[int], pairs: list[tuple[int, int]]):
        return np.array(pred_ids), np.array(gt_ids), np.array(pairs).reshape(-1, 2)

    def count(*frames) -> int:
        return count_id_switches(*map(list, zip(*frames, strict=True)))

    # One person: tracks 4, 4, 9, 9, 4 -> two switches.
    assert count(*(frame([t], [7], [(0, 0)]) for t in (4, 4, 9, 9, 4))) == 2
    # Unmatched frames do not reset the memory: 4, -, 4 is none; 4, -, 9 is one.
    assert count(frame([4], [7], [(0, 0)]), frame([], [7], []), frame([4], [7], [(0, 0)])) == 0
    assert count(frame([4], [7], [(0, 0)]), frame([4], [7], []), frame([9], [7], [(0, 0)])) == 1
    # Two people exchanging their tracks: a switch each. Row order does not matter.
    assert count(frame([1, 2], [7, 8], [(0, 0), (1, 1)]),
                 frame([2, 1], [7, 8], [(1, 0), (0, 1)]),
                 frame([2, 1], [8, 7], [(0, 1), (1, 0)])) == 2  # fmt: skip
    # An untracked prediction (-1) is no identity.
    assert count(frame([4], [7], [(0, 0)]), frame([-1], [7], [(0, 0)]),
                 frame([4], [7], [(0, 0)])) == 0  # fmt: skip
    with pytest.raises(ValueError, match="frame counts differ"):
        count_id_switches([np.array([1])], [], [])
