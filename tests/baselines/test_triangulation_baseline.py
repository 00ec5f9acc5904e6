"""The classical triangulation baseline: exact on clean labels, robust to the pseudo labels'
failure modes (swaps, misses, people outside the space), invariant to view/detection order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from selfpose3d.baselines.triangulation import (
    LABELINGS,
    TriangulationConfig,
    evaluate_triangulation,
    run_triangulation_baseline,
    triangulate_frame,
)
from selfpose3d.data.panoptic import MultiViewFrame
from selfpose3d.evaluation import evaluate_panoptic
from selfpose3d.evaluation.panoptic import match_frame
from selfpose3d.geometry.camera import Camera
from selfpose3d.skeleton import NUM_JOINTS, ROOT_INDEX, STANDING_POSE

CENTER, SIZE = np.array([0.0, -250.0, 800.0]), np.array([3400.0, 3000.0, 2000.0])
CFG = TriangulationConfig(space_center=CENTER.tolist(), space_size=SIZE.tolist())



def look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World -> camera rotation of a camera at ``centre`` looking at ``target`` (z-up world)."""
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def make_cameras(rng: np.random.Generator, n_views: int) -> list[Camera]:
    """HD cameras 4.5-5.5 m around the space, 1.5-2.5 m high, Panoptic-like distortion."""
    az = np.sort(rng.uniform(0, 2 * np.pi, n_views)) + rng.uniform(0, 0.3)
    cams = []
    for v, a in enumerate(az):
        r = rng.uniform(4500, 5500)
        c = CENTER + [r * np.cos(a), r * np.sin(a), rng.uniform(700, 1700)]
        R = look_at(c, CENTER + rng.normal(0, 200, 3))
        f = rng.uniform(1000, 1200)
        K = [[f, 0, 960 + rng.normal(0, 10)], [0, f, 540 + rng.normal(0, 10)], [0, 0, 1]]
        dist = [rng.uniform(-0.28, -0.22), rng.uniform(0.15, 0.22), 1e-4, -1e-4, 0.0]
        cams.append(Camera(name=f"cam{v}", K=K, dist=dist, R=R, t=-R @ c, width=1920,
                           height=1080))  # fmt: skip
    return cams


def make_people(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 15, 3) mm: scaled, turned standing people inside the space, >= 900 mm apart."""
    people, roots = [], []
    while len(people) < n:
        xy = CENTER[:2] + rng.uniform(-1300, 1300, 2)
        if any(np.linalg.norm(xy - r) < 900 for r in roots):
            continue
        yaw = rng.uniform(0, 2 * np.pi)
        Rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        people.append(rng.uniform(0.8, 1.1) * STANDING_POSE @ Rz.T + [*xy, 0.0])
        roots.append(xy)
    return np.stack(people)


def make_frame(cams: list[Camera], people: np.ndarray) -> MultiViewFrame:
    """Noise-free pseudo labels (confidence 1) of ``people`` (P, 15, 3) in every camera."""
    labels = [np.concatenate([c.project(people), np.ones((*people.shape[:2], 1))], -1)
              for c in cams]  # fmt: skip
    gt = np.concatenate([people, np.ones((*people.shape[:2], 1))], -1)
    return MultiViewFrame(
        sequence="test", frame=0, cameras=cams, images=None, image_paths=[],
        pseudo_poses=[p.astype(np.float32) for p in labels], gt_poses=gt.astype(np.float32),
        gt_ids=np.arange(len(people)),
    )  # fmt: skip


def matched_errors(poses: np.ndarray, people: np.ndarray) -> np.ndarray:
    """(P,) MPJPE mm of every GT person to its closest prediction (every person must be found)."""
    assert len(poses) == len(people)
    mpjpe, gt = match_frame(poses, people, np.ones(people.shape[:2], dtype=bool))
    assert sorted(gt.tolist()) == list(range(len(people))), "a person was found twice or missed"
    return mpjpe


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_noise_free_labels_recover_every_person_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cams, people = make_cameras(rng, int(rng.integers(3, 6))), make_people(rng, 2 + seed % 3)
    frame = make_frame(cams, people)
    poses, scores = triangulate_frame(frame, CFG)
    assert poses.shape == people.shape and scores.shape == (len(people),)
    assert np.all(matched_errors(poses, people) < 1.0)
    np.testing.assert_allclose(scores, 1.0)  # confidence 1, seen in every view
    metrics = evaluate_panoptic(*run_triangulation_baseline([frame], CFG))
    assert metrics["ap25"] == 100.0 and metrics["ap150"] == 100.0 and metrics["mpjpe"] < 1.0


def test_camera_and_detection_order_do_not_matter() -> None:
    rng = np.random.default_rng(7)
    cams, people = make_cameras(rng, 5), make_people(rng, 4)
    frame = make_frame(cams, people)
    poses, scores = triangulate_frame(frame, CFG)

    order = rng.permutation(len(cams))
    shuffled = make_frame([cams[v] for v in order], people)
    np.testing.assert_allclose(triangulate_frame(shuffled, CFG)[0], poses, atol=1e-6)

    shuffled = make_frame(cams, people)
    shuffled.pseudo_poses = [p[rng.permutation(len(p))] for p in shuffled.pseudo_poses]
    got_poses, got_scores = triangulate_frame(shuffled, CFG)
    np.testing.assert_allclose(got_poses, poses, atol=1e-6)
    np.testing.assert_allclose(got_scores, scores)


def test_rigid_motion_of_world_and_cameras_moves_the_poses_alike() -> None:
    rng = np.random.default_rng(8)
    cams, people = make_cameras(rng, 4), make_people(rng, 3)
    poses = triangulate_frame(make_frame(cams, people), CFG)[0]
    # Turn everything about the space's vertical axis: X' = Q (X - c) + c.
    a = 0.7
    Q = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    moved = [Camera(name=c.name, K=c.K, dist=c.dist, R=c.R @ Q.T, t=c.t + c.R @ CENTER
                    - c.R @ Q.T @ CENTER, width=c.width, height=c.height)
             for c in cams]  # fmt: skip
    got = triangulate_frame(make_frame(moved, (people - CENTER) @ Q.T + CENTER), CFG)[0]
    assert np.all(matched_errors(got, (poses - CENTER) @ Q.T + CENTER) < 1e-3)


def test_person_outside_the_space_is_filtered_out() -> None:
    rng = np.random.default_rng(3)
    cams, people = make_cameras(rng, 4), make_people(rng, 3)
    outsider = STANDING_POSE + [CENTER[0] + SIZE[0] / 2 + 900, CENTER[1], 0.0]  # seen by every view
    frame = make_frame(cams, np.concatenate([people, outsider[None]]))
    frame.gt_poses = frame.gt_poses[:3]  # absent from the GT, like the synthetic bystanders
    poses, _ = triangulate_frame(frame, CFG)
    assert np.all(matched_errors(poses, people) < 1.0)
    # It is the space filter that removes it: with a larger space it is triangulated.
    wide = TriangulationConfig(space_center=CENTER.tolist(), space_size=[8000.0, 8000.0, 2000.0])
    assert len(triangulate_frame(frame, wide)[0]) == 4


@pytest.mark.parametrize("labeling", [1, 2, 3], ids=["arms", "legs", "whole_body"])
def test_left_right_swap_in_one_view_is_corrected(labeling: int) -> None:
    rng = np.random.default_rng(4)
    cams, people = make_cameras(rng, 4), make_people(rng, 3)
    frame = make_frame(cams, people)
    frame.pseudo_poses[1][0] = frame.pseudo_poses[1][0][LABELINGS[labeling]]
    poses, _ = triangulate_frame(frame, CFG)
    assert np.all(matched_errors(poses, people) < 1.0)
    # With wrists and ankles missing in two other views, the swapped view is needed for them.
    frame.pseudo_poses[2][0, [5, 8, 11, 14], 2] = 0.0
    frame.pseudo_poses[3][0, [5, 8, 11, 14], 2] = 0.0
    poses, _ = triangulate_frame(frame, CFG)
    assert np.all(matched_errors(poses, people) < 1.0)
    no_swaps = TriangulationConfig(space_center=CENTER.tolist(), space_size=SIZE.tolist(),
                                   handle_swaps=False)  # fmt: skip
    assert matched_errors(triangulate_frame(frame, no_swaps)[0], people).max() > 10.0


def test_person_missed_in_one_view_is_recovered_from_the_others() -> None:
    rng = np.random.default_rng(5)
    cams, people = make_cameras(rng, 4), make_people(rng, 3)
    frame = make_frame(cams, people)
    frame.pseudo_poses[2] = frame.pseudo_poses[2][1:]
    poses, scores = triangulate_frame(frame, CFG)
    errors = matched_errors(poses, people)
    assert np.all(errors < 1.0)
    # Seen in 3 of 4 views: ranked below the others.
    assert scores[np.argmin(np.linalg.norm(poses[:, ROOT_INDEX] - people[0, ROOT_INDEX], axis=-1))
                  ] == pytest.approx(0.75)  # fmt: skip


def test_gross_outliers_and_missing_joints() -> None:
    rng = np.random.default_rng(6)
    cams, people = make_cameras(rng, 5), make_people(rng, 2)
    frame = make_frame(cams, people)
    frame.pseudo_poses[0][0, 5, :2] += 150.0  # a wrist 150 px off in one view
    frame.pseudo_poses[1][0, 8] = np.nan  # an ankle the detector did not output
    frame.pseudo_poses[2][0, 8, 2] = 0.0  # ... and one with zero confidence
    poses, _ = triangulate_frame(frame, CFG)
    assert np.all(matched_errors(poses, people) < 1.0)


def test_empty_and_degenerate_frames() -> None:
    rng = np.random.default_rng(9)
    cams, people = make_cameras(rng, 3), make_people(rng, 2)
    frame = make_frame(cams, people)
    for labels in (None, [np.zeros((0, NUM_JOINTS, 3), np.float32)] * 3):
        frame.pseudo_poses = labels
        poses, scores = triangulate_frame(frame, CFG)
        assert poses.shape == (0, NUM_JOINTS, 3) and scores.shape == (0,)
    # Each person seen by a single view: nothing can be triangulated.
    one_view = make_frame(cams, people)
    one_view.pseudo_poses = [one_view.pseudo_poses[0], *[p[:0] for p in one_view.pseudo_poses[1:]]]
    assert len(triangulate_frame(one_view, CFG)[0]) == 0
    one_view.gt_poses = None
    with pytest.raises(ValueError, match="no GT"):
        run_triangulation_baseline([one_view], CFG)


@pytest.mark.parametrize("bad", [
    {"min_joint_conf": 1.5}, {"min_views": 1}, {"association_mm": 0.0}, {"inlier_mm": -1.0},
    {"space_size": [1.0, 2.0]}, {"space_size": [1.0, 0.0, 1.0]}, {"body_scale_range": [2, 1]},
    {"min_common_joints": 1}, {"nms_mm": -1.0},
])  # fmt: skip
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        TriangulationConfig(**bad)


def test_smoke_dataset_floor(tmp_path: Path) -> None:
    """The smoke preset's synthetic data: 3 views, noise, occlusions, swaps, misses, bystanders."""
    try:
        from pipelines.ingest import ingest
        from selfpose3d.config import load_config
        from selfpose3d.data.synthetic import generate
    except ImportError as e:  # pragma: no cover - depends on the rest of the project
        pytest.skip(f"the synthetic generator or the ingest pipeline cannot be imported: {e}")
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml")
    generate(cfg.synth, tmp_path / "synth", progress=False)
    ingest(tmp_path / "synth", tmp_path / "pq", cfg.data, engine="plain", progress=False)
    manifest = json.loads((tmp_path / "synth" / "manifest.json").read_text())
    space = {"space_center": manifest["space_center"], "space_size": manifest["space_size"]}
    metrics = evaluate_triangulation(tmp_path / "pq", "test", TriangulationConfig(**space))
    print({k: round(float(v), 2) for k, v in metrics.items()})
    # Measured: ap50 79, ap75..ap150 100, mpjpe 25 mm, one prediction per GT person.
    assert metrics["ap100"] > 90.0 and metrics["ap50"] > 60.0 and metrics["mpjpe"] < 40.0
    assert metrics["num_pred"] <= 1.1 * metrics["num_gt"]  # the bystanders are filtered out
