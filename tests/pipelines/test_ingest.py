"""The ingest job: Ray and plain engines agree, rejections are counted, outputs are protected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.ingest import ingest
from selfpose3d.cli import main
from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.config import DataConfig
from selfpose3d.data.pseudo_labels import write_pseudo_labels
from selfpose3d.data.schema import SCHEMA_VERSION_KEY, read_dataset
from selfpose3d.geometry.camera import Camera

SEQUENCES = {"a": [0, 1, 2, 3, 4], "b": [0, 1, 2], "c": [10, 11]}
SPLITS = {"train": ["a", "b"], "test": ["c"]}


def rig(size=(64, 48)) -> list[Camera]:
    """Three cameras around the origin looking at (0, 0, 900) mm."""
    cams = []
    for i, angle in enumerate((0.0, 2.1, 4.2)):
        center = np.array([4000 * np.cos(angle), 4000 * np.sin(angle), 1500.0])
        z = (np.array([0.0, 0.0, 900.0]) - center) / np.linalg.norm([0, 0, 900.0] - center)
        x = np.cross(z, [0.0, 0.0, 1.0])
        x /= np.linalg.norm(x)
        R = np.stack([x, np.cross(z, x), z])
        w, h = size
        cams.append(Camera(name=f"00_0{i + 1}", K=[[58, 0, 31.5], [0, 58, 23.5], [0, 0, 1]],
                           dist=[0.02, 0, 0, 0, 0], R=R, t=-R @ center, width=w, height=h,
                           extra={"type": "hd", "panel": 0, "node": i + 1}))  # fmt: skip
    return cams


def write_root(root: Path) -> Path:
    """A tiny Panoptic-layout root: 3 sequences, 2 people, images and pseudo labels."""
    cams = rig()
    for seq, frames in SEQUENCES.items():
        layout.write_calibration(layout.calibration_path(root, seq), cams)
        labels = {}
        for f in frames:
            rng = np.random.default_rng(f)
            mm = rng.uniform(-300, 300, (2, 19, 3)) + [[[-400, 0, 900]], [[400, 0, 900]]]
            joints = np.concatenate([layout.points_mm_to_cm(mm), np.full((2, 19, 1), 0.9)], -1)
            layout.write_bodies(layout.body_path(root, seq, f), np.array([1, 2]), joints)
            labels[f] = {}
            for c in cams:
                img = rng.integers(0, 255, (c.height, c.width, 3), dtype=np.uint8)
                path = layout.image_path(root, seq, c.name, f)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(cv2.imencode(".jpg", img)[1].tobytes())
                uv = c.project(layout.points_cm_to_mm(joints[:, :15, :3]))
                labels[f][c.name] = np.concatenate([uv, np.full((2, 15, 1), 0.8)], -1)
        write_pseudo_labels(layout.pseudo_label_path(root, seq), labels,
                            {c.name: (c.width, c.height) for c in cams})  # fmt: skip
    (root / "manifest.json").write_text(json.dumps({"splits": SPLITS}))
    return root


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = write_root(tmp_path / "src")
    layout.image_path(root, "a", "00_02", 3).unlink()  # one frame must be rejected
    return root


def sorted_table(out: Path, split: str) -> pa.Table:
    table = pa.concat_tables([pq.read_table(f) for f in sorted((out / split).glob("*.parquet"))])
    return table.sort_by([("sequence", "ascending"), ("frame", "ascending")])


def test_ray_and_plain_engines_write_the_same_rows(ray_session, src, tmp_path):
    cfg = DataConfig(rows_per_shard=2)
    summaries = {}
    for engine in ("plain", "ray"):
        out = tmp_path / engine
        summaries[engine] = ingest(src, out, cfg, engine=engine, num_cpus=2, progress=False)
        assert json.loads((out / "summary.json").read_text()) == summaries[engine]
    assert ray_session.is_initialized()  # a running Ray instance is used, not shut down

    for engine, s in summaries.items():
        assert (s["engine"], s["source"], s["schema_version"]) == (engine, str(src), 1)
        assert (s["frames_read"], s["frames_written"], s["frames_rejected"]) == (10, 9, 1)
        assert s["rejected_by_reason"] == {"missing_image": 1}
        missing = str(layout.image_path(src, "a", "00_02", 3))
        assert [(r["sequence"], r["frame"], r["file"]) for r in s["rejected"]] == [
            ("a", 3, missing)]
        train, test = s["splits"]["train"], s["splits"]["test"]
        assert (train["sequences"], test["sequences"]) == (["a", "b"], ["c"])
        assert train["frames_read_per_sequence"] == {"a": 5, "b": 3}
        counts = ("frames_read", "frames_written", "frames_rejected")
        assert [train[k] for k in counts] == [8, 7, 1] and [test[k] for k in counts] == [2, 2, 0]
        assert s["bytes_written"] == sum(f.stat().st_size for f in (tmp_path / engine).rglob(
            "*.parquet")) > 0  # fmt: skip
        assert s["bytes_per_frame"] == pytest.approx(s["bytes_written"] / 9)
        assert s["data_config"]["rows_per_shard"] == 2 and s["wall_seconds"] > 0

    for split, frames in (("train", 7), ("test", 2)):
        plain, ray = sorted_table(tmp_path / "plain", split), sorted_table(tmp_path / "ray", split)
        assert plain.num_rows == frames and plain.equals(ray)
        assert set(plain["sequence"].to_pylist()) == set(SPLITS[split])
        for f in (tmp_path / "ray" / split).glob("*.parquet"):
            assert pq.read_metadata(f).num_rows <= 2
            schema = pq.read_schema(f)
            assert schema.metadata[SCHEMA_VERSION_KEY] == b"1"
            assert not any(isinstance(t.type, pa.ExtensionType) for t in schema)
            assert schema.field("images").type == pa.list_(pa.large_binary())
    frames = {(f.sequence, f.frame): f for f in read_dataset(tmp_path / "ray")}
    assert ("a", 3) not in frames and len(frames) == 9
    frame = frames[("b", 1)]
    assert frame.images[0] == layout.image_path(src, "b", "00_01", 1).read_bytes()
    assert frame.gt_poses.shape == (2, 15, 4) and len(frame.pseudo_poses) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "ray", "src"]  # no staging


def test_resized_ingest_scales_cameras(ray_session, src, tmp_path):
    cfg = DataConfig(train_sequences=["b"], image_width=32, image_height=24)
    summary = ingest(src, tmp_path / "out", cfg, engine="ray", num_cpus=2, progress=False)
    assert (summary["frames_written"], summary["splits"]["test"]["frames_read"]) == (3, 0)
    assert list((tmp_path / "out" / "test").glob("*.parquet")) == []
    original = layout.read_calibration(layout.calibration_path(src, "b"))
    for frame in read_dataset(tmp_path / "out" / "train"):
        joint = frame.gt_poses[1, 2, :3].astype(np.float64)
        for cam, img, pseudo in zip(frame.cameras, frame.images, frame.pseudo_poses, strict=True):
            assert (cam.width, cam.height) == (32, 24)
            decoded = cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR)
            assert decoded.shape == (24, 32, 3)
            u = original[cam.name].project(joint)
            np.testing.assert_allclose(cam.project(joint), (u + 0.5) * 0.5 - 0.5, atol=1e-9)
            np.testing.assert_allclose(pseudo[1, 2, :2], (u + 0.5) * 0.5 - 0.5, atol=0.01)


def test_output_holding_another_dataset_is_refused(src, tmp_path):
    out = tmp_path / "out"
    cfg = DataConfig(rows_per_shard=4)
    ingest(src, out, cfg, engine="plain", progress=False)
    ingest(src, out, cfg, engine="plain", progress=False)  # an identical re-run may overwrite
    with pytest.raises(ValueError, match=rf"{out}: output directory already holds a different "
                                         r"dataset \(data_config differ"):  # fmt: skip
        ingest(src, out, DataConfig(rows_per_shard=3), engine="plain", progress=False)
    assert json.loads((out / "summary.json").read_text())["data_config"]["rows_per_shard"] == 4
    summary = ingest(src, out, DataConfig(rows_per_shard=3), engine="plain", progress=False,
                     overwrite=True)  # fmt: skip
    assert summary["splits"]["train"]["files"] == [f"part-0000{i}.parquet" for i in range(3)]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"{foreign}: output directory is not empty"):
        ingest(src, foreign, cfg, engine="plain", progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="contains the source"):
        ingest(src, tmp_path, cfg, engine="plain", progress=False, overwrite=True)


def test_bad_sequence_fails_before_writing(src, tmp_path, capsys):
    calib = layout.calibration_path(src, "b")
    calib.write_text("{not json")
    with pytest.raises(ValueError, match=rf"{calib}: calibration is not valid JSON"):
        ingest(src, tmp_path / "out", DataConfig(), engine="plain", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    assert main(["ingest", str(src), "--out", str(tmp_path / "out"), "--engine", "plain",
                 "--quiet"]) == 2
    assert "calibration is not valid JSON" in capsys.readouterr().err


def test_cli_starts_and_stops_its_own_ray(src, tmp_path):
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "selfpose3d.cli", "ingest", str(src), "--out",
         str(tmp_path / "out"), "--set", "data.rows_per_shard=4", "--num-cpus", "1", "--quiet",
         "--json"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert (summary["engine"], summary["frames_written"], summary["frames_rejected"]) == (
        "ray", 9, 1)
