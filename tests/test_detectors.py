"""Detectors: the COCO keypoints import (both file shapes, patterns, bad input) and Keypoint
R-CNN's plumbing with random weights (shapes, confidences, weight files, the missing-weights
error)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from selfpose3d.detectors import (
    KeypointRCNNDetector,
    default_weights_path,
    read_coco_keypoints,
    resolve_weights,
)
from selfpose3d.skeleton import COCO17_JOINTS, PANOPTIC15_JOINTS

COCO = {name: i for i, name in enumerate(COCO17_JOINTS)}
PAN = {name: i for i, name in enumerate(PANOPTIC15_JOINTS)}


def person(special: dict[str, tuple[float, float, float]] | None = None) -> list[float]:
    """COCO-17 keypoints: joint i at (100 + i, 200 + i) with v = 2, except ``special``."""
    kp = np.array([[100.0 + i, 200.0 + i, 2.0] for i in range(17)])
    for name, value in (special or {}).items():
        kp[COCO[name]] = value
    return kp.reshape(-1).tolist()


def write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


# -- COCO import --------------------------------------------------------------------------------


def dataset(tmp_path: Path) -> Path:
    images = [
        {"id": 1, "file_name": "seqA/hdImgs/00_03/00_03_00000007.jpg", "width": 64, "height": 48},
        {"id": "b", "file_name": "anything.jpg", "sequence": "seqA", "camera": "00_06",
         "frame": 7},
        {"id": 3, "file_name": "seqA/hdImgs/00_06/00_06_00000008.jpg"},
    ]  # fmt: skip
    first = person({"l_shoulder": (10, 20, 2), "r_shoulder": (30, 24, 1),
                    "l_hip": (12, 40, 2), "r_hip": (20, 44, 0)})  # fmt: skip
    scores = [0.05 * i for i in range(17)]
    scores[COCO["nose"]] = 1.25  # above 1: clipped
    annotations = [
        {"image_id": 1, "keypoints": first, "score": 0.8},
        {"image_id": "b", "keypoints": person(), "score": 0.5, "keypoint_scores": scores},
        {"image_id": 1, "keypoints": person({"nose": (5, 6, 0)})},  # no score: 1
    ]
    return write(tmp_path / "dataset.json", {"images": images, "annotations": annotations})


def test_dataset_file_confidences_and_derived_joints(tmp_path):
    out = read_coco_keypoints(dataset(tmp_path))
    assert set(out) == {"seqA"}
    seq = out["seqA"]
    assert sorted(seq.labels) == [7, 8]
    assert sorted(seq.labels[7]) == ["00_03", "00_06"]
    assert seq.image_size == {"00_03": (64, 48)}
    assert seq.labels[8]["00_06"].shape == (0, 15, 3)  # listed, nobody detected

    a, b = seq.labels[7]["00_03"]  # entry order kept within an image
    assert a.dtype == np.float32 and a.shape == (15, 3)
    # Visibility flag times person score: v > 0 -> 0.8, v = 0 -> 0.
    np.testing.assert_allclose(a[PAN["l_wrist"]], [100 + COCO["l_wrist"], 200 + COCO["l_wrist"],
                                                   0.8])  # fmt: skip
    np.testing.assert_allclose(a[PAN["r_hip"]], [20, 44, 0.0])
    # Neck = midpoint of the shoulders (10,20) and (30,24), the lower confidence; mid-hip alike.
    np.testing.assert_allclose(a[PAN["neck"]], [20, 22, 0.8])
    np.testing.assert_allclose(a[PAN["mid_hip"]], [16, 42, 0.0])
    # No score: 1; v = 0 still 0.
    np.testing.assert_allclose(b[PAN["nose"]], [5, 6, 0.0])
    np.testing.assert_allclose(b[PAN["l_knee"], 2], 1.0)

    (c,) = seq.labels[7]["00_06"]
    # keypoint_scores win over v and score; clipped to [0, 1].
    assert c[PAN["nose"], 2] == 1.0
    np.testing.assert_allclose(c[PAN["r_ankle"], 2], 0.05 * COCO["r_ankle"], rtol=1e-6)
    np.testing.assert_allclose(c[PAN["neck"], 2], 0.05 * COCO["l_shoulder"], rtol=1e-6)


def test_results_list_with_dataset_file(tmp_path):
    images = write(tmp_path / "images.json", {"images": [
        {"id": 10, "file_name": "/data/rec/hdImgs/cam1/cam1_00000002.jpg", "width": 32,
         "height": 24},
        {"id": 11, "file_name": "/data/rec/hdImgs/cam2/cam2_00000002.jpg"},
    ]})  # fmt: skip
    results = write(tmp_path / "results.json", [
        {"image_id": 10, "category_id": 1, "keypoints": person(), "score": 0.9},
        {"image_id": 10, "category_id": 1, "keypoints": person(), "score": 0.4},
    ])  # fmt: skip
    out = read_coco_keypoints(results, images=images)
    labels = out["rec"].labels
    assert labels[2]["cam1"].shape == (2, 15, 3)
    np.testing.assert_allclose(labels[2]["cam1"][:, PAN["nose"], 2], [0.9, 0.4])
    assert labels[2]["cam2"].shape == (0, 15, 3)
    assert out["rec"].image_size == {"cam1": (32, 24)}


@pytest.mark.parametrize(("file_name", "expected"), [
    ("seqA/hdImgs/00_03/00_03_00000007.jpg", ("seqA", "00_03", 7)),
    ("/mnt/panoptic/160906_pizza1/hdImgs/00_16/00_16_00012345.jpg",
     ("160906_pizza1", "00_16", 12345)),
    ("00_03/00000012.jpg", (None, "00_03", 12)),
    ("recording/left/left_00000003.png", (None, "left", 3)),
    ("C:\\rec\\00_05\\00000003.JPG", (None, "00_05", 3)),
])  # fmt: skip
def test_default_pattern(tmp_path, file_name, expected):
    path = write(tmp_path / "d.json", {"images": [{"id": 0, "file_name": file_name}],
                                       "annotations": []})  # fmt: skip
    out = read_coco_keypoints(path)
    sequence, camera, frame = expected
    assert list(out) == [sequence]
    assert list(out[sequence].labels) == [frame]
    assert list(out[sequence].labels[frame]) == [camera]


def test_custom_pattern(tmp_path):
    path = write(tmp_path / "d.json", {"images": [{"id": 0, "file_name": "shots/cam2-15.jpg"}],
                                       "annotations": [{"image_id": 0,
                                                        "keypoints": person()}]})  # fmt: skip
    out = read_coco_keypoints(path, camera_frame=r"cam(?P<camera>\d+)-(?P<frame>\d+)\.jpg$")
    assert out[None].labels[15]["2"].shape == (1, 15, 3)
    with pytest.raises(ValueError, match="does not match the camera/frame pattern"):
        read_coco_keypoints(path)  # the default pattern needs a <cam>/ folder


GOOD_IMAGE = {"id": 1, "file_name": "s/hdImgs/c/c_00000001.jpg"}


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ({"images": []}, "expected a COCO results list or a dataset file"),
    ({"images": [GOOD_IMAGE], "annotations": [{"image_id": 1, "keypoints": [0.0] * 50}]},
     r"annotations\[0\]: 'keypoints' must be a list of 51 numbers"),
    ({"images": [GOOD_IMAGE], "annotations": [{"image_id": 9, "keypoints": person()}]},
     r"annotations\[0\]: image_id 9 is not in the images list"),
    ({"images": [GOOD_IMAGE], "annotations": [{"image_id": 1}]},
     r"annotations\[0\]: an entry must be an object with 'image_id' and 'keypoints'"),
    ({"images": [GOOD_IMAGE], "annotations": [
        {"image_id": 1, "keypoints": person()},
        {"image_id": 1, "keypoints": person({"nose": (math.nan, 1, 2)})}]},
     r"annotations\[1\]: NaN or inf"),
    ({"images": [GOOD_IMAGE], "annotations": [
        {"image_id": 1, "keypoints": person()[:-1] + ["two"]}]},
     r"annotations\[0\]: keypoints and keypoint_scores must be numbers"),
    ({"images": [GOOD_IMAGE], "annotations": [
        {"image_id": 1, "keypoints": person(), "score": "high"}]},
     r"annotations\[0\]: 'score' must be a number"),
    ({"images": [GOOD_IMAGE], "annotations": [
        {"image_id": 1, "keypoints": person(), "keypoint_scores": [1.0] * 16}]},
     r"annotations\[0\]: 'keypoint_scores' must be a list of 17"),
    ({"images": [{"id": 1, "file_name": "frame1.jpg"}], "annotations": []},
     r"images\[0\]: file_name 'frame1.jpg' does not match"),
    ({"images": [GOOD_IMAGE, dict(GOOD_IMAGE)], "annotations": []},
     r"images\[1\]: image id 1 appears twice"),
    ({"images": [GOOD_IMAGE, {**GOOD_IMAGE, "id": 2}], "annotations": []},
     r"images\[1\]: camera 'c' frame 1 is also images\[0\]"),
    ({"images": [{**GOOD_IMAGE, "width": -4, "height": 3}], "annotations": []},
     r"images\[0\]: width and height must be positive integers"),
    ({"images": [{**GOOD_IMAGE, "width": 4, "height": 3},
                 {"id": 2, "file_name": "s/hdImgs/c/c_00000002.jpg", "width": 8, "height": 3}],
      "annotations": []},
     r"images\[1\]: image is 8x3 px, other images of camera 'c' are 4x3"),
    ({"images": [{"id": 1, "camera": "c", "frame": -1}], "annotations": []},
     r"images\[0\]: frame must be a non-negative integer"),
    ({"images": [{"file_name": "s/hdImgs/c/c_00000001.jpg"}], "annotations": []},
     r"images\[0\]: an image entry must be an object with an 'id'"),
    ([{"image_id": 1, "keypoints": person()}], "a COCO results list needs the dataset file"),
])  # fmt: skip
def test_bad_coco_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError, match=message) as e:
        read_coco_keypoints(path)
    assert str(e.value).startswith(f"{path}: ")


def test_bad_coco_arguments(tmp_path):
    path = dataset(tmp_path)
    with pytest.raises(ValueError, match="needs the named groups"):
        read_coco_keypoints(path, camera_frame=r"(?P<camera>\w+)/(\d+)")
    with pytest.raises(ValueError, match="not a regular expression"):
        read_coco_keypoints(path, camera_frame="(")
    with pytest.raises(ValueError, match="images= .* only for a results list"):
        read_coco_keypoints(path, images=path)
    with pytest.raises(FileNotFoundError, match="missing.json: COCO keypoints file not found"):
        read_coco_keypoints(tmp_path / "missing.json")
    results = write(tmp_path / "results.json", [])
    no_images = write(tmp_path / "no_images.json", {"categories": []})
    with pytest.raises(ValueError, match=f"{no_images}: COCO dataset file has no 'images'"):
        read_coco_keypoints(results, images=no_images)


# -- Keypoint R-CNN -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector() -> KeypointRCNNDetector:
    return KeypointRCNNDetector(random_init=True, min_size=64, max_size=96, score_threshold=0.0,
                                max_people=3)  # fmt: skip


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
            rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)]  # fmt: skip


def test_random_keypoint_rcnn_outputs(detector, images):
    out = detector.detect(images)
    assert detector.weights == "random"
    assert len(out) == 2
    assert sum(len(k) for k in out) > 0  # score_threshold 0 keeps the random model's boxes
    for kp, img in zip(out, images, strict=True):
        assert kp.dtype == np.float32 and kp.ndim == 3 and kp.shape[1:] == (17, 3)
        assert len(kp) <= 3
        assert np.isfinite(kp).all()
        assert ((kp[..., 2] >= 0) & (kp[..., 2] <= 1)).all()
        # Inside the image, give or take the half heatmap bin torchvision adds.
        h, w = img.shape[:2]
        assert ((kp[..., 0] >= -1) & (kp[..., 0] <= w + 1) & (kp[..., 1] >= -1)
                & (kp[..., 1] <= h + 1)).all()  # fmt: skip
    # Confidence = sigmoid(keypoint logit) x person score, from the model's raw output.
    tensors = [torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i in images]
    with torch.inference_mode():
        raw = detector.model(tensors)
    for kp, r in zip(out, raw, strict=True):
        expected = torch.sigmoid(r["keypoints_scores"]) * r["scores"][:, None]
        np.testing.assert_allclose(kp[..., 2], expected.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(kp[..., :2], r["keypoints"][..., :2].numpy(), atol=1e-3)
    assert detector.detect([]) == []
    with pytest.raises(ValueError, match=r"image 0: expected RGB uint8 \(H, W, 3\)"):
        detector.detect([images[0].astype(np.float32)])
    with pytest.raises(ValueError, match="image 1: expected RGB uint8"):
        detector.detect([images[0], images[0][..., 0]])


def test_missing_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = "keypointrcnn_resnet50_fpn_coco-fc266e95.pth"
    expected = tmp_path / "torch" / "hub" / "checkpoints" / name
    assert default_weights_path() == expected
    with pytest.raises(FileNotFoundError) as e:
        KeypointRCNNDetector()
    message = str(e.value)
    assert str(expected) in message and "--weights PATH" in message
    assert f"https://download.pytorch.org/models/{name}" in message
    assert "\n" not in message
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/nope.pth: Keypoint R-CNN weights"):
        resolve_weights(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="not both"):
        KeypointRCNNDetector(tmp_path / "nope.pth", random_init=True)
    with pytest.raises(ValueError, match="score_threshold must be in"):
        KeypointRCNNDetector(random_init=True, score_threshold=1.5)


def test_state_dict_file_loads(detector, images, tmp_path, monkeypatch):
    state = detector.model.state_dict()
    key = "roi_heads.keypoint_predictor.kps_score_lowres.bias"
    state[key] = torch.full_like(state[key], 0.25)  # proves the file, not the seed, was used
    path = tmp_path / "kprcnn.pth"
    torch.save({"model": state}, path)

    loaded = KeypointRCNNDetector(path, min_size=64, max_size=96, score_threshold=1.0)
    assert loaded.weights == str(path)
    assert torch.equal(loaded.model.state_dict()[key], state[key])
    assert torch.equal(loaded.model.state_dict()["backbone.body.conv1.weight"],
                       state["backbone.body.conv1.weight"])  # fmt: skip
    # Nobody scores above 1: every person is dropped.
    assert [k.shape for k in loaded.detect(images)] == [(0, 17, 3), (0, 17, 3)]

    # weights=None: torchvision's cache file.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    default_weights_path().parent.mkdir(parents=True)
    default_weights_path().symlink_to(path)
    cached = KeypointRCNNDetector(min_size=64, max_size=96)
    assert cached.weights == str(default_weights_path())
    assert torch.equal(cached.model.state_dict()[key], state[key])


def test_bad_weights_files(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match=f"{garbage}: not a PyTorch state dict file"):
        KeypointRCNNDetector(garbage)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ValueError, match=f"{other}: not Keypoint R-CNN ResNet-50 FPN weights"):
        KeypointRCNNDetector(other, min_size=64, max_size=96)
