"""The batch builder: versions, affines, labels, images, GT withholding, iteration."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from pipelines.ingest import ingest
from selfpose3d.data.batches import (
    BatchSpec,
    ImageCache,
    iterate_batches,
    make_batch,
)
from selfpose3d.data.config import DataConfig
from selfpose3d.data.schema import read_dataset
from selfpose3d.data.synthetic import make_tiny_dataset
from selfpose3d.geometry.affine import (
    compose_affine,
    get_resize_matrix,
    invert_affine,
    project_to_image,
    scale_affine,
)
from selfpose3d.models.config import ModelConfig
from selfpose3d.models.model import apply_affine
from selfpose3d.skeleton import NUM_JOINTS, ROOT_INDEX
from selfpose3d.training.config import AugmentConfig

MODEL = ModelConfig(image_size=[160, 96], heatmap_size=[40, 24], backbone_depth=18)
ALL = ("a3", "a1", "a2")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """The tiny synthetic dataset (2 views, 160 x 90 px), train split, 4 frames."""
    root = tmp_path_factory.mktemp("tiny")
    make_tiny_dataset(root / "raw")
    ingest(root / "raw", root / "pq", DataConfig(), engine="plain", progress=False)
    return list(read_dataset(root / "pq" / "train"))


def spec(versions=ALL, images=True, **augment) -> BatchSpec:
    return BatchSpec.from_configs(MODEL, AugmentConfig(**augment), versions, images)


def exact_labels(frame):
    """The frame with pseudo poses replaced by the exact projections of its GT (conf 1)."""
    poses = []
    for cam in frame.cameras:
        uv = cam.project(frame.gt_poses[..., :3].astype(np.float64))  # (G, J, 2)
        conf = (frame.gt_poses[..., 3] > 0.1).astype(np.float32)
        poses.append(np.concatenate([uv, conf[..., None]], -1).astype(np.float32))
    return dataclasses.replace(frame, pseudo_poses=poses)


def test_shapes_and_dtypes(frames):
    b = make_batch(frames[:2], spec(), np.random.default_rng(0))
    V = len(frames[0].cameras)
    assert b.size == 2 and b.cameras.K.shape == (2, V, 3, 3)
    assert set(b.versions) == set(ALL)
    for v in b.versions.values():
        assert v.affines.shape == (2, V, 2, 3) and v.affines.dtype == torch.float32
        assert v.images.shape == (2, V, 3, 96, 160) and v.images.dtype == torch.float32
    P = max(len(p) for f in frames[:2] for p in f.pseudo_poses)
    assert b.pseudo.joints.shape == (2, V, P, NUM_JOINTS, 2)
    assert b.pseudo.confidence.shape == (2, V, P, NUM_JOINTS)
    G = max(len(f.gt_poses) for f in frames[:2])
    assert b.gt.poses.shape == (2, G, NUM_JOINTS, 3) and b.gt.visible.dtype == torch.bool


def test_a3_is_the_aspect_keeping_resize_to_heatmap_px(frames):
    b = make_batch(frames[:1], spec(("a3",)))
    cam = frames[0].cameras[0]
    expected = compose_affine(
        scale_affine(0.25, 0.25), get_resize_matrix((cam.width, cam.height), (160, 96))
    )
    np.testing.assert_allclose(b.view("a3").affines[0, 0].numpy(), expected, atol=1e-5)


def test_augmented_views_project_the_gt_where_the_labels_and_the_image_content_land(frames):
    """A GT joint projected with a version's affine lands where the pseudo joint (here the
    exact projection) transformed by that affine lands, and where the warped image shows it."""
    frame = exact_labels(frames[0])
    images = []  # black images with a white 5 x 5 px square on every projected GT root
    for cam in frame.cameras:
        image = np.zeros((cam.height, cam.width, 3), np.uint8)
        for u, v in cam.project(frame.gt_poses[:1, ROOT_INDEX, :3].astype(np.float64)):
            cv2.rectangle(image, (round(u) - 2, round(v) - 2), (round(u) + 2, round(v) + 2),
                          (255, 255, 255), -1)  # fmt: skip
        images.append(cv2.imencode(".png", image)[1].tobytes())  # lossless for this check
    frame = dataclasses.replace(frame, images=images)
    b = make_batch([frame], spec(appearance=False), np.random.default_rng(3))
    assert not torch.allclose(b.view("a1").affines, b.view("a2").affines)

    cams = b.cameras
    gt = b.gt.poses[:, None].double()  # (1, 1, G, J, 3)
    checked = 0
    for name in ALL:
        A = b.view(name).affines  # (1, V, 2, 3) original px -> heatmap px
        from_gt = project_to_image(gt.flatten(2, 3), cams.K.double(), cams.dist.double(),
                                   cams.R.double(), cams.t.double(), A.double())  # fmt: skip
        from_labels = apply_affine(b.pseudo.joints, A).flatten(2, 3)
        torch.testing.assert_close(from_labels.double(), from_gt, atol=2e-3, rtol=0)

        # Where the white square of the first GT root appears in the warped network input.
        to_input = invert_affine(torch.as_tensor(scale_affine(0.25, 0.25))).double()
        root = from_gt[:, :, ROOT_INDEX : ROOT_INDEX + 1]  # person 0's root (joints flattened)
        expected = apply_affine(root, to_input.expand(1, len(cams.K[0]), 2, 3))
        bright = b.view(name).images[0].mean(1) > 1.0  # (V, H, W), normalised units
        for v in range(bright.shape[0]):
            ys, xs = torch.nonzero(bright[v], as_tuple=True)
            if len(xs) < 4:  # the square left the augmented image
                continue
            centroid = torch.stack([xs.double().mean(), ys.double().mean()])
            assert torch.linalg.norm(centroid - expected[0, v, 0]) < 1.0, (name, v)
            checked += 1
    assert checked >= 4


def test_augmentation_is_seeded_and_the_two_versions_differ(frames):
    b1 = make_batch(frames[:2], spec(), np.random.default_rng(7))
    b2 = make_batch(frames[:2], spec(), np.random.default_rng(7))
    for name in ALL:
        torch.testing.assert_close(b1.view(name).images, b2.view(name).images)
        torch.testing.assert_close(b1.view(name).affines, b2.view(name).affines)
    assert not torch.equal(b1.view("a1").images, b1.view("a2").images)
    # A3 is never augmented: it does not depend on the generator.
    b3 = make_batch(frames[:2], spec(), np.random.default_rng(8))
    torch.testing.assert_close(b1.view("a3").images, b3.view("a3").images)


def test_soft_and_hard_labels(frames):
    b = make_batch(frames[:1], spec(("a3",), images=False))
    conf = b.pseudo.confidence
    soft, hard = b.pseudo.weights("soft", 0.7), b.pseudo.weights("hard", 0.7)
    assert torch.equal(soft, (conf > 0).float()) and torch.equal(hard, (conf >= 0.7).float())
    assert 0 < hard.sum() < soft.sum()


def test_pseudo_joints_on_the_image_border_can_count_as_undetected(frames):
    frame = frames[0]
    w, h = frame.cameras[0].width, frame.cameras[0].height
    pose = np.full((1, NUM_JOINTS, 3), [w / 2, h / 2, 0.8], np.float32)
    # Joint 0 clipped to the left border, 1 to the bottom one, 2 half a px inside the
    # 1-px band, 3 just outside it; the rest well inside.
    pose[0, :4, :2] = [[0.0, 40.0], [50.0, h - 1.0], [w - 1.5, 30.0], [1.01, h - 2.01]]
    framed = dataclasses.replace(frame, pseudo_poses=[pose] * len(frame.cameras))
    keep = make_batch([framed], spec(("a3",), images=False)).pseudo.confidence[0, :, 0]
    assert (keep > 0).all()  # 0 (the default) keeps every detected joint
    border = BatchSpec.from_configs(ModelConfig(**{**dataclasses.asdict(MODEL),
                                                   "pseudo_border_px": 1.0}),
                                    versions=("a3",), images=False)  # fmt: skip
    conf = make_batch([framed], border).pseudo.confidence[0, :, 0]  # (V, J)
    assert (conf[:, :3] == 0).all() and (conf[:, 3:] == pytest.approx(0.8))
    weights = make_batch([framed], border).pseudo.weights("soft", 0.7)[0, :, 0]
    assert weights[:, :3].sum() == 0 and (weights[:, 3:] == 1).all()
    with pytest.raises(ValueError, match="pseudo_border_px"):
        ModelConfig(pseudo_border_px=-1.0)


def test_pseudo_heatmap_mode_needs_no_images(frames):
    no_images = [dataclasses.replace(f, images=None) for f in frames[:2]]
    b = make_batch(no_images, spec(images=False), np.random.default_rng(0))
    assert all(v.images is None for v in b.versions.values())
    with pytest.raises(ValueError, match="has no images"):
        make_batch(no_images, spec(images=True), np.random.default_rng(0))


def test_ground_truth_is_withheld_on_request(frames):
    b = make_batch(frames[:1], spec(("a3",), images=False)).without_gt()
    with pytest.raises(RuntimeError, match="withheld"):
        _ = b.gt.poses


def test_select_views_reorders_every_per_view_tensor(frames):
    b = make_batch(frames[:2], spec(), np.random.default_rng(0))
    p = b.select_views([1, 0])
    torch.testing.assert_close(p.cameras.K, b.cameras.K[:, [1, 0]])
    torch.testing.assert_close(p.view("a1").images, b.view("a1").images[:, [1, 0]])
    torch.testing.assert_close(p.pseudo.joints, b.pseudo.joints[:, [1, 0]])
    torch.testing.assert_close(p.gt.poses, b.gt.poses)


def test_iterate_batches_skip_reproduces_the_rest_and_limit_stops(frames):
    s = spec(images=False)
    full = list(iterate_batches(frames, 1, np.random.default_rng(5), s))
    assert len(full) == len(frames) and sorted(b.keys[0] for b in full) == sorted(
        (f.sequence, f.frame) for f in frames
    )
    tail = list(iterate_batches(frames, 1, np.random.default_rng(5), s, skip=2))
    assert [b.keys for b in tail] == [b.keys for b in full[2:]]
    for x, y in zip(tail, full[2:], strict=True):
        torch.testing.assert_close(x.view("a1").affines, y.view("a1").affines)
    assert len(list(iterate_batches(frames, 3, np.random.default_rng(5), s))) == 2
    assert len(list(iterate_batches(frames, 3, np.random.default_rng(5), s, drop_last=True))) == 1
    assert len(list(iterate_batches(frames, 1, np.random.default_rng(5), s, limit=2))) == 2


def test_image_cache_keeps_decoded_images_within_budget(frames):
    cache = ImageCache(max_bytes=10**7)
    first = make_batch(frames[:2], spec(), np.random.default_rng(0), cache)
    assert 0 < cache.bytes <= 10**7
    again = make_batch(frames[:2], spec(), np.random.default_rng(0), cache)
    torch.testing.assert_close(first.view("a1").images, again.view("a1").images)
    tiny = ImageCache(max_bytes=10)
    make_batch(frames[:1], spec(), np.random.default_rng(0), tiny)
    assert tiny.bytes == 0


def test_bad_input_is_named(frames):
    broken = dataclasses.replace(frames[0], images=[b"not a jpeg"] * len(frames[0].cameras))
    with pytest.raises(ValueError, match=f"{frames[0].cameras[0].name} does not decode"):
        make_batch([broken], spec(("a3",)))
    fewer = dataclasses.replace(frames[1], cameras=frames[1].cameras[:1],
                                images=frames[1].images[:1],
                                pseudo_poses=frames[1].pseudo_poses[:1])  # fmt: skip
    with pytest.raises(ValueError, match="same number of views"):
        make_batch([frames[0], fewer], spec(("a3",), images=False))
    with pytest.raises(ValueError, match="need an rng"):
        make_batch(frames[:1], spec(images=False))
    nan = dataclasses.replace(
        frames[0], pseudo_poses=[np.full_like(p, np.nan) for p in frames[0].pseudo_poses]
    )
    b = make_batch([nan], spec(("a3",), images=False))
    assert b.pseudo.confidence.sum() == 0 and torch.isfinite(b.pseudo.joints).all()
