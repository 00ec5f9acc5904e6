"""Prediction renderings: overlays on the person, per-track colours, mosaics, the MP4 video,
the 3D scene, and `visualize_predictions` / `selfpose3d visualize` on a tiny synthetic root."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from selfpose3d.cli import main
from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.synthetic.generator import make_tiny_dataset
from selfpose3d.geometry.camera import Camera
from selfpose3d.render_predictions import (
    PredictedFrame,
    read_predictions,
    render_frame,
    sequence_cameras,
    visualize_predictions,
)
from selfpose3d.skeleton import NUM_JOINTS, PANOPTIC15_JOINTS, panoptic19_to_15
from selfpose3d.visualize import (
    TRACK_COLOURS,
    UNTRACKED_COLOUR,
    draw_overlay,
    mosaic,
    plot_scene_3d,
    track_colour,
    track_colours,
    write_mosaic_video,
)

W, H = 320, 240
# A standing person at the origin, world mm, z up.
_JOINTS = {
    "neck": (0, 0, 1500), "nose": (0, -50, 1650), "mid_hip": (0, 0, 950),
    "l_shoulder": (180, 0, 1450), "l_elbow": (220, 0, 1180), "l_wrist": (240, 0, 950),
    "l_hip": (100, 0, 930), "l_knee": (110, 0, 500), "l_ankle": (110, 0, 80),
    "r_shoulder": (-180, 0, 1450), "r_elbow": (-220, 0, 1180), "r_wrist": (-240, 0, 950),
    "r_hip": (-100, 0, 930), "r_knee": (-110, 0, 500), "r_ankle": (-110, 0, 80),
}  # fmt: skip
POSE = np.array([_JOINTS[name] for name in PANOPTIC15_JOINTS], dtype=np.float64)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def camera(distortion: bool = True) -> Camera:
    """320x240 px, 4 m in front of the origin (-y), looking along +y at 1 m height, with a
    slightly tilted view and lens distortion, so the overlay must use the full model."""
    tilt = np.deg2rad(5)
    base = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # camera x = world x, y = -z, z = y
    roll = np.array([[np.cos(tilt), -np.sin(tilt), 0], [np.sin(tilt), np.cos(tilt), 0],
                     [0, 0, 1]])  # fmt: skip
    R = roll @ base
    centre = np.array([0.0, -4000.0, 1000.0])
    K = [[180.0, 0, 158.0], [0, 180.0, 121.0], [0, 0, 1]]
    dist = [-0.2, 0.05, 0.002, -0.001, 0.0] if distortion else np.zeros(5)
    return Camera(name="00_03", K=K, dist=dist, R=R, t=-R @ centre, width=W, height=H)


def cv2_project(cam: Camera, points: np.ndarray) -> np.ndarray:
    rvec = cv2.Rodrigues(cam.R)[0]
    uv, _ = cv2.projectPoints(points.reshape(-1, 1, 3), rvec, cam.t, cam.K, cam.dist)
    return uv.reshape(*points.shape[:-1], 2)


def bgr(rgb) -> tuple[int, ...]:
    return tuple(int(c) for c in rgb[::-1])


def test_track_colours_are_a_fixed_palette_and_differ_per_id():
    ids = np.arange(len(TRACK_COLOURS))
    colours = track_colours(ids)
    assert colours.dtype == np.uint8 and colours.shape == (len(ids), 3)
    assert len({tuple(c) for c in colours}) == len(ids)  # all distinct
    assert tuple(track_colours([-1, -7])[0]) == UNTRACKED_COLOUR == track_colour(-7)
    assert UNTRACKED_COLOUR not in TRACK_COLOURS
    # Stable: the same id gets the same colour in every call and after the palette wraps.
    assert track_colour(4) == TRACK_COLOURS[4] == track_colour(4 + len(TRACK_COLOURS))
    assert np.array_equal(track_colours([5, 2, 5]), track_colours([5, 2, 5]))


def test_overlay_draws_each_person_at_its_projected_joints():
    cam = camera()
    poses = np.stack([POSE + [-900, 0, 0], POSE + [900, 500, 0]])  # two people apart
    ids = np.array([3, -1])
    blank = np.zeros((H, W, 3), np.uint8)
    drawn = draw_overlay(blank, cam, poses, ids)
    assert drawn.shape == blank.shape and drawn.dtype == np.uint8
    assert not blank.any()  # the input is not drawn on
    uv = cv2_project(cam, poses)  # (2, J, 2), the reference projection with distortion
    for p, colour in enumerate([track_colour(3), UNTRACKED_COLOUR]):
        for j in range(NUM_JOINTS):
            x, y = np.round(uv[p, j]).astype(int)
            assert tuple(drawn[y, x]) == bgr(colour), (p, j)  # joint discs in track colour
    # Everything drawn lies near the projected skeletons (label above the head included).
    changed = np.argwhere(drawn.any(-1))[:, ::-1]  # (N, 2) x, y
    near = np.zeros(len(changed), bool)
    for p in range(2):
        lo, hi = uv[p].min(0) - [6, 22], uv[p].max(0) + 6
        near |= ((changed >= lo) & (changed <= hi)).all(-1)
    assert near.all() and len(changed) > 200
    # The labelled person has its id written above the head; the untracked one has none.
    head = np.round(uv[:, 1]).astype(int)
    above = drawn[head[0, 1] - 20 : head[0, 1] - 4, head[0, 0] - 8 : head[0, 0] + 12]
    # Anti-aliased text over black: pixels are the track colour scaled by their coverage.
    coverage = above.astype(float) @ np.array(bgr(track_colour(3))) / np.sum(
        np.square(bgr(track_colour(3)))
    )
    assert (coverage > 0.7).sum() >= 5
    above = drawn[head[1, 1] - 20 : head[1, 1] - 4, head[1, 0] - 8 : head[1, 0] + 12]
    assert not above.any()


def test_overlay_skips_joints_behind_the_camera_and_nan():
    cam = camera()
    blank = np.zeros((H, W, 3), np.uint8)
    behind = POSE + [0, -8000, 0]  # 4 m behind the camera
    nan = np.full_like(POSE, np.nan)
    assert not draw_overlay(blank, cam, np.stack([behind, nan]), [0, 1]).any()
    assert not draw_overlay(blank, cam, np.zeros((0, NUM_JOINTS, 3)), []).any()
    one_missing = POSE.copy()
    one_missing[5] = np.nan  # l_wrist: its joint and its limb disappear, the rest is drawn
    drawn = draw_overlay(blank, cam, one_missing[None], None)
    uv = cv2_project(cam, POSE)
    x, y = np.round(uv[5]).astype(int)
    assert not drawn[y - 1 : y + 2, x - 1 : x + 2].any()
    x, y = np.round(uv[4]).astype(int)
    assert tuple(drawn[y, x]) == bgr(UNTRACKED_COLOUR)


def test_overlay_bad_inputs_name_the_problem():
    cam = camera()
    image = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(ValueError, match="calibrated for 320x240 px but the image is 160x120"):
        draw_overlay(np.zeros((120, 160, 3), np.uint8), cam, POSE[None], [0])
    with pytest.raises(ValueError, match=r"one id per person \(1\), got 2"):
        draw_overlay(image, cam, POSE[None], [0, 1])
    with pytest.raises(ValueError, match=r"poses must have shape \(N, 15, 3\)"):
        draw_overlay(image, cam, POSE, [0])
    with pytest.raises(ValueError, match="uint8 BGR"):
        draw_overlay(image.astype(np.float32), cam, POSE[None], [0])


def test_mosaic_tiles_views_with_their_names():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(3)]
    out = mosaic(images, tile_width=200, names=["00_03", "00_12", "00_23"])
    assert out.shape == (2 * 150, 2 * 200, 3)  # 2 x 2 tiles of 200 x 150 px
    resized = cv2.resize(images[2], (200, 150), interpolation=cv2.INTER_AREA)
    assert np.array_equal(out[150:, :200][40:], resized[40:])  # below the name label
    assert (out[150:, :200][:20, :30] > 200).all(-1).any()  # the white name text
    assert not out[150:, 200:].any()  # the unused fourth tile stays black
    assert mosaic(images, cols=3, tile_width=101).shape == (76, 3 * 102, 3)  # even sizes
    tall = [images[0], np.zeros((100, 100, 3), np.uint8)]
    assert mosaic(tall, tile_width=100).shape == (100, 200, 3)  # the tallest tile sets th
    with pytest.raises(ValueError, match="at least one image"):
        mosaic([])
    with pytest.raises(ValueError, match="one label per image"):
        mosaic(images, names=["a"])


def test_mosaic_video_reads_back_with_the_right_frames(tmp_path):
    frames = [np.full((64, 96, 3), 30 * i, np.uint8) for i in range(7)]
    path = tmp_path / "videos" / "seq.mp4"
    assert write_mosaic_video(path, iter(frames), fps=5) == 7
    assert [p.name for p in path.parent.iterdir()] == ["seq.mp4"]  # no temporary file left
    cap = cv2.VideoCapture(str(path))
    try:
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(5, abs=0.01)
        read = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            read.append(frame)
    finally:
        cap.release()
    assert len(read) == 7 and read[0].shape == (64, 96, 3)
    assert [round(float(f.mean()) / 30) for f in read] == list(range(7))  # lossy, in order


def test_mosaic_video_errors_leave_no_file(tmp_path):
    path = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="no frames"):
        write_mosaic_video(path, [], fps=5)
    mixed = [np.zeros((64, 96, 3), np.uint8), np.zeros((64, 98, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1 is 98x64 px, the first frame 96x64 px"):
        write_mosaic_video(path, mixed, fps=5)
    with pytest.raises(ValueError, match="fps must be > 0"):
        write_mosaic_video(path, mixed[:1], fps=0)
    assert not any(tmp_path.iterdir())


def test_scene_plot_is_a_png(tmp_path):
    cams = [camera(), camera(distortion=False)]
    cams[1].name = "00_12"
    poses = np.stack([POSE, POSE + [800, 300, 0]])
    poses[1, 3] = np.nan
    path = plot_scene_3d(cams, poses, [0, 1], tmp_path / "scene.png",
                         space=([0, 0, 1000], [4000, 4000, 2000]))  # fmt: skip
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = cv2.imread(str(path))
    assert image.shape == (700, 700, 3) and (image < 100).any()
    empty = plot_scene_3d([], np.zeros((0, NUM_JOINTS, 3)), None, tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png", "scene.png"]


# -- visualize_predictions on a tiny synthetic root --------------------------------------------


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "raw"
    make_tiny_dataset(root)
    return root


def gt_predictions(root, sequences=("synth_train_00", "synth_test_00")) -> list[dict]:
    """predictions.jsonl lines from the GT poses: track id = body id, score 1."""
    lines = []
    for seq in sequences:
        for frame in layout.list_frames(root, seq):
            ids, joints = layout.read_bodies(layout.body_path(root, seq, frame))
            mm = layout.points_cm_to_mm(panoptic19_to_15(joints)[..., :3])
            people = [{"track_id": int(i), "score": 1.0, "joints": j.tolist()}
                      for i, j in zip(ids, mm, strict=True)]  # fmt: skip
            lines.append({"sequence": seq, "frame": frame, "people": people})
    return lines


def write_jsonl(path, lines) -> None:
    path.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (path / "predictions.jsonl").write_text(text)


def test_visualize_predictions_writes_overlays_scenes_and_videos(tiny_root, tmp_path):
    pred_dir = tmp_path / "pred"
    lines = gt_predictions(tiny_root)
    lines[1]["people"][0]["joints"][4] = [None, None, None]  # a joint predict could not place
    write_jsonl(pred_dir, lines)
    out = tmp_path / "vis"
    summary = visualize_predictions(pred_dir, tiny_root, out, fps=4, stills=2, tile_width=160)
    assert summary["frames"] == 8 and list(summary["sequences"]) == [
        "synth_train_00",
        "synth_test_00",
    ]
    for seq in ("synth_train_00", "synth_test_00"):
        done = summary["sequences"][seq]
        assert done["overlays"] == [str(out / "overlays" / f"{seq}_{f:08d}.jpg") for f in (0, 3)]
        assert done["scenes"] == [str(out / f"scene_{seq}_{f:08d}.png") for f in (0, 3)]
        assert all(cv2.imread(p).shape == (90, 320, 3) for p in done["overlays"])
        assert all(open(p, "rb").read(8) == PNG_SIGNATURE for p in done["scenes"])
        cap = cv2.VideoCapture(done["video"])
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
        assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
                ) == (320, 90)  # fmt: skip
        cap.release()

    # The rendered mosaic has each GT person's joints in their track colour on each view.
    frames = read_predictions(pred_dir)
    pred = frames[2]  # synth_train_00 frame 2
    cams = sequence_cameras(tiny_root, pred.sequence)
    image = render_frame(tiny_root, pred, cams, tile_width=160)  # tiles at the original size
    for v, cam in enumerate(cams):
        uv = cv2_project(cam, pred.poses)  # (P, J, 2)
        inside = ((uv >= 0) & (uv <= [cam.width - 1, cam.height - 1])).all(-1)
        hits = [tuple(image[y, 160 * v + x]) == bgr(track_colour(pred.track_ids[p]))
                for p, j in zip(*np.nonzero(inside), strict=True)
                for x, y in [np.round(uv[p, j]).astype(int)]]  # fmt: skip
        # Joints of one person may hide another's: most, not all, show the track colour.
        assert len(hits) > 10 and np.mean(hits) > 0.7, (v, np.mean(hits))


def test_visualize_cli_selects_frames_without_video(tiny_root, tmp_path, capsys):
    pred_dir = tmp_path / "pred"
    write_jsonl(pred_dir, gt_predictions(tiny_root))
    out = tmp_path / "vis"
    code = main(["visualize", "--predictions", str(pred_dir), "--data", str(tiny_root),
                 "--out", str(out), "--sequence", "synth_test_00", "--frames", "1:3",
                 "--no-video"])  # fmt: skip
    assert code == 0
    assert "synth_test_00: 2 frames, 2 overlays, 2 3D scenes" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [
        "synth_test_00_00000001.jpg", "synth_test_00_00000002.jpg"]  # fmt: skip
    assert not list(out.glob("*.mp4"))

    code = main(["visualize", "--predictions", str(pred_dir), "--data", str(tiny_root),
                 "--out", str(out), "--frames", "3"])  # fmt: skip
    assert code == 2 and "--frames '3': expected A:B" in capsys.readouterr().err
    code = main(["visualize", "--predictions", str(pred_dir), "--data", str(tiny_root),
                 "--out", str(out), "--sequence", "nope"])  # fmt: skip
    assert code == 2 and "no predictions of sequence 'nope'" in capsys.readouterr().err
    code = main(["visualize", "--predictions", str(tmp_path / "none"), "--data",
                 str(tiny_root), "--out", str(out)])  # fmt: skip
    assert code == 2 and "predictions.jsonl: predictions not found" in capsys.readouterr().err


def test_bad_prediction_files_name_the_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    good = {"sequence": "s", "frame": 0, "people": []}
    path.write_text(json.dumps(good) + "\n\n" + "{not json\n")
    with pytest.raises(ValueError, match=r"predictions.jsonl:3: not valid JSON"):
        read_predictions(path)
    path.write_text(json.dumps({"sequence": "s", "people": []}) + "\n")
    with pytest.raises(ValueError, match=r"predictions.jsonl:1: missing \['frame'\]"):
        read_predictions(tmp_path)
    bad = {"sequence": "s", "frame": 0, "people": [{"track_id": 0, "joints": [[0, 0, 0]] * 14}]}
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"predictions.jsonl:1: malformed people"):
        read_predictions(path)
    path.write_text(json.dumps(good) + "\n")
    (frame,) = read_predictions(path)
    assert isinstance(frame, PredictedFrame) and frame.poses.shape == (0, NUM_JOINTS, 3)
