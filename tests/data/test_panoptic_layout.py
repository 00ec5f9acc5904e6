"""Panoptic cm / y-down -> model mm / z-up conversion, checked on the real fixture files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from selfpose3d.data.panoptic_layout import (
    M_PANOPTIC,
    camera_from_panoptic,
    camera_to_panoptic,
    points_cm_to_mm,
    points_mm_to_cm,
    read_bodies,
    read_calibration,
)

SEQ = "160906_band1"
LITERATURE_VIEWS = ("00_03", "00_06", "00_12", "00_13", "00_23")


@pytest.fixture(scope="module")
def raw_calibration(fixtures_dir) -> dict[str, dict]:
    path = fixtures_dir / "panoptic" / SEQ / f"calibration_{SEQ}.json"
    return {c["name"]: c for c in json.loads(path.read_text())["cameras"]}


@pytest.fixture(scope="module")
def raw_joints_cm(fixtures_dir) -> np.ndarray:
    """(P, 19, 4) real joints of frame 168 in cm with confidence."""
    path = fixtures_dir / "panoptic" / SEQ / "hdPose3d_stage1_coco19" / "body3DScene_00000168.json"
    _, joints = read_bodies(path)
    return joints


def test_change_of_basis():
    np.testing.assert_allclose(points_cm_to_mm([1.0, 2.0, 3.0]), [10.0, 30.0, -20.0])
    assert np.linalg.det(M_PANOPTIC) == pytest.approx(1.0)  # a rotation: handedness is kept
    pts = np.random.default_rng(0).normal(size=(4, 5, 3)) * 100
    np.testing.assert_allclose(points_mm_to_cm(points_cm_to_mm(pts)), pts, atol=1e-12)


@pytest.mark.parametrize("name", LITERATURE_VIEWS)
def test_converted_projection_matches_opencv_on_raw_data(raw_calibration, raw_joints_cm, name):
    entry = raw_calibration[name]
    cam = camera_from_panoptic(entry)
    visible = raw_joints_cm[..., 3] > 0.1
    X_cm = raw_joints_cm[visible][:, :3]  # (N, 3) Panoptic frame, cm, y down
    rvec, _ = cv2.Rodrigues(np.asarray(entry["R"], dtype=np.float64))
    ref, _ = cv2.projectPoints(X_cm[:, None], rvec, np.asarray(entry["t"], dtype=np.float64),
                               np.asarray(entry["K"], dtype=np.float64),
                               np.asarray(entry["distCoef"], dtype=np.float64))  # fmt: skip
    np.testing.assert_allclose(cam.project(points_cm_to_mm(X_cm)), ref[:, 0], atol=1e-6)


def test_cameras_sit_above_the_floor_around_the_capture_space(raw_calibration, raw_joints_cm):
    cams = {n: camera_from_panoptic(e) for n, e in raw_calibration.items() if e["type"] == "hd"}
    assert len(cams) == 31
    centres = np.stack([c.center for c in cams.values()])
    # z up: the whole HD dome is above the floor (lowest ring ~0.7 m, highest ~3.4 m).
    assert centres[:, 2].min() > 500.0 and centres[:, 2].max() < 4000.0
    for name in LITERATURE_VIEWS:
        assert 2500.0 < np.linalg.norm(cams[name].center) < 4500.0
    # People stand on the floor: visible ankles within 30 cm of z = 0, hips ~0.5-1.1 m up.
    X_mm = points_cm_to_mm(raw_joints_cm[..., :3])
    visible = raw_joints_cm[..., 3] > 0.1
    ankles = X_mm[:, [8, 14]][visible[:, [8, 14]]]
    assert len(ankles) >= 3 and np.all(np.abs(ankles[:, 2]) < 300.0)
    hips = X_mm[:, 2][visible[:, 2]]
    assert np.all((hips[:, 2] > 500.0) & (hips[:, 2] < 1100.0))
    # Every literature camera sees the people in front of it.
    for name in LITERATURE_VIEWS:
        cam = cams[name]
        assert np.all(cam.R[2] @ (hips - cam.center).T > 0)


def test_calibration_round_trip(raw_calibration):
    for entry in raw_calibration.values():
        back = camera_to_panoptic(camera_from_panoptic(entry))
        assert set(back) == set(entry)
        for key in ("name", "type", "resolution", "panel", "node"):
            assert back[key] == entry[key]
        for key in ("K", "distCoef", "R", "t"):
            got, want = np.asarray(back[key]), np.asarray(entry[key])
            assert got.shape == want.shape, (entry["name"], key)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=key)


def test_read_calibration_matches_entries(fixtures_dir, raw_calibration):
    cams = read_calibration(fixtures_dir / "panoptic" / SEQ / f"calibration_{SEQ}.json")
    assert set(cams) == set(raw_calibration)
    cam = cams["00_03"]
    assert (cam.width, cam.height) == (1920, 1080)
    assert cam.extra == {"type": "hd", "panel": 0, "node": 3}
    np.testing.assert_allclose(cam.t, 10.0 * np.asarray(raw_calibration["00_03"]["t"])[:, 0])


def test_malformed_entry_names_the_camera(raw_calibration):
    entry = dict(raw_calibration["00_03"])
    del entry["K"]
    with pytest.raises(ValueError, match=r"camera '00_03': malformed calibration entry"):
        camera_from_panoptic(entry)
    entry = dict(raw_calibration["00_03"], R=np.eye(3).tolist())
    entry["R"][0][0] = 2.0
    with pytest.raises(ValueError, match="R is not a rotation matrix"):
        camera_from_panoptic(entry)
