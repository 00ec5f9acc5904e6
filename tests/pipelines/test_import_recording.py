"""import-recording: a recording + a rig -> a Panoptic-layout sequence that the reader and the
ingest accept; sizes are checked, outputs are atomic, both engines write the same files.

Camera frame k of the test recording is a flat grey image of level 10 k."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.ingest import ingest
from pipelines.recordings import import_recording, parse_offsets
from selfpose3d.cli import main
from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.config import DataConfig
from selfpose3d.data.panoptic import PanopticReader
from selfpose3d.data.pseudo_labels import write_pseudo_labels
from selfpose3d.geometry.camera import Camera

W, H = 64, 48
NAMES = ["cam0", "cam1", "cam2"]


def rig(size: tuple[int, int] = (W, H)) -> list[Camera]:
    """Three cameras 4 m from the origin looking at (0, 0, 900) mm, calibrated at ``size``."""
    cams = []
    s = size[0] / W
    for name, angle in zip(NAMES, (0.0, 2.1, 4.2), strict=True):
        center = np.array([4000 * np.cos(angle), 4000 * np.sin(angle), 1500.0])
        z = (np.array([0.0, 0.0, 900.0]) - center) / np.linalg.norm([0, 0, 900.0] - center)
        x = np.cross(z, [0.0, 0.0, 1.0])
        x /= np.linalg.norm(x)
        R = np.stack([x, np.cross(z, x), z])
        K = [[58 * s, 0, (W / 2) * s - 0.5], [0, 58 * s, (H / 2) * s - 0.5], [0, 0, 1]]
        cams.append(Camera(name=name, K=K, dist=[0.02, 0, 0, 0, 0], R=R, t=-R @ center,
                           width=size[0], height=size[1]))  # fmt: skip
    return cams


def grey(k: int) -> np.ndarray:
    return np.full((H, W, 3), 10 * k, np.uint8)


def write_video(path: Path, n: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    for k in range(n):
        writer.write(grey(k))
    writer.release()


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    """cam0: 12-frame video; cam1: 13-frame video (starts a frame early); cam2: 12 images."""
    rec = tmp_path / "rec"
    rec.mkdir()
    write_video(rec / "cam0.mp4", 12)
    write_video(rec / "cam1.mp4", 13)
    (rec / "cam2").mkdir()
    for k in range(12):
        cv2.imwrite(str(rec / "cam2" / f"{k:04d}.png"), grey(k))
    return rec


OFFSETS = {"cam1": 1}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


def level(path: Path) -> float:
    return float(cv2.imread(str(path)).mean())


def test_plain_import_writes_a_root_the_reader_and_ingest_accept(recording, tmp_path):
    root, cams = tmp_path / "root", rig()
    summary = import_recording(cams, recording, root, "take1", offsets=OFFSETS, start=1,
                               stop=10, every=2, engine="plain", chunk_frames=2,
                               progress=False)  # fmt: skip
    frames = [1, 3, 5, 7, 9]
    assert (summary["frames"], summary["first_frame"], summary["last_frame"]) == (5, 1, 9)
    assert summary["cameras"] == NAMES and summary["recording_frames"] == 12
    assert summary["offsets"] == {"cam0": 0, "cam1": 1, "cam2": 0}
    assert summary["sizes"] == {c: [W, H] for c in NAMES} and summary["rescaled"] == []
    expected = {"manifest.json", "take1/calibration_take1.json"} | {
        f"take1/hdImgs/{c}/{c}_{f:08d}.jpg" for c in NAMES for f in frames}
    assert set(tree(root)) == expected  # nothing else: no staging directory left
    assert summary["bytes"] == sum(len(b) for k, b in tree(root).items() if k.endswith(".jpg"))
    for f in frames:
        for c in NAMES:
            k = f + OFFSETS.get(c, 0)
            # mp4v and JPEG round trips shift a grey level by < 5 (half the spacing)
            assert abs(level(layout.image_path(root, "take1", c, f)) - 10 * k) < 5
    assert json.loads((root / "manifest.json").read_text()) == {
        "splits": {"train": ["take1"], "test": []}}
    calib = layout.read_calibration(layout.calibration_path(root, "take1"))
    for cam in cams:
        back = calib[cam.name]
        np.testing.assert_allclose(back.K, cam.K)
        np.testing.assert_allclose(back.R, cam.R, atol=1e-12)
        np.testing.assert_allclose(back.t, cam.t, atol=1e-9)
        assert (back.width, back.height) == (W, H)

    # What `selfpose3d pseudo-label` adds, then the reader and the ingest.
    people = np.random.default_rng(0).uniform(-300, 300, (1, 15, 3)) + [0, 0, 900]
    labels = {f: {c.name: np.concatenate([c.project(people), np.full((1, 15, 1), 0.9)], -1)
                  for c in cams} for f in frames}  # fmt: skip
    write_pseudo_labels(layout.pseudo_label_path(root, "take1"), labels,
                        {c.name: (W, H) for c in cams})  # fmt: skip
    reader = PanopticReader(root, DataConfig(), images=True)
    assert (reader.sequences("train"), reader.sequences("test")) == (["take1"], [])
    assert reader.frames("take1", "train") == frames
    frame = reader.read_frame("take1", 7)
    assert frame.gt_poses is None and frame.camera_names == NAMES
    assert frame.images[1] == layout.image_path(root, "take1", "cam1", 7).read_bytes()
    np.testing.assert_allclose(frame.pseudo_poses[2][..., :2], cams[2].project(people), atol=0.01)

    out = ingest(root, tmp_path / "parquet", DataConfig(), engine="plain", progress=False)
    assert (out["frames_read"], out["frames_written"], out["frames_rejected"]) == (5, 5, 0)
    assert out["splits"]["test"]["frames_read"] == 0
    assert not list((tmp_path / "parquet" / "test").glob("*.parquet"))


def test_sequences_merge_into_the_manifest_and_existing_ones_are_kept(recording, tmp_path):
    root = tmp_path / "root"
    kwargs = {"offsets": OFFSETS, "engine": "plain", "progress": False}
    import_recording(rig(), recording, root, "a", stop=4, **kwargs)
    import_recording(rig(), recording, root, "b", every=6, **kwargs)
    assert json.loads((root / "manifest.json").read_text())["splits"] == {
        "train": ["a", "b"], "test": []}
    before = tree(root / "a")
    with pytest.raises(FileExistsError, match=rf"{root / 'a'}: sequence 'a' already exists; "
                                              r"pass overwrite=True \(--overwrite\)"):
        import_recording(rig(), recording, root, "a", every=5, **kwargs)
    assert tree(root / "a") == before

    import_recording(rig(), recording, root, "a", every=5, overwrite=True, **kwargs)
    assert sorted(p.name for p in (root / "a" / "hdImgs" / "cam0").iterdir()) == [
        f"cam0_{f:08d}.jpg" for f in (0, 5, 10)]
    assert sorted(p.name for p in root.iterdir()) == ["a", "b", "manifest.json"]
    assert json.loads((root / "manifest.json").read_text())["splits"] == {
        "train": ["a", "b"], "test": []}

    # A failing replacement leaves the earlier sequence as it was.
    before = tree(root / "a")
    bad = recording / "cam2" / "0007.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=rf"{bad}: camera cam2, recording frame 7: image cannot "
                                         r"be decoded"):  # fmt: skip
        import_recording(rig(), recording, root, "a", overwrite=True, chunk_frames=4, **kwargs)
    assert tree(root / "a") == before
    assert sorted(p.name for p in root.iterdir()) == ["a", "b", "manifest.json"]
    with pytest.raises(ValueError, match="recording frame 7"):
        import_recording(rig(), recording, root, "c", **kwargs)
    assert "c" not in json.loads((root / "manifest.json").read_text())["splits"]["train"]
    assert sorted(p.name for p in root.iterdir()) == ["a", "b", "manifest.json"]


def test_image_size_must_match_the_calibration(recording, tmp_path):
    root = tmp_path / "root"
    kwargs = {"offsets": OFFSETS, "engine": "plain", "progress": False}
    with pytest.raises(ValueError, match=rf"{recording / 'cam0.mp4'}: camera cam0: the "
                                         r"recording's images are 64x48 px but the rig is "
                                         r"calibrated at 128x96 px; the aspect ratio is the same: "
                                         r"pass rescale=True"):  # fmt: skip
        import_recording(rig((128, 96)), recording, root, "s", **kwargs)
    assert not root.exists()
    with pytest.raises(ValueError, match=r"calibrated at 64x64 px; the aspect ratios differ"):
        import_recording(rig((64, 64)), recording, root, "s", rescale=True, **kwargs)

    big = rig((128, 96))
    summary = import_recording(big, recording, root, "s", rescale=True, every=11, **kwargs)
    assert summary["rescaled"] == NAMES and summary["sizes"]["cam1"] == [W, H]
    calib = layout.read_calibration(layout.calibration_path(root, "s"))
    for cam in big:
        np.testing.assert_allclose(calib[cam.name].K, cam.scaled(0.5, 0.5).K)
        # The rescaled calibration is the one the images were taken with (rig() at 64x48).
        np.testing.assert_allclose(calib[cam.name].K, rig()[NAMES.index(cam.name)].K)


def test_bad_output_arguments(recording, tmp_path):
    kwargs = {"offsets": OFFSETS, "engine": "plain", "progress": False}
    with pytest.raises(ValueError, match=r"sequence name '\.\./x': use letters"):
        import_recording(rig(), recording, tmp_path / "root", "../x", **kwargs)
    with pytest.raises(ValueError, match=r"holds the recording's input"):
        import_recording(rig(), {"cam0": recording / "cam0.mp4", "cam1": recording / "cam1.mp4",
                                 "cam2": recording / "cam2"}, tmp_path, "rec",
                         overwrite=True, **kwargs)  # fmt: skip
    assert (recording / "cam2" / "0000.png").is_file()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "manifest.json").write_text("{oops")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'root' / 'manifest.json'}: manifest is "
                                         r"not valid JSON"):  # fmt: skip
        import_recording(rig(), recording, tmp_path / "root", "s", **kwargs)
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["manifest.json"]
    assert parse_offsets(["cam1=3", " cam2=-1 "]) == {"cam1": 3, "cam2": -1}
    with pytest.raises(ValueError, match=r"--offset 'cam1:3': expected CAMERA=FRAMES"):
        parse_offsets(["cam1:3"])


def test_cli(recording, tmp_path, capsys):
    pytest.importorskip("selfpose3d.data.rigs")
    rig_file = tmp_path / "calibration_rig.json"
    layout.write_calibration(rig_file, rig())
    root = tmp_path / "root"
    base = ["import-recording", "--rig", str(rig_file), "--input", str(recording), "--out",
            str(root), "--sequence", "s", "--engine", "plain", "--quiet"]  # fmt: skip
    assert main([*base, "--offset", "cam1=1", "--every", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["frames"], summary["last_frame"], summary["offsets"]["cam1"]) == (3, 8, 1)
    assert layout.image_path(root, "s", "cam1", 8).is_file()

    for extra, message in (([], "sequence 's' already exists"),
                           (["--offset", "cam1:1"], "expected CAMERA=FRAMES"),
                           (["--offset", "cam1=-1", "--overwrite"], "offset -1 is negative")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("selfpose3d import-recording: error: ") and message in err
        assert err.count("\n") == 1


@pytest.mark.ray
def test_ray_and_plain_engines_write_the_same_files(ray_session, recording, tmp_path):
    kwargs = {"offsets": OFFSETS, "every": 2, "chunk_frames": 2, "progress": False}
    plain = import_recording(rig(), recording, tmp_path / "plain", "s", engine="plain", **kwargs)
    ray = import_recording(rig(), recording, tmp_path / "ray", "s", engine="ray", num_cpus=2,
                           **kwargs)  # fmt: skip
    assert ray_session.is_initialized()  # the running instance is used, not shut down
    assert (ray["engine"], ray["frames"], ray["bytes"]) == ("ray", 6, plain["bytes"])
    assert tree(tmp_path / "ray") == tree(tmp_path / "plain") and len(tree(tmp_path / "ray")) == 20

    bad = recording / "cam2" / "0004.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=rf"^{bad}: camera cam2, recording frame 4: image cannot "
                                         r"be decoded"):  # fmt: skip
        import_recording(rig(), recording, tmp_path / "ray", "t", engine="ray", num_cpus=2,
                         **kwargs)  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["manifest.json", "s"]
