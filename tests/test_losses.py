"""The losses against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from selfpose3d import losses

J = 15


def test_hungarian_cost_is_the_masked_mean_of_normalised_differences():
    pred = torch.zeros(1, 1, 1, J, 2)
    target = torch.zeros(1, 1, 1, J, 2)
    target[..., 0, 0] = 10.0  # 10 px in x on joint 0, image 100 px wide -> 0.1
    target[..., 1, 1] = 5.0  # 5 px in y on joint 1, image 50 px high -> 0.1
    target[..., 2, :] = 99.0  # an invisible joint: masked out
    visible = torch.ones(1, 1, 1, J)
    visible[..., 2] = 0
    cost = losses.hungarian_cost(pred, target, visible, (100, 50))
    assert cost.shape == (1, 1, 1, 1)
    # The mean runs over all J x 2 coordinates, masked ones counting 0 (reference behaviour).
    assert cost.item() == pytest.approx((0.1 + 0.1) / (2 * J))


def test_hungarian_l1_with_a_non_finite_masked_projection_stays_finite():
    # A joint projected from behind a camera can be inf; it is masked, so the cost and the
    # gradient must stay finite (inf * 0 would be NaN and SciPy refuses NaN costs).
    rng = np.random.default_rng(3)
    pred = _people(rng, 2)[None, None].requires_grad_(True)
    target = _people(rng, 2)[None, None]
    pred_visible = torch.ones(1, 1, 2, J)
    pred_visible[0, 0, 1, 4] = 0
    with torch.no_grad():
        pred[0, 0, 1, 4] = float("inf")
        pred[0, 0, 0, 7, 0] = float("nan")
    pred_visible[0, 0, 0, 7] = 0
    valid = torch.ones(1, 1, 2, dtype=torch.bool)
    terms = losses.hungarian_l1_terms(pred, valid, target, torch.ones(1, 1, 2, J), (80, 48),
                                      pred_visible=pred_visible)  # fmt: skip
    assert torch.isfinite(terms).all() and terms.item() > 0
    terms.sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[0, 0, 1, 4].abs().sum() == 0  # the masked joint gets no gradient


def _people(rng, n, size=(80.0, 48.0)):
    return torch.tensor(rng.uniform(0, 1, (n, J, 2)) * np.array(size), dtype=torch.float32)


def test_hungarian_l1_finds_a_known_permutation_and_drops_the_worst_term():
    rng = np.random.default_rng(0)
    size = (80.0, 48.0)
    B, V, P = 2, 3, 3
    target = torch.stack([torch.stack([_people(rng, P) for _ in range(V)]) for _ in range(B)])
    perm = torch.tensor([2, 0, 1])
    pred = target[:, :, perm].clone()  # (B, V, P, J, 2): the same people, shuffled
    pred[..., 0] += 0.8  # a constant 0.8 px error in x on every joint
    pred[1, 2, 0, :, 1] += 24.0  # one badly placed person: view 2 of sample 1 is the worst
    visible = torch.ones(B, V, P, J)
    valid = torch.ones(B, V, P, dtype=torch.bool)

    terms = losses.hungarian_l1_terms(pred, valid, target, visible, size)
    per_person = 0.8 / size[0] / 2  # mean over J x 2 coordinates of |dx| / w
    expected = torch.full((B, V), P * per_person)
    expected[1, 2] += 24.0 / size[1] / 2
    torch.testing.assert_close(terms, expected, rtol=1e-5, atol=1e-6)

    loss = losses.drop_worst_mean(terms.reshape(-1))
    assert loss.item() == pytest.approx(P * per_person, rel=1e-5)  # the outlier is gone


def test_hungarian_l1_ignores_invalid_people_and_empty_views():
    rng = np.random.default_rng(1)
    target = _people(rng, 2)[None, None]  # (1, 1, 2, J, 2)
    pred = torch.cat([target[:, :, :1] + 1.0, torch.full((1, 1, 1, J, 2), 1e4)], 2)
    visible = torch.ones(1, 1, 2, J)
    valid = torch.tensor([[[True, False]]])  # the far-away prediction is not a person
    terms = losses.hungarian_l1_terms(pred, valid, target, visible, (80, 48))
    assert terms.item() == pytest.approx((1 / 80 + 1 / 48) / 2, rel=1e-5)
    none = losses.hungarian_l1_terms(pred, torch.zeros_like(valid), target, visible, (80, 48))
    assert none.item() == 0.0


def test_hungarian_l1_gradient_reaches_the_matched_predictions_only():
    target = torch.zeros(1, 1, 1, J, 2)
    pred = torch.ones(1, 1, 2, J, 2, requires_grad=True)
    with torch.no_grad():
        pred[:, :, 1] = 50.0  # the second prediction is farther: unmatched
    terms = losses.hungarian_l1_terms(pred, torch.ones(1, 1, 2, dtype=torch.bool), target,
                                      torch.ones(1, 1, 1, J), (80, 48))  # fmt: skip
    terms.sum().backward()
    assert pred.grad[:, :, 0].abs().sum() > 0
    assert pred.grad[:, :, 1].abs().sum() == 0


def test_drop_worst_mean():
    assert losses.drop_worst_mean(torch.tensor([1.0, 5.0, 2.0])).item() == pytest.approx(1.5)
    assert losses.drop_worst_mean(torch.tensor([3.0])).item() == 3.0
    rows = losses.drop_worst_mean(torch.tensor([[1.0, 5.0, 2.0], [4.0, 0.0, 2.0]]))
    torch.testing.assert_close(rows, torch.tensor([1.5, 1.0]))


def test_reprojection_loss_is_the_attention_weighted_mse():
    w, h, sigma = 9, 7, 1.5
    points = torch.tensor([4.0, 3.0]).expand(1, 1, 1, J, 2).clone()  # every joint at (4, 3)
    weights = torch.zeros(1, 1, 1, J)
    weights[..., 0] = 1.0  # only joint 0 is drawn
    target = torch.zeros(1, 1, J, h, w)
    target[0, 0, 0, 3, 4] = 1.0  # the target peak of joint 0, exactly where it is drawn
    target[0, 0, 1, 0, 0] = 1.0  # a target for joint 1, which is not drawn
    attention = torch.full((1, 1, J, h, w), 0.5)
    attention[0, 0, 1] = 0.25

    ys, xs = np.mgrid[0:h, 0:w]
    g = np.exp(-((xs - 4.0) ** 2 + (ys - 3.0) ** 2) / (2 * sigma**2))
    err0 = (g - (target[0, 0, 0].numpy())) ** 2  # zero at the peak
    expected = (0.5 * err0.sum() + 0.25 * 1.0) / (J * h * w)
    loss = losses.reprojection_loss(points, weights, target, sigma, attention)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    unweighted = losses.reprojection_loss(points, weights, target, sigma)
    assert unweighted.item() == pytest.approx((err0.sum() + 1.0) / (J * h * w), rel=1e-5)


def test_reprojection_loss_sums_people_and_clips():
    w, h = 5, 5
    points = torch.full((1, 1, 2, J, 2), 2.0)  # two people on the same pixel
    weights = torch.zeros(1, 1, 2, J)
    weights[..., 0] = 1.0
    target = torch.zeros(1, 1, J, h, w)
    loss = losses.reprojection_loss(points, weights, target, 1.0)
    ys, xs = np.mgrid[0:h, 0:w]
    g = np.minimum(2 * np.exp(-((xs - 2.0) ** 2 + (ys - 2.0) ** 2) / 2), 1.0)
    assert loss.item() == pytest.approx((g**2).sum() / (J * h * w), rel=1e-5)


def test_attention_regularizer():
    attention = torch.full((2, 3, J, 4, 5), 0.5)
    assert losses.attention_regularizer(attention).item() == pytest.approx(0.25)
    attention = torch.ones(1, 1, J, 2, 2, requires_grad=True)
    reg = losses.attention_regularizer(attention)
    reg.backward()
    assert reg.item() == 0.0 and attention.grad.abs().sum() == 0


def test_root_consistency_loss_detaches_the_reference():
    ref = torch.zeros(1, 2, 2, 2, requires_grad=True)
    c1 = torch.full((1, 2, 2, 2), 0.5, requires_grad=True)
    c2 = torch.full((1, 2, 2, 2), 0.1, requires_grad=True)
    loss = losses.root_consistency_loss([c1, c2], ref)
    assert loss.item() == pytest.approx(0.25 + 0.01)
    loss.backward()
    assert ref.grad is None and c1.grad is not None


def test_match_to_gt_and_pose_l1():
    roots = torch.tensor([[[0.0, 0, 0], [1000.0, 0, 0], [5000.0, 0, 0]]])
    gt = torch.tensor([[[900.0, 0, 0], [100.0, 0, 0], [0.0, 0, 0]]])
    valid = torch.tensor([[True, True, False]])
    matched, index = losses.match_to_gt(roots, gt, valid, radius=500.0)
    assert matched.tolist() == [[True, True, False]]
    assert index[0, :2].tolist() == [1, 0]  # the invalid GT at the origin is never chosen

    pred = torch.zeros(2, J, 3)
    target = torch.full((2, J, 3), 10.0)
    visible = torch.zeros(2, J, dtype=torch.bool)
    visible[0, :3] = True
    assert losses.pose_l1(pred, target, visible).item() == pytest.approx(10.0)
    assert losses.pose_l1(pred, target, torch.zeros_like(visible)).item() == 0.0


def test_heatmap_and_cube_mse():
    a, b = torch.zeros(2, 3, J, 4, 4), torch.full((2, 3, J, 4, 4), 0.5)
    assert losses.heatmap_mse(a, b).item() == pytest.approx(0.25)
    assert losses.root_cube_mse(a[:, 0], b[:, 0]).item() == pytest.approx(0.25)
    assert math.isfinite(losses.heatmap_mse(a, a).item())
