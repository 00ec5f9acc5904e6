"""Pseudo-label generation on a tiny synthetic root: the plain and Ray engines write the same
files, the reader reads them, a COCO file of the root's own labels reproduces them, and bad
input fails before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines import pseudo_labels
from pipelines.pseudo_labels import format_summary, pseudo_label
from selfpose3d.cli import main
from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.config import DataConfig
from selfpose3d.data.panoptic import MultiViewFrame, PanopticReader
from selfpose3d.data.pseudo_labels import read_pseudo_labels
from selfpose3d.data.synthetic import PeopleConfig, RigConfig, SynthConfig, generate
from selfpose3d.skeleton import (
    PANOPTIC15_JOINTS,
    coco17_to_panoptic15,
    panoptic15_to_coco17,
)

CAMERAS = ["00_03", "00_12"]
BROKEN = ("synth_train_00", "00_12")  # (sequence, camera) of an undecodable image
# Small enough for a random-weight Keypoint R-CNN on a CPU: 160x90 images, the model at 64 px.
RCNN = {"random_init": True, "min_size": 64, "max_size": 128, "score_threshold": 0.0,
        "max_people": 1, "batch_size": 2, "progress": False, "overwrite": True}  # fmt: skip


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """2 sequences x 2 frames x 2 views, with the generator's own pseudo labels."""
    cfg = SynthConfig(seed=3, train_sequences=1, test_sequences=1, frames_per_sequence=2,
                      workers=1, people=PeopleConfig(min_people=1, max_people=2),
                      rig=RigConfig(kind="dome", cameras=CAMERAS, image_width=160,
                                    image_height=90))  # fmt: skip
    root = tmp_path_factory.mktemp("pseudo") / "synthetic"
    generate(cfg, root, progress=False)
    return root


def broken_image(root: Path) -> tuple[str, str, int]:
    """(sequence, camera, frame) of the image copy_root breaks: the first frame's."""
    return (*BROKEN, layout.list_frames(root, BROKEN[0])[0])


def copy_root(src: Path, dst: Path, *, break_image: bool = False) -> Path:
    shutil.copytree(src, dst)
    if break_image:
        layout.image_path(dst, *broken_image(dst)).write_bytes(b"\xff\xd8 truncated")
    return dst


def sequences(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


class ImageStamp:
    """A detector whose one person per image can only come from that image: x = the mean red
    value, y = the joint index + the image width, confidence 0.5."""

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for img in images:
            kp = np.full((1, 17, 3), 0.5, dtype=np.float32)
            kp[..., 0] = img[..., 0].mean()
            kp[..., 1] = np.arange(17) + img.shape[1]
            out.append(kp)
        return out


def stamp(path: Path) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return coco17_to_panoptic15(ImageStamp().detect([rgb])[0])


@pytest.fixture(scope="module")
def plain_run(synthetic, tmp_path_factory) -> tuple[Path, dict]:
    root = copy_root(synthetic, tmp_path_factory.mktemp("plain") / "root", break_image=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pseudo_labels, "build_detector", lambda cfg: ImageStamp())
        return root, pseudo_label(root, engine="plain", batch_size=3, random_init=True,
                                  overwrite=True, progress=False)  # fmt: skip


def test_plain_engine_writes_readable_labels(plain_run):
    root, summary = plain_run
    assert sorted(summary) == sequences(root) == ["synth_test_00", "synth_train_00"]
    for seq, s in summary.items():
        broken = seq == BROKEN[0]
        assert (s["frames"], s["views"], s["failed_views"]) == (2, 4 - broken, int(broken))
        assert s["people_per_view"] == 1.0
        labels, sizes = read_pseudo_labels(Path(s["file"]))
        assert sizes == {c: (160, 90) for c in CAMERAS}  # px of the image files
        for frame, per_cam in labels.items():
            for cam, poses in per_cam.items():  # each view holds its own image's detections
                expected = stamp(layout.image_path(root, seq, cam, frame))
                np.testing.assert_allclose(poses, expected, atol=0.006)
    (failure,) = summary[BROKEN[0]]["failures"]
    assert failure == {"file": str(layout.image_path(root, *broken_image(root))),
                       "reason": "image cannot be read or decoded"}  # fmt: skip
    table = format_summary(summary)
    assert "synth_train_00" in table and "not labelled:" in table

    reader = PanopticReader(root, DataConfig(), images=False)
    for seq in summary:
        labels, _ = read_pseudo_labels(layout.pseudo_label_path(root, seq))
        for frame in reader.frames(seq, "train" if "train" in seq else "test"):
            result = reader.read_or_reject(seq, frame)
            if (seq, frame) == broken_image(root)[::2]:  # its view has no labels: rejected
                assert result.kind == "missing_pseudo_labels" and BROKEN[1] in result.reason
                continue
            assert isinstance(result, MultiViewFrame)
            for cam, poses in zip(result.camera_names, result.pseudo_poses, strict=True):
                np.testing.assert_array_equal(poses, labels[frame][cam])


@pytest.mark.ray
def test_ray_engine_equals_plain(ray_session, synthetic, tmp_path):
    """Keypoint R-CNN (random weights, the same in every process) on a Ray Data actor pool."""
    seq = BROKEN[0]
    plain_root = copy_root(synthetic, tmp_path / "plain", break_image=True)
    ray_root = copy_root(synthetic, tmp_path / "ray", break_image=True)
    plain = pseudo_label(plain_root, sequences=[seq], engine="plain", **RCNN)[seq]
    # One actor takes both batches: a second one would only add a model build on this CPU.
    summary = pseudo_label(ray_root, sequences=[seq], engine="ray", actors=1, **RCNN)
    assert list(summary) == [seq]
    s = summary[seq]
    assert (s["frames"], s["views"], s["failed_views"]) == (2, 3, 1) == (
        plain["frames"], plain["views"], plain["failed_views"])  # fmt: skip
    assert s["failures"][0]["file"] == str(layout.image_path(ray_root, *broken_image(ray_root)))
    ray_labels, ray_sizes = read_pseudo_labels(Path(s["file"]))
    plain_labels, plain_sizes = read_pseudo_labels(Path(plain["file"]))
    assert ray_sizes == plain_sizes == {c: (160, 90) for c in CAMERAS}
    assert sorted(ray_labels) == sorted(plain_labels)
    for frame, per_cam in plain_labels.items():
        assert sorted(ray_labels[frame]) == sorted(per_cam)
        for cam, poses in per_cam.items():
            assert poses.shape == (1, 15, 3)  # score threshold 0: the best box is kept
            # Actors run torch on one thread: sums in another order, hence the tolerance.
            np.testing.assert_allclose(ray_labels[frame][cam], poses, atol=0.05)
    reader = PanopticReader(ray_root, DataConfig(), images=False)
    frame = layout.list_frames(ray_root, seq)[-1]
    result = reader.read_or_reject(seq, frame)
    assert isinstance(result, MultiViewFrame)
    for cam, poses in zip(result.camera_names, result.pseudo_poses, strict=True):
        np.testing.assert_array_equal(poses, ray_labels[frame][cam])


# -- COCO import --------------------------------------------------------------------------------


def to_coco(root: Path) -> tuple[dict, list[dict]]:
    """The root's pseudo labels as a COCO dataset (images + annotations with keypoint_scores)
    and as a results list with visibility flags only (conf > 0 -> v = 2, score 1)."""
    images, annotations, results = [], [], []
    for seq in sequences(root):
        labels, sizes = read_pseudo_labels(layout.pseudo_label_path(root, seq))
        for frame, per_cam in sorted(labels.items()):
            for cam, poses in per_cam.items():
                image_id = len(images)
                images.append({"id": image_id, "width": sizes[cam][0], "height": sizes[cam][1],
                               "file_name": f"{seq}/hdImgs/{cam}/{cam}_{frame:08d}.jpg"})
                for person in panoptic15_to_coco17(poses.astype(np.float64)):
                    xyv = np.concatenate([person[:, :2], 2.0 * (person[:, 2:] > 0)], axis=1)
                    keypoints = xyv.reshape(-1).tolist()
                    annotations.append({"image_id": image_id, "keypoints": keypoints,
                                        "keypoint_scores": person[:, 2].tolist()})
                    results.append({"image_id": image_id, "keypoints": keypoints})
    return {"images": images, "annotations": annotations}, results


def expected_from(original: np.ndarray, conf_from_v: bool = False) -> np.ndarray:
    """What the import gives back: shared joints as they were, neck / mid-hip re-derived."""
    out = original.copy()
    if conf_from_v:
        out[..., 2] = out[..., 2] > 0
    for joint, (a, b) in {"neck": ("l_shoulder", "r_shoulder"),
                          "mid_hip": ("l_hip", "r_hip")}.items():  # fmt: skip
        pa, pb = out[:, PANOPTIC15_JOINTS.index(a)], out[:, PANOPTIC15_JOINTS.index(b)]
        out[:, PANOPTIC15_JOINTS.index(joint), :2] = (pa[:, :2] + pb[:, :2]) / 2
        out[:, PANOPTIC15_JOINTS.index(joint), 2] = np.minimum(pa[:, 2], pb[:, 2])
    return out


def assert_reproduced(root: Path, original: dict[str, tuple], conf_from_v: bool = False):
    for seq, (labels, sizes) in original.items():
        got, got_sizes = read_pseudo_labels(layout.pseudo_label_path(root, seq))
        assert got_sizes == sizes
        assert sorted(got) == sorted(labels)
        for frame, per_cam in labels.items():
            assert sorted(got[frame]) == sorted(per_cam)
            for cam, poses in per_cam.items():
                np.testing.assert_allclose(got[frame][cam], expected_from(poses, conf_from_v),
                                           atol=0.006)  # fmt: skip


def test_coco_import_reproduces_the_labels(synthetic, tmp_path, capsys):
    root = copy_root(synthetic, tmp_path / "root")
    original = {seq: read_pseudo_labels(layout.pseudo_label_path(root, seq))
                for seq in sequences(root)}  # fmt: skip
    assert sum(len(p) for lab, _ in original.values() for per_cam in lab.values()
               for p in per_cam.values()) > 0  # fmt: skip
    dataset, results = to_coco(root)
    dataset_file = tmp_path / "dataset.json"
    dataset_file.write_text(json.dumps(dataset))

    before = layout.pseudo_label_path(root, "synth_test_00").read_bytes()
    with pytest.raises(FileExistsError, match="pseudo labels exist already; pass overwrite"):
        pseudo_label(root, coco=dataset_file)
    assert layout.pseudo_label_path(root, "synth_test_00").read_bytes() == before

    summary = pseudo_label(root, coco=dataset_file, overwrite=True)
    assert sorted(summary) == sorted(original)
    assert summary["synth_test_00"]["views"] == 2 * len(CAMERAS)
    assert_reproduced(root, original)

    # The results-list shape through the CLI: confidences from v, times a person score of 1.
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    code = main(["pseudo-label", str(root), "--coco", str(results_file), "--coco-images",
                 str(dataset_file), "--overwrite", "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "synth_train_00" in out and "people/view" in out
    assert_reproduced(root, original, conf_from_v=True)


def test_coco_import_of_one_unnamed_sequence(synthetic, tmp_path):
    root = copy_root(synthetic, tmp_path / "root")
    seq = "synth_train_00"
    labels, _ = read_pseudo_labels(layout.pseudo_label_path(root, seq))
    frame, cam = min(labels), CAMERAS[0]
    coco = {"images": [{"id": 0, "file_name": f"{cam}/{frame:08d}.jpg"}], "annotations": []}
    path = tmp_path / "one.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="do not say their sequence"):
        pseudo_label(root, coco=path, overwrite=True)  # the root has two sequences
    summary = pseudo_label(root, coco=path, sequences=[seq], overwrite=True)
    assert (summary[seq]["frames"], summary[seq]["views"]) == (1, 1)
    got, sizes = read_pseudo_labels(layout.pseudo_label_path(root, seq))
    assert got[frame][cam].shape == (0, 15, 3)
    assert sizes == {cam: (160, 90)}  # no size in the COCO file: the image on disk's


def test_bad_input_fails_before_writing(synthetic, tmp_path, capsys):
    root = copy_root(synthetic, tmp_path / "root")
    before = {seq: layout.pseudo_label_path(root, seq).read_bytes() for seq in sequences(root)}
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/nope.pth: Keypoint R-CNN weights"):
        pseudo_label(root, weights=tmp_path / "nope.pth", engine="plain", overwrite=True)
    with pytest.raises(ValueError, match="pass coco or weights/random_init, not both"):
        pseudo_label(root, coco=tmp_path / "x.json", random_init=True)
    with pytest.raises(FileNotFoundError, match="calibration_nosuch.json: calibration file"):
        pseudo_label(root, sequences=["nosuch"], engine="plain", **RCNN)
    with pytest.raises(FileNotFoundError, match="missing: root directory not found"):
        pseudo_label(tmp_path / "missing", random_init=True)
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [{"id": 0, "sequence": "synth_test_00",
                                            "camera": "99_99", "frame": 1}],
                                "annotations": []}))  # fmt: skip
    with pytest.raises(ValueError, match=f"{coco}: camera '99_99' .* is not in .*calibration"):
        pseudo_label(root, coco=coco, overwrite=True)
    assert {s: layout.pseudo_label_path(root, s).read_bytes() for s in before} == before

    # The CLI: one line on stderr, exit code 2.
    assert main(["pseudo-label", str(root), "--random-init", "--engine", "plain"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("selfpose3d pseudo-label: error: ") and "--overwrite" in err
    assert "\n" not in err
