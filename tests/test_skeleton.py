"""Joint sets and their conversions."""

from __future__ import annotations

import numpy as np
import pytest

from selfpose3d.skeleton import (
    COCO17_JOINTS,
    FLIP_PAIRS15,
    LIMBS15,
    NUM_JOINTS,
    PANOPTIC15_JOINTS,
    ROOT_INDEX,
    coco17_to_panoptic15,
    flip_permutation,
    panoptic15_to_coco17,
    panoptic19_to_15,
)


def test_joint_set_constants():
    assert NUM_JOINTS == 15 and PANOPTIC15_JOINTS[ROOT_INDEX] == "mid_hip"
    assert len(COCO17_JOINTS) == 17 and len(set(COCO17_JOINTS)) == 17
    # The limbs form a tree over all 15 joints (14 edges, every joint reached).
    assert len(LIMBS15) == NUM_JOINTS - 1
    assert {j for limb in LIMBS15 for j in limb} == set(range(NUM_JOINTS))


def test_flip_permutation_is_an_involution_that_swaps_sides():
    perm = flip_permutation()
    np.testing.assert_array_equal(perm[perm], np.arange(NUM_JOINTS))
    for i, j in enumerate(perm):
        name, mirrored = PANOPTIC15_JOINTS[i], PANOPTIC15_JOINTS[j]
        if name.startswith("l_"):
            assert mirrored == "r_" + name[2:]
        elif name.startswith("r_"):
            assert mirrored == "l_" + name[2:]
        else:
            assert i == j  # neck, nose and mid-hip stay
    assert len(FLIP_PAIRS15) == 6
    pose = np.arange(NUM_JOINTS * 3, dtype=float).reshape(NUM_JOINTS, 3)
    np.testing.assert_array_equal(pose[perm][perm], pose)


def test_panoptic19_to_15_keeps_the_first_15():
    joints = np.random.default_rng(0).random((2, 3, 19, 4))
    out = panoptic19_to_15(joints)
    assert out.shape == (2, 3, 15, 4)
    np.testing.assert_array_equal(out, joints[..., :15, :])


@pytest.mark.parametrize("shape", [(15, 4), (2, 17, 4), (19,)])
def test_panoptic19_to_15_rejects_other_shapes(shape):
    with pytest.raises(ValueError, match="expected 19 joints on axis -2"):
        panoptic19_to_15(np.zeros(shape))


def test_coco17_to_panoptic15_hand_computed():
    idx = {n: i for i, n in enumerate(COCO17_JOINTS)}
    kp = np.zeros((17, 3))
    kp[:, 0] = np.arange(17) * 10.0  # x
    kp[:, 1] = np.arange(17) * -2.0 + 100.0  # y
    kp[:, 2] = np.linspace(0.1, 0.9, 17)  # confidence
    out = coco17_to_panoptic15(kp)
    assert out.shape == (15, 3)
    p = {n: i for i, n in enumerate(PANOPTIC15_JOINTS)}
    ls, rs, lh, rh = idx["l_shoulder"], idx["r_shoulder"], idx["l_hip"], idx["r_hip"]
    # neck = mean of the shoulders (COCO 5, 6): x = 55, y = 100 - 11 = 89, conf = min.
    np.testing.assert_allclose(out[p["neck"]], [55.0, 89.0, min(kp[ls, 2], kp[rs, 2])])
    # mid-hip = mean of the hips (COCO 11, 12): x = 115, y = 100 - 23 = 77.
    np.testing.assert_allclose(out[p["mid_hip"]], [115.0, 77.0, min(kp[lh, 2], kp[rh, 2])])
    for name in PANOPTIC15_JOINTS:
        if name not in ("neck", "mid_hip"):
            np.testing.assert_array_equal(out[p[name]], kp[idx[name]])


def test_coco17_to_panoptic15_batched_and_low_confidence_parent():
    kp = np.ones((4, 2, 17, 3))
    kp[1, 0, COCO17_JOINTS.index("r_hip"), 2] = 0.05  # one weak hip makes a weak mid-hip
    out = coco17_to_panoptic15(kp)
    assert out.shape == (4, 2, 15, 3)
    assert out[1, 0, ROOT_INDEX, 2] == 0.05 and out[0, 0, ROOT_INDEX, 2] == 1.0


def test_coco17_to_panoptic15_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 17, 3\) COCO keypoints"):
        coco17_to_panoptic15(np.zeros((15, 3)))
    with pytest.raises(ValueError, match="COCO keypoints"):
        coco17_to_panoptic15(np.zeros((17, 2)))


def test_panoptic15_to_coco17_keeps_the_shared_joints_and_leaves_the_face_unknown():
    rng = np.random.default_rng(0)
    poses = rng.uniform(1, 100, size=(2, 15, 3))
    coco = panoptic15_to_coco17(poses)
    assert coco.shape == (2, 17, 3)
    for j, name in enumerate(COCO17_JOINTS):
        if name in PANOPTIC15_JOINTS:
            np.testing.assert_array_equal(coco[:, j], poses[:, PANOPTIC15_JOINTS.index(name)])
        else:  # eyes and ears
            assert not coco[:, j].any()
    back = coco17_to_panoptic15(coco)  # neck and mid-hip come back as the midpoints
    shoulders = [PANOPTIC15_JOINTS.index(n) for n in ("l_shoulder", "r_shoulder")]
    np.testing.assert_allclose(back[:, 0, :2], poses[:, shoulders, :2].mean(axis=1))
    with pytest.raises(ValueError, match="15 joints"):
        panoptic15_to_coco17(np.zeros((2, 17, 3)))
