"""The Panoptic reader: real fixture files, tiny written trees, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.config import PANOPTIC_5_VIEWS, DataConfig
from selfpose3d.data.panoptic import MultiViewFrame, PanopticReader, Rejection
from selfpose3d.data.pseudo_labels import write_pseudo_labels
from selfpose3d.geometry.camera import Camera

SEQ = "160906_band1"
REAL_FRAMES = list(range(168, 188))


# -- a tiny Panoptic-layout tree -----------------------------------------------------------


def look_at_camera(name: str, node: int, center: np.ndarray, size=(64, 48)) -> Camera:
    """A camera at ``center`` (mm, z up) looking at (0, 0, 900) mm."""
    z = np.array([0.0, 0.0, 900.0]) - center
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])  # image y points down
    w, h = size
    K = [[0.9 * w, 0, w / 2 - 0.5], [0, 0.9 * w, h / 2 - 0.5], [0, 0, 1]]
    return Camera(name=name, K=K, dist=[0.01, -0.005, 0.001, 0.0, 0.0], R=R, t=-R @ center,
                  width=w, height=h, extra={"type": "hd", "panel": 0, "node": node})


def tiny_cameras(size=(64, 48)) -> list[Camera]:
    centres = [(4000.0, 0.0, 1500.0), (0.0, 4000.0, 1500.0), (-3000.0, -3000.0, 1800.0)]
    return [look_at_camera(f"00_0{i + 1}", i + 1, np.array(c), size)
            for i, c in enumerate(centres)]


def tiny_bodies(frame: int) -> tuple[np.ndarray, np.ndarray]:
    """ids (3,), joints (3, 19, 4) in Panoptic cm, y down; body 2's root is barely seen."""
    rng = np.random.default_rng(frame)
    mm = rng.uniform(-300, 300, (3, 19, 3)) + [[[-500, 0, 900]], [[500, 200, 900]], [[0, 0, 900]]]
    conf = np.full((3, 19, 1), 0.8)
    conf[0, 5] = -1.0  # a missing joint
    conf[2, 2] = 0.05  # root below min_gt_root_conf: not a GT person
    return np.array([7, 8, 9]), np.concatenate([layout.points_mm_to_cm(mm), conf], -1)


def jpeg(width: int, height: int, seed: int = 0) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def write_tree(root: Path, sequences: dict[str, list[int]], cameras: list[Camera] | None = None,
               labels: bool = True, manifest: dict | None = None) -> list[Camera]:
    """Write calibration, bodies, images and pseudo labels (projected GT) of each sequence."""
    cameras = cameras or tiny_cameras()
    for seq, frames in sequences.items():
        layout.write_calibration(layout.calibration_path(root, seq), cameras)
        pseudo = {}
        for f in frames:
            ids, joints = tiny_bodies(f)
            layout.write_bodies(layout.body_path(root, seq, f), ids, joints)
            mm = layout.points_cm_to_mm(joints[:2, :15, :3])
            pseudo[f] = {}
            for c in cameras:
                path = layout.image_path(root, seq, c.name, f)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg(c.width, c.height, f))
                uv = c.project(mm)
                pseudo[f][c.name] = np.concatenate([uv, np.full((2, 15, 1), 0.7)], -1)
        if labels:
            sizes = {c.name: (c.width, c.height) for c in cameras}
            write_pseudo_labels(layout.pseudo_label_path(root, seq), pseudo, sizes)
    if manifest is not None:
        (root / "manifest.json").write_text(json.dumps(manifest))
    return cameras


# -- the real fixtures ---------------------------------------------------------------------


@pytest.fixture
def real_root(fixtures_dir: Path) -> Path:
    return fixtures_dir / "panoptic"


def real_cfg(**kw) -> DataConfig:
    return DataConfig(cameras=list(PANOPTIC_5_VIEWS), train_sequences=[SEQ], **kw)


def test_real_cameras_by_name_and_by_panel_node(real_root):
    by_name = PanopticReader(real_root, real_cfg(), images=False).cameras(SEQ)
    keys = [(0, 3), (0, 6), "0_12", "0:13", (0, 23)]
    by_node = PanopticReader(real_root, real_cfg(), images=False, cameras=keys).cameras(SEQ)
    assert [c.name for c in by_name] == PANOPTIC_5_VIEWS == [c.name for c in by_node]
    for a, b in zip(by_name, by_node, strict=True):
        assert a.extra == b.extra and a.extra["type"] == "hd"
        assert (a.width, a.height) == (1920, 1080)
        np.testing.assert_array_equal(a.R, b.R)


def test_real_frame_168_in_mm_z_up(real_root):
    frame = PanopticReader(real_root, real_cfg(), images=False).read_frame(SEQ, 168)
    raw = json.loads(layout.body_path(real_root, SEQ, 168).read_text())["bodies"]
    assert frame.gt_poses.shape == (3, 15, 4) and frame.gt_poses.dtype == np.float32
    assert frame.gt_ids.tolist() == [b["id"] for b in raw]
    # Neck of the first body, by hand: (x, y, z) cm, y down -> (10 x, 10 z, -10 y) mm, z up.
    x, y, z, c = raw[0]["joints19"][0:4]
    np.testing.assert_allclose(frame.gt_poses[0, 0], [10 * x, 10 * z, -10 * y, float(c > 0.1)],
                               rtol=1e-6)  # fmt: skip


def test_real_projection_matches_raw_calibration(real_root):
    reader = PanopticReader(real_root, real_cfg(), images=False)
    frame = reader.read_frame(SEQ, 168)
    calib = json.loads(layout.calibration_path(real_root, SEQ).read_text())["cameras"]
    raw_cams = {c["name"]: c for c in calib}
    raw_joint = np.array(json.loads(layout.body_path(real_root, SEQ, 168).read_text())
                         ["bodies"][1]["joints19"], dtype=np.float64).reshape(19, 4)[4, :3]
    for cam in frame.cameras:
        rc = raw_cams[cam.name]
        rvec = cv2.Rodrigues(np.array(rc["R"], dtype=np.float64))[0]
        expected = cv2.projectPoints(raw_joint[None], rvec, np.array(rc["t"], dtype=np.float64),
                                     np.array(rc["K"]), np.array(rc["distCoef"]))[0].reshape(2)
        got = cam.project(layout.points_cm_to_mm(raw_joint))
        np.testing.assert_allclose(got, expected, atol=1e-6)
        # The reader's float32 GT joint projects to the same pixel up to float32 rounding.
        np.testing.assert_allclose(cam.project(frame.gt_poses[1, 4, :3].astype(np.float64)),
                                   expected, atol=1e-2)  # fmt: skip


def test_real_frame_interval(real_root):
    reader = PanopticReader(real_root, real_cfg(frame_interval=5, test_frame_interval=12),
                            images=False)  # fmt: skip
    assert reader.frames(SEQ, "train") == [168, 173, 178, 183]
    assert reader.frames(SEQ, "test") == [168, 180]


def test_real_without_images_reads_all_frames(real_root):
    reader = PanopticReader(real_root, real_cfg(), images=False)
    results = list(reader.iter_sequence(SEQ, "train"))
    assert [f for f, _ in results] == REAL_FRAMES
    for _, frame in results:
        assert isinstance(frame, MultiViewFrame)
        assert frame.images is None and frame.pseudo_poses is None
        assert len(frame.image_paths) == 5 and frame.gt_poses.shape[1:] == (15, 4)


def test_real_with_images_reports_every_missing_image(real_root):
    results = list(PanopticReader(real_root, real_cfg()).iter_sequence(SEQ, "train"))
    assert len(results) == 20 and all(isinstance(r, Rejection) for _, r in results)
    for frame, rej in results:
        assert rej.kind == "missing_image"
        assert rej.file == str(layout.image_path(real_root, SEQ, "00_03", frame))
        assert "not found" in rej.reason


# -- tiny trees ----------------------------------------------------------------------------


def test_tiny_tree_frame_contents(tmp_path):
    cams = write_tree(tmp_path, {"s1": [0, 1, 2]}, manifest={"splits": {"train": ["s1"]}})
    reader = PanopticReader(tmp_path, DataConfig())
    assert reader.sequences("train") == ["s1"] and reader.sequences("test") == []
    frame = reader.read_frame("s1", 1)
    assert frame.camera_names == [c.name for c in cams]  # every calibration camera, in order
    assert [len(b) for b in frame.images] == [len(layout.image_path(tmp_path, "s1", c.name, 1)
                                              .read_bytes()) for c in cams]  # fmt: skip
    # Body 9's root confidence is 0.05: not a GT person. Body 7's joint 5 is missing.
    assert frame.gt_ids.tolist() == [7, 8]
    assert frame.gt_poses[0, 5, 3] == 0 and frame.gt_poses[:, :, 3].sum() == 2 * 15 - 1
    for cam, pseudo in zip(frame.cameras, frame.pseudo_poses, strict=True):
        assert pseudo.shape == (2, 15, 3) and pseudo.dtype == np.float32
        np.testing.assert_allclose(pseudo[..., :2], cam.project(frame.gt_poses[..., :3]),
                                   atol=0.01)  # fmt: skip


def test_resize_on_read_scales_cameras_images_and_labels(tmp_path):
    write_tree(tmp_path, {"s1": [0]})
    full = PanopticReader(tmp_path, DataConfig(train_sequences=["s1"])).read_frame("s1", 0)
    cfg = DataConfig(train_sequences=["s1"], image_width=32, image_height=24)
    small = PanopticReader(tmp_path, cfg).read_frame("s1", 0)
    joint = full.gt_poses[0, 2, :3].astype(np.float64)
    for cam_f, cam_s, img, pf, ps in zip(full.cameras, small.cameras, small.images,
                                         full.pseudo_poses, small.pseudo_poses, strict=True):
        assert cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR).shape == (24, 32, 3)
        assert (cam_s.width, cam_s.height) == (32, 24)
        np.testing.assert_allclose(cam_s.project(joint), (cam_f.project(joint) + 0.5) * 0.5 - 0.5,
                                   atol=1e-9)  # fmt: skip
        np.testing.assert_allclose(ps[..., :2], (pf[..., :2] + 0.5) * 0.5 - 0.5, atol=1e-4)
        np.testing.assert_array_equal(ps[..., 2], pf[..., 2])


def test_pseudo_labels_in_another_pixel_frame_are_rescaled(tmp_path):
    cams = write_tree(tmp_path, {"s1": [0]}, labels=False)
    frame = PanopticReader(tmp_path, DataConfig(train_sequences=["s1"])).read_frame("s1", 0)
    assert frame.pseudo_poses is None
    uv = np.zeros((1, 15, 3), np.float32)
    uv[..., :2], uv[..., 2] = [[15.5, 11.5]], 0.9  # the centre pixel of a 32x24 image
    label_dir = tmp_path / "labels"
    write_pseudo_labels(label_dir / "pseudo2d_s1.json", {0: {c.name: uv for c in cams}},
                        {c.name: (32, 24) for c in cams})  # fmt: skip
    cfg = DataConfig(train_sequences=["s1"], pseudo_label_dir=str(label_dir))
    frame = PanopticReader(tmp_path, cfg).read_frame("s1", 0)
    for poses in frame.pseudo_poses:
        np.testing.assert_allclose(poses[0, :, :2], [[31.5, 23.5]] * 15)  # 64x48 centre


def test_pseudo_labels_missing_for_a_frame_is_a_rejection(tmp_path):
    cams = write_tree(tmp_path, {"s1": [0, 1]}, labels=False)
    sizes = {c.name: (c.width, c.height) for c in cams}
    label_file = layout.pseudo_label_path(tmp_path, "s1")
    write_pseudo_labels(label_file, {0: {c.name: np.zeros((0, 15, 3)) for c in cams}}, sizes)
    results = dict(PanopticReader(tmp_path, DataConfig(train_sequences=["s1"]))
                   .iter_sequence("s1"))  # fmt: skip
    assert [p.shape for p in results[0].pseudo_poses] == [(0, 15, 3)] * 3
    assert results[1].kind == "missing_pseudo_labels" and results[1].file == str(label_file)
    assert "frame 1" in results[1].reason


def test_no_split_source_is_an_error(tmp_path):
    write_tree(tmp_path, {"s1": [0]})
    with pytest.raises(ValueError, match="manifest.json"):
        PanopticReader(tmp_path, DataConfig()).sequences("train")


# -- bad input -----------------------------------------------------------------------------


def test_malformed_calibration(tmp_path):
    write_tree(tmp_path, {"s1": [0]})
    path = layout.calibration_path(tmp_path, "s1")
    path.write_text('{"cameras": [')
    with pytest.raises(ValueError, match=rf"{path}.*not valid JSON"):
        PanopticReader(tmp_path, DataConfig(train_sequences=["s1"])).frames("s1", "train")


def test_missing_calibration(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"calibration_s1\.json.*not found"):
        PanopticReader(tmp_path, DataConfig(train_sequences=["s1"])).frames("s1", "train")


def test_camera_missing_from_calibration(tmp_path):
    write_tree(tmp_path, {"s1": [0]})
    cfg = DataConfig(train_sequences=["s1"], cameras=["00_01", "00_07"])
    with pytest.raises(ValueError, match=r"calibration_s1\.json: camera '00_07' is not in"):
        PanopticReader(tmp_path, cfg).read_frame("s1", 0)
    with pytest.raises(ValueError, match=r"\(panel, node\) = \(3, 1\) is not in"):
        PanopticReader(tmp_path, cfg, cameras=[(3, 1)]).cameras("s1")


def test_missing_image_is_reported(tmp_path):
    write_tree(tmp_path, {"s1": [0, 1]})
    missing = layout.image_path(tmp_path, "s1", "00_02", 1)
    missing.unlink()
    results = dict(PanopticReader(tmp_path, DataConfig(train_sequences=["s1"]))
                   .iter_sequence("s1"))  # fmt: skip
    assert isinstance(results[0], MultiViewFrame)
    assert results[1] == Rejection(sequence="s1", frame=1, file=str(missing),
                                   kind="missing_image",
                                   reason="image file not found (1 of 3 views missing)")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_size"])
def test_undecodable_image_is_reported(tmp_path, damage):
    write_tree(tmp_path, {"s1": [0]})
    bad = layout.image_path(tmp_path, "s1", "00_03", 0)
    data = bad.read_bytes()
    bad.write_bytes({"garbage": b"\xff\xd8 not really a jpeg", "truncated": data[: len(data) // 2],
                     "wrong_size": jpeg(80, 48)}[damage])  # fmt: skip
    for width in (0, 32):  # checked both when passed through and when resized
        cfg = DataConfig(train_sequences=["s1"], image_width=width, image_height=width * 3 // 4)
        rej = PanopticReader(tmp_path, cfg).read_or_reject("s1", 0)
        assert isinstance(rej, Rejection) and rej.kind == "bad_image" and rej.file == str(bad)
        assert ("80x48" in rej.reason) if damage == "wrong_size" else ("decoded" in rej.reason)


def test_nan_in_pose_file_is_reported(tmp_path):
    write_tree(tmp_path, {"s1": [0, 1]})
    path = layout.body_path(tmp_path, "s1", 1)
    path.write_text(path.read_text().replace('"joints19": [', '"joints19": [NaN, ', 1)
                    .replace(", 0.8]", "]", 1))  # keep 19 x 4 numbers  # fmt: skip
    results = dict(PanopticReader(tmp_path, DataConfig(train_sequences=["s1"]))
                   .iter_sequence("s1"))  # fmt: skip
    assert isinstance(results[0], MultiViewFrame)
    assert results[1].kind == "bad_pose_file" and results[1].file == str(path)
    assert "NaN" in results[1].reason


def test_malformed_pose_json_is_reported(tmp_path):
    write_tree(tmp_path, {"s1": [0]})
    path = layout.body_path(tmp_path, "s1", 0)
    path.write_text('{"bodies": [{"id": 1, ')
    rej = PanopticReader(tmp_path, DataConfig(train_sequences=["s1"])).read_or_reject("s1", 0)
    assert rej.kind == "bad_pose_file" and rej.file == str(path) and "malformed" in rej.reason


def test_nan_in_pseudo_label_file_fails_the_sequence(tmp_path):
    write_tree(tmp_path, {"s1": [0]})
    path = layout.pseudo_label_path(tmp_path, "s1")
    path.write_text(path.read_text().replace("0.7]", "NaN]", 1))
    with pytest.raises(ValueError, match=rf"{path}.*NaN"):
        PanopticReader(tmp_path, DataConfig(train_sequences=["s1"])).frames("s1", "train")
