"""Affine image transforms: images and points agree, inverses, NumPy == torch, augmentation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from selfpose3d.geometry.affine import (
    apply_affine,
    augmentation_matrix,
    compose_affine,
    fit_box,
    get_affine_matrix,
    get_resize_matrix,
    invert_affine,
    project_to_image,
    random_augmentation_matrix,
    sample_augmentation,
    scale_affine,
    warp_image,
)
from selfpose3d.geometry.camera import project_points


def render_dot(width: int, height: int, uv: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    return np.exp(-((u - uv[0]) ** 2 + (v - uv[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def centroid(image: np.ndarray) -> np.ndarray:
    v, u = np.mgrid[: image.shape[0], : image.shape[1]]
    return np.array([(u * image).sum(), (v * image).sum()]) / image.sum()


def random_affines(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 2, 3) well-conditioned random transforms."""
    return np.stack([
        get_affine_matrix(rng.uniform(50, 150, 2), rng.uniform(80, 200, 2), rng.uniform(-45, 45),
                          (160, 120))
        for _ in range(n)
    ])  # fmt: skip


@pytest.mark.parametrize("rot_deg", [0.0, 30.0, -45.0, 90.0])
def test_warped_dot_lands_on_the_transformed_point(rng, rot_deg):
    src_uv = np.array([93.3, 71.7])
    image = render_dot(200, 160, src_uv)
    A = get_affine_matrix((101.0, 77.5), (150.0, 120.0), rot_deg, (180, 144))
    warped = warp_image(image, A, (180, 144))
    assert warped.shape == (144, 180)
    np.testing.assert_allclose(centroid(warped), apply_affine(src_uv[None], A)[0], atol=0.03)


def test_rotation_sense_matches_opencv():
    # Box = output size / s around the image centre: a pure rotation + zoom about the centre.
    w, h, s, angle = 200, 120, 1.3, 25.0
    centre = ((w - 1) / 2, (h - 1) / 2)
    A = get_affine_matrix(centre, (w / s, h / s), angle, (w, h))
    np.testing.assert_allclose(A, cv2.getRotationMatrix2D(centre, angle, s), atol=1e-12)


def test_scale_affine_is_cv2_resize():
    image = np.random.default_rng(0).random((60, 80)).astype(np.float32)
    for s in (0.5, 0.25):
        W, H = round(80 * s), round(60 * s)
        via_warp = warp_image(image, scale_affine(s, s), (W, H))
        via_resize = cv2.resize(image, (W, H), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(via_warp, via_resize, atol=1e-5)


def test_resize_matrix_pads_to_the_input_aspect():
    np.testing.assert_allclose(fit_box((1920, 1080), (960, 512)), [2025.0, 1080.0])
    np.testing.assert_allclose(fit_box((1000, 1000), (960, 512)), [1875.0, 1000.0])
    np.testing.assert_allclose(fit_box((4000, 1000), (960, 512)), [4000.0, 4000 * 512 / 960])
    A = get_resize_matrix((1920, 1080), (960, 512))
    corners = np.array([[-0.5, -0.5], [1919.5, 1079.5], [959.5, 539.5]])
    out = apply_affine(corners, A)
    # The image fills the height exactly and sits in the middle of the width.
    np.testing.assert_allclose(out[:, 1], [-0.5, 511.5, 255.5], atol=1e-9)
    left_margin, right_margin = out[0, 0] - (-0.5), 959.5 - out[1, 0]
    np.testing.assert_allclose(left_margin, right_margin, atol=1e-9)
    assert left_margin > 0
    np.testing.assert_allclose(out[2, 0], 479.5, atol=1e-9)
    # Same aspect ratio: a plain pixel-centre resize.
    np.testing.assert_allclose(get_resize_matrix((1920, 1080), (960, 540)),
                               scale_affine(0.5, 0.5), atol=1e-12)  # fmt: skip


def test_inverse_and_composition(rng):
    A = random_affines(rng, 5)
    B = random_affines(rng, 5)
    pts = rng.uniform(0, 200, (5, 7, 2))
    np.testing.assert_allclose(apply_affine(apply_affine(pts, A), invert_affine(A)), pts,
                               atol=1e-9)  # fmt: skip
    identity = np.broadcast_to(np.eye(2, 3), (5, 2, 3))
    np.testing.assert_allclose(compose_affine(invert_affine(A), A), identity, atol=1e-12)
    np.testing.assert_allclose(apply_affine(pts, compose_affine(B, A)),
                               apply_affine(apply_affine(pts, A), B), atol=1e-9)  # fmt: skip


def test_torch_matches_numpy_and_is_differentiable(rng):
    A = random_affines(rng, 4)
    B = random_affines(rng, 4)
    pts = rng.uniform(0, 200, (4, 6, 2))
    At, Bt, pts_t = (torch.from_numpy(a) for a in (A, B, pts))
    np.testing.assert_allclose(apply_affine(pts_t, At).numpy(), apply_affine(pts, A), atol=1e-12)
    np.testing.assert_allclose(invert_affine(At).numpy(), invert_affine(A), atol=1e-12)
    np.testing.assert_allclose(compose_affine(Bt, At).numpy(), compose_affine(B, A), atol=1e-12)
    # Broadcasting: one matrix for a batch of point sets.
    np.testing.assert_allclose(apply_affine(pts, A[0]), apply_affine(pts, A[[0] * 4]), atol=1e-12)
    args = (pts_t[:1, :3].clone().requires_grad_(), At[:1].clone().requires_grad_())
    assert torch.autograd.gradcheck(apply_affine, args)
    assert torch.autograd.gradcheck(invert_affine, (At[:2].clone().requires_grad_(),))


def test_sample_augmentation_distribution():
    rng = np.random.default_rng(7)
    rot, scale = np.array([sample_augmentation(rng) for _ in range(4000)]).T
    assert 0.45 < np.mean(rot == 0) < 0.55
    assert np.all(np.abs(rot) <= 45.0) and np.abs(rot).max() > 40.0
    zoom_out, zoom_in = scale > 1, scale < 1
    assert np.all(zoom_out | zoom_in)
    assert 0.45 < zoom_out.mean() < 0.55
    assert scale[zoom_out].min() >= 1.1 and scale[zoom_out].max() <= 1.35
    assert scale[zoom_in].min() >= 1 - 0.35 / 2 and scale[zoom_in].max() <= 1 - 0.1 / 2
    # Seeded: the same generator state gives the same matrix.
    a = random_augmentation_matrix(np.random.default_rng(3), (1920, 1080), (960, 512))
    b = random_augmentation_matrix(np.random.default_rng(3), (1920, 1080), (960, 512))
    np.testing.assert_array_equal(a, b)


def test_augmentation_matrix_scales_and_rotates_about_the_centre():
    size, inp = (1920, 1080), (960, 512)
    np.testing.assert_allclose(augmentation_matrix(size, inp, 0.0, 1.0),
                               get_resize_matrix(size, inp), atol=1e-12)  # fmt: skip
    A = augmentation_matrix(size, inp, 30.0, 1.25)
    plain = get_resize_matrix(size, inp)
    centre = np.array([[959.5, 539.5]])
    np.testing.assert_allclose(apply_affine(centre, A), [[479.5, 255.5]], atol=1e-9)
    # A larger box shows the scene smaller: every distance shrinks by the box scale.
    p = np.array([[1500.0, 200.0]])
    d_aug = np.linalg.norm(apply_affine(p, A) - apply_affine(centre, A))
    d_plain = np.linalg.norm(apply_affine(p, plain) - apply_affine(centre, plain))
    np.testing.assert_allclose(d_aug, d_plain / 1.25, rtol=1e-12)


def test_project_to_image_composes_projection_and_affine(rng, make_rig, make_points):
    rig = make_rig(rng, 3)
    X = make_points(rng, 10)
    A = np.stack([augmentation_matrix((1920, 1080), (960, 512), r, s)
                  for r, s in [(0, 1), (20, 1.2), (-40, 0.9)]])  # fmt: skip
    expected = apply_affine(project_points(X, rig["K"], rig["dist"], rig["R"], rig["t"]), A)
    got = project_to_image(X, rig["K"], rig["dist"], rig["R"], rig["t"], A)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    got_t = project_to_image(torch.from_numpy(X), *(torch.from_numpy(rig[k])
                             for k in ("K", "dist", "R", "t")), torch.from_numpy(A))  # fmt: skip
    np.testing.assert_allclose(got_t.numpy(), expected, atol=1e-9)


def test_bad_box_is_rejected():
    with pytest.raises(ValueError, match="box size must be positive"):
        get_affine_matrix((10, 10), (0, 5), 0.0, (20, 20))
