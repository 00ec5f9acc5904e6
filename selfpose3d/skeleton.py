"""Joint sets used by the project and conversions between them.

The model works on the 15-joint Panoptic skeleton (the first 15 of Panoptic's COCO-19
joints). COCO-17 is the layout of most off-the-shelf 2D detectors.
"""

from __future__ import annotations

import numpy as np

PANOPTIC15_JOINTS: tuple[str, ...] = (
    "neck", "nose", "mid_hip",
    "l_shoulder", "l_elbow", "l_wrist", "l_hip", "l_knee", "l_ankle",
    "r_shoulder", "r_elbow", "r_wrist", "r_hip", "r_knee", "r_ankle",
)  # fmt: skip
NUM_JOINTS = len(PANOPTIC15_JOINTS)
ROOT_INDEX = PANOPTIC15_JOINTS.index("mid_hip")

# Bones of the 15-joint skeleton as (parent, child) index pairs.
LIMBS15: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (0, 3), (3, 4), (4, 5), (0, 9), (9, 10), (10, 11),
    (2, 6), (2, 12), (6, 7), (7, 8), (12, 13), (13, 14),
)  # fmt: skip

# Left/right pairs: swapping them mirrors a pose.
FLIP_PAIRS15: tuple[tuple[int, int], ...] = ((3, 9), (4, 10), (5, 11), (6, 12), (7, 13), (8, 14))

# Panoptic's COCO-19 joints: the 15 above followed by l_eye, l_ear, r_eye, r_ear.
NUM_PANOPTIC19 = 19

COCO17_JOINTS: tuple[str, ...] = (
    "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow",
    "r_elbow", "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
)  # fmt: skip


def flip_permutation() -> np.ndarray:
    """Index array that swaps left and right joints: ``pose[..., perm, :]`` mirrors labels."""
    perm = np.arange(NUM_JOINTS)
    for a, b in FLIP_PAIRS15:
        perm[a], perm[b] = b, a
    return perm


def panoptic19_to_15(joints_19: np.ndarray) -> np.ndarray:
    """(..., 19, C) Panoptic COCO-19 joints -> (..., 15, C): the first 15, same order."""
    if joints_19.ndim < 2 or joints_19.shape[-2] != NUM_PANOPTIC19:
        raise ValueError(f"expected 19 joints on axis -2, got shape {joints_19.shape}")
    return joints_19[..., :NUM_JOINTS, :]


def coco17_to_panoptic15(keypoints: np.ndarray) -> np.ndarray:
    """(..., 17, 3) COCO keypoints (x, y, confidence) -> (..., 15, 3) Panoptic-15.

    Neck and mid-hip do not exist in COCO: each is the midpoint of the two shoulders / hips,
    with the lower of the two confidences (a derived joint is no surer than its weaker parent).
    """
    if keypoints.shape[-2:] != (17, 3):
        raise ValueError(f"expected (..., 17, 3) COCO keypoints, got shape {keypoints.shape}")
    idx = {name: i for i, name in enumerate(COCO17_JOINTS)}

    def mid(a: str, b: str) -> np.ndarray:
        pa, pb = keypoints[..., idx[a], :], keypoints[..., idx[b], :]
        xy = (pa[..., :2] + pb[..., :2]) / 2
        conf = np.minimum(pa[..., 2:], pb[..., 2:])
        return np.concatenate([xy, conf], axis=-1)

    out = []
    for name in PANOPTIC15_JOINTS:
        if name == "neck":
            out.append(mid("l_shoulder", "r_shoulder"))
        elif name == "mid_hip":
            out.append(mid("l_hip", "r_hip"))
        else:
            out.append(keypoints[..., idx[name], :])
    return np.stack(out, axis=-2)


def panoptic15_to_coco17(poses: np.ndarray) -> np.ndarray:
    """(..., 15, C) Panoptic-15 -> (..., 17, C) COCO-17, e.g. to hand pseudo labels to tools
    that read COCO keypoints: the joints both sets have; the eyes and ears, which Panoptic-15
    lacks, are all 0 (confidence 0: unknown). Neck and mid-hip have no COCO joint."""
    if poses.ndim < 2 or poses.shape[-2] != NUM_JOINTS:
        raise ValueError(f"expected {NUM_JOINTS} joints on axis -2, got shape {poses.shape}")
    src = [PANOPTIC15_JOINTS.index(n) for n in COCO17_JOINTS if n in PANOPTIC15_JOINTS]
    dst = [i for i, n in enumerate(COCO17_JOINTS) if n in PANOPTIC15_JOINTS]
    out = np.zeros((*poses.shape[:-2], len(COCO17_JOINTS), poses.shape[-1]), poses.dtype)
    out[..., dst, :] = poses[..., src, :]
    return out


# A person standing upright facing +y (their left is -x), feet on the floor z = 0; world mm,
# Panoptic-15 order. A reference pose for tests and benchmarks.
STANDING_POSE = np.array([
    [0, 0, 1500], [0, 100, 1620], [0, 0, 950],
    [-180, 0, 1480], [-200, 30, 1180], [-210, 80, 930],
    [-100, 0, 940], [-110, 20, 510], [-110, 0, 90],
    [180, 0, 1480], [200, 30, 1180], [210, 80, 930],
    [100, 0, 940], [110, 20, 510], [110, 0, 90],
], dtype=np.float64)  # fmt: skip
STANDING_POSE.flags.writeable = False
