"""A user's own rig and recording, end to end, through the command line: a synthetic scene of
two people walking is filmed by a 3-camera rig whose calibration is written in every
supported format; its per-camera videos are imported, pseudo-labelled from a COCO-keypoints
file, ingested, trained on (smoke), predicted, tracked and visualised.

The synthetic generator provides what a real recording lacks: the GT 3D poses and person ids,
against which the triangulated tracks and the drawn overlays are checked."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from selfpose3d.cli import main
from selfpose3d.config import load_config
from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.pseudo_labels import read_pseudo_labels
from selfpose3d.data.rigs import load_rig, save_rig
from selfpose3d.skeleton import PANOPTIC15_JOINTS, panoptic15_to_coco17
from selfpose3d.tracks import count_id_switches, match_to_gt

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
SEQ = "take1"
# Two adults walking the whole time, always inside the space; a detector that never misses
# and never invents anybody, so that every frame holds both people in every view.
SCENE = [
    "synth.train_sequences=1", "synth.test_sequences=0", "synth.frames_per_sequence=16",
    "synth.people.min_people=2", "synth.people.max_people=2", "synth.people.walk_prob=1.0",
    "synth.people.enter_exit_prob=0.0", "synth.people.child_fraction=0.0",
    "synth.detector.outside_people=0", "synth.detector.false_positive_rate=0.0",
    "synth.detector.miss_prob=0.0", "synth.detector.occluded_miss_prob=0.0",
]  # fmt: skip
FORMATS = {"panoptic": "calibration_take1.json", "anipose": "calibration.toml",
           "opencv": "cameras.yaml"}  # fmt: skip


def run(*argv: str) -> None:
    assert main([str(a) for a in argv]) == 0, argv


def write_coco(labels: dict, size: dict, path: Path) -> None:
    """The synthetic detector's labels as one COCO keypoints dataset file, the way an external
    detector would deliver them: one image entry per view, annotations with scores."""
    images, annotations = [], []
    for frame, per_cam in sorted(labels.items()):
        for cam, poses in sorted(per_cam.items()):
            image_id = len(images)
            images.append({"id": image_id, "file_name": f"{cam}/{cam}_{frame:08d}.jpg",
                           "width": size[cam][0], "height": size[cam][1]})  # fmt: skip
            for person in panoptic15_to_coco17(poses):
                xyv = np.concatenate([person[:, :2], (person[:, 2:] > 0) * 2.0], axis=1)
                annotations.append({
                    "image_id": image_id, "category_id": 1, "score": 1.0,
                    "keypoints": xyv.reshape(-1).round(2).tolist(),
                    "keypoint_scores": person[:, 2].tolist(),
                })  # fmt: skip
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}]}))  # fmt: skip


def write_videos(src: Path, sequence: str, cameras: list, frames: list[int], out: Path
                 ) -> None:  # fmt: skip
    """One MP4 per camera from the scene's rendered images (what a user's rig records)."""
    out.mkdir()
    for cam in cameras:
        size = (cam.width, cam.height)
        writer = cv2.VideoWriter(str(out / f"{cam.name}.mp4"),
                                 cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)  # fmt: skip
        for frame in frames:
            writer.write(cv2.imread(str(layout.image_path(src, sequence, cam.name, frame))))
        writer.release()


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict:
    from selfpose3d.data.synthetic import generate

    base = tmp_path_factory.mktemp("own_rig")
    cfg = load_config(SMOKE, SCENE)
    manifest = generate(dataclasses.replace(cfg.synth, workers=1), base / "synthetic",
                        progress=False)  # fmt: skip
    (sequence,) = manifest["splits"]["train"]
    return {"base": base, "src": base / "synthetic", "sequence": sequence}


def test_own_rig_end_to_end(scene, capsys):
    base, src, scene_seq = scene["base"], scene["src"], scene["sequence"]
    cameras = list(layout.read_calibration(layout.calibration_path(src, scene_seq)).values())
    frames = layout.list_frames(src, scene_seq)
    assert len(cameras) == 3 and len(frames) == 16

    # 1. The rig in every format, each read back as the same cameras; the anipose file in
    #    metres drives the rest (what a user of anipose would hand in).
    rigs = base / "rigs"
    rigs.mkdir()
    points = np.array([[0.0, 0.0, 900.0], [800.0, -600.0, 1500.0]])
    for fmt, name in FORMATS.items():
        save_rig(rigs / name, cameras, fmt, unit="m" if fmt == "anipose" else "mm")
        loaded = load_rig(rigs / name, unit="m" if fmt == "anipose" else "mm")
        for a, b in zip(cameras, loaded, strict=True):
            assert a.name == b.name
            np.testing.assert_allclose(b.project(points), a.project(points), atol=1e-6)
    save_rig(rigs / "cameras.json", cameras, "opencv")
    assert [c.name for c in load_rig(rigs / "cameras.json")] == [c.name for c in cameras]

    # 2. Per-camera videos -> a Panoptic-layout root.
    write_videos(src, scene_seq, cameras, frames, base / "videos")
    root = base / "studio"
    run("import-recording", "--rig", rigs / "calibration.toml", "--unit", "m", "--input",
        base / "videos", "--out", root, "--sequence", SEQ, "--engine", "plain", "--quiet")
    for cam in cameras:
        assert all(layout.image_path(root, SEQ, cam.name, i).is_file() for i in range(16))
    # Every format imports to the same rig (the first 2 frames are enough for that).
    for fmt, name in [*FORMATS.items(), ("opencv", "cameras.json")]:
        unit = "m" if fmt == "anipose" else "mm"
        other = base / f"studio_{name.replace('.', '_')}"
        run("import-recording", "--rig", rigs / name, "--unit", unit, "--input", base / "videos",
            "--out", other, "--sequence", SEQ, "--stop", "2", "--engine", "plain", "--quiet")
        imported = layout.read_calibration(layout.calibration_path(other, SEQ))
        for cam in cameras:
            np.testing.assert_allclose(imported[cam.name].project(points), cam.project(points),
                                       atol=1e-6)  # fmt: skip

    # The same calibration read in the wrong unit: the cameras are 1000x too close together.
    # Nothing tells the importer, but it says what looks wrong before writing anything.
    capsys.readouterr()
    run("import-recording", "--rig", rigs / "calibration.toml", "--input", base / "videos",
        "--out", base / "wrong_unit", "--sequence", SEQ, "--engine", "plain", "--quiet")
    err = capsys.readouterr().err
    assert "warning:" in err and "translation unit" in err, err

    # 3. Pseudo labels from a COCO keypoints file (the recording's frame i is the scene's
    #    frames[i]).
    labels, size = read_pseudo_labels(layout.pseudo_label_path(src, scene_seq))
    write_coco({i: labels[f] for i, f in enumerate(frames)}, size, base / "coco.json")
    run("pseudo-label", root, "--coco", base / "coco.json", "--engine", "plain", "--quiet")
    imported, _ = read_pseudo_labels(layout.pseudo_label_path(root, SEQ))
    assert sorted(imported) == list(range(16))
    first = imported[0][cameras[0].name]
    assert first.shape == (2, 15, 3)
    np.testing.assert_allclose(first[:, PANOPTIC15_JOINTS.index("l_wrist")],
                               labels[frames[0]][cameras[0].name][:, PANOPTIC15_JOINTS.index(
                                   "l_wrist")], atol=0.01)  # fmt: skip

    # 4. Ingest and self-supervised training (smoke budget), no 3D label anywhere.
    run("ingest", root, "--config", SMOKE, "--out", base / "parquet", "--engine", "plain",
        "--quiet")
    fast = ["--set", "model.input_mode=pseudo_heatmaps", "--set", "model.use_attention=false",
            "--set", "train.max_steps_per_epoch=4", "--set", "train.num_threads=1"]  # fmt: skip
    from selfpose3d.cli import _scorable_split
    from selfpose3d.training.run import train

    assert not _scorable_split(base / "parquet", "test"), "a recording has nothing to score"

    cfg = load_config(SMOKE, fast[1::2])
    summary = train(cfg, base / "parquet", base / "run", progress=False)
    assert set(summary["metrics"]) == {"root", "pose", "finetune"}

    # 5. Predict with the trained model, and by triangulation; both tracked.
    run("predict", "--checkpoint", base / "run", "--data", root, "--out", base / "pred",
        "--quiet")
    run("predict", "--triangulate", "--config", SMOKE, "--data", root, "--out",
        base / "pred_tri", "--quiet")
    for out in ("pred", "pred_tri"):
        lines = (base / out / "predictions.jsonl").read_text().splitlines()
        assert [json.loads(line)["frame"] for line in lines] == list(range(16))
        info = json.loads((base / out / "summary.json").read_text())
        assert info["frames"] == 16 and info["frames_per_second"] > 0
        rows = pq.read_table(base / out / "predictions.parquet").to_pylist()
        people = [p for line in lines for p in json.loads(line)["people"]]
        assert len(rows) == len(people) == info["people"]
        assert all(np.shape(r["joints"]) == (15, 3) for r in rows)
        assert [r["track_id"] for r in rows] == [p["track_id"] for p in people]
    model_summary = json.loads((base / "pred" / "summary.json").read_text())
    assert model_summary["mode"] == "model"

    # Tracks against the scene's GT: both people found in every frame, no id switch.
    tri = [json.loads(line) for line in (base / "pred_tri" / "predictions.jsonl").open()]
    pred_roots, pred_ids, gt_roots, gt_ids = [], [], [], []
    for i, frame in enumerate(frames):
        ids, joints_cm = layout.read_bodies(layout.body_path(src, scene_seq, frame))
        gt = layout.points_cm_to_mm(joints_cm[:, 2, :3])  # mid-hip, world mm
        people = tri[i]["people"]
        pred_roots.append(np.array([p["joints"][2] for p in people]).reshape(-1, 3))
        pred_ids.append(np.array([p["track_id"] for p in people], np.int64))
        gt_roots.append(gt)
        gt_ids.append(ids)
    matches = match_to_gt(pred_roots, gt_roots)
    assert all(len(m) == 2 for m in matches), "both people are found in every frame"
    assert count_id_switches(pred_ids, gt_ids, matches) == 0
    assert len({int(t) for ids in pred_ids for t in ids}) == 2

    # 6. Pictures: overlays, 3D scenes, the mosaic video.
    run("visualize", "--predictions", base / "pred_tri", "--data", root, "--out", base / "vis")
    video = cv2.VideoCapture(str(base / "vis" / f"{SEQ}.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 16
    video.release()
    assert list((base / "vis").glob("scene_*.png"))
    overlays = sorted((base / "vis" / "overlays").glob("*.jpg"))
    assert overlays
    frame = int(overlays[0].stem.rsplit("_", 1)[1])
    _, joints_cm = layout.read_bodies(layout.body_path(src, scene_seq, frames[frame]))
    gt = layout.points_cm_to_mm(joints_cm[:, :15, :3].reshape(-1, 3))
    check_overlay_on_people(root, cameras[0], frame, gt, overlays[0], len(cameras))


def check_overlay_on_people(root: Path, cam, frame: int, gt_joints: np.ndarray, overlay: Path,
                            views: int) -> None:  # fmt: skip
    """The first view's tile of the mosaic differs from the raw image where the GT joints
    (N, 3) mm project, i.e. the predicted skeletons are drawn on the people, and hardly
    anywhere else."""
    raw = cv2.imread(str(layout.image_path(root, SEQ, cam.name, frame)))
    mosaic = cv2.imread(str(overlay))
    # The first tile: top left, the image resized to the tile width (selfpose3d.visualize.mosaic).
    cols = math.ceil(math.sqrt(views))
    scale = (mosaic.shape[1] // cols) / raw.shape[1]
    tile = cv2.resize(raw, (mosaic.shape[1] // cols, round(raw.shape[0] * scale)))
    drawn = np.abs(mosaic[: tile.shape[0], : tile.shape[1]].astype(int) - tile).sum(axis=2) > 60
    uv = np.round(cam.project(gt_joints) * scale).astype(int)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < tile.shape[1]) & (uv[:, 1] >= 0) & (
        uv[:, 1] < tile.shape[0])
    hits = [drawn[max(v - 2, 0): v + 3, max(u - 2, 0): u + 3].any() for u, v in uv[inside]]
    assert np.mean(hits) > 0.9, f"{np.mean(hits):.2f} of the projected joints are drawn"
    assert drawn.mean() < 0.25, "the overlay covers the whole image"

