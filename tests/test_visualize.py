"""Evaluation figures: files written, pixels drawn where the skeleton is, shape errors."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from selfpose3d.data.panoptic import MultiViewFrame
from selfpose3d.geometry.camera import Camera
from selfpose3d.skeleton import LIMBS15, NUM_JOINTS, PANOPTIC15_JOINTS
from selfpose3d.visualize import (
    PERSON_COLOURS,
    plot_overlay_2d,
    plot_poses_3d,
    write_eval_figures,
)

W, H = 320, 240
# A standing person at the origin, world mm, z up (x to the person's left).
_JOINTS = {
    "neck": (0, 0, 1500), "nose": (0, -50, 1650), "mid_hip": (0, 0, 950),
    "l_shoulder": (180, 0, 1450), "l_elbow": (220, 0, 1180), "l_wrist": (240, 0, 950),
    "l_hip": (100, 0, 930), "l_knee": (110, 0, 500), "l_ankle": (110, 0, 80),
    "r_shoulder": (-180, 0, 1450), "r_elbow": (-220, 0, 1180), "r_wrist": (-240, 0, 950),
    "r_hip": (-100, 0, 930), "r_knee": (-110, 0, 500), "r_ankle": (-110, 0, 80),
}  # fmt: skip
POSE = np.array([_JOINTS[name] for name in PANOPTIC15_JOINTS], dtype=np.float64)


def camera() -> Camera:
    """320x240 px, 4 m in front of the origin (-y), looking along +y at 1 m height."""
    R = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # camera x = world x, y = -z, z = y
    centre = np.array([0.0, -4000.0, 1000.0])
    K = [[150.0, 0, (W - 1) / 2], [0, 150.0, (H - 1) / 2], [0, 0, 1]]
    return Camera(name="00_03", K=K, dist=np.zeros(5), R=R, t=-R @ centre, width=W, height=H)


def gt_of(poses: np.ndarray) -> np.ndarray:
    return np.concatenate([poses, np.ones((*poses.shape[:2], 1))], -1)


def read_rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_plot_poses_3d_writes_png(tmp_path):
    pred = np.stack([POSE + [0, 0, 20], POSE + [800, 300, 0]])
    pred[1, 4] = np.nan  # an undrawable joint
    path = plot_poses_3d(pred, gt_of(POSE[None]), tmp_path / "figs" / "pose.png", title="t")
    image = cv2.imread(str(path))
    assert image.shape == (600, 600, 3) and path.stat().st_size > 5_000
    assert (image < 128).any()  # something dark was drawn on the white figure
    assert list(tmp_path.joinpath("figs").iterdir()) == [path]  # no temporary file left
    # No person at all, and no GT: still a valid figure.
    empty = plot_poses_3d(np.zeros((0, NUM_JOINTS, 3)), None, tmp_path / "empty.png")
    assert cv2.imread(str(empty)).shape == (600, 600, 3)


def test_overlay_draws_limbs_only_where_visible(tmp_path):
    image = np.zeros((H, W, 3), np.uint8)
    uv = camera().project(POSE)[None]  # (1, J, 2)
    path = plot_overlay_2d(image, uv, tmp_path / "overlay.png")
    drawn = read_rgb(path)
    assert drawn.shape == image.shape
    for j in range(NUM_JOINTS):  # joints are filled discs in the person's colour
        x, y = np.round(uv[0, j]).astype(int)
        assert tuple(drawn[y, x]) == PERSON_COLOURS[0]
    for a, b in LIMBS15:  # the middle of every limb is drawn (anti-aliased: near, not equal)
        x, y = np.round((uv[0, a] + uv[0, b]) / 2).astype(int)
        assert drawn[y - 1 : y + 2, x - 1 : x + 2].max() > 100
    assert (drawn[:10, :10] == 0).all()  # a far corner stays black
    hidden = plot_overlay_2d(image, uv, tmp_path / "hidden.png", visible=np.zeros((1, 15), bool))
    assert (read_rgb(hidden) == 0).all()
    off_image = np.full((1, NUM_JOINTS, 2), 1e9)  # e.g. projected from behind the camera
    off_image[0, 0] = np.nan
    assert (read_rgb(plot_overlay_2d(image, off_image, tmp_path / "off.png")) == 0).all()


def test_bad_shapes_raise(tmp_path):
    image = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(ValueError, match=r"pred must have shape \(N, 15, 3\)"):
        plot_poses_3d(POSE, None, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"gt must have shape \(N, 15, 4\)"):
        plot_poses_3d(POSE[None], POSE[None], tmp_path / "x.png")
    with pytest.raises(ValueError, match="uint8 RGB"):
        plot_overlay_2d(image.astype(np.float32), np.zeros((1, 15, 2)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="uint8 RGB"):
        plot_overlay_2d(image[..., 0], np.zeros((1, 15, 2)), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"poses_2d must have shape \(N, 15, 2\)"):
        plot_overlay_2d(image, np.zeros((1, 14, 2)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="visible must have shape"):
        plot_overlay_2d(image, np.zeros((1, 15, 2)), tmp_path / "x.png", visible=np.ones(15))
    assert not any(tmp_path.iterdir())


def test_write_eval_figures(tmp_path):
    background = np.full((H, W, 3), 90, np.uint8)
    jpeg = cv2.imencode(".jpg", background)[1].tobytes()

    def frame(index: int, images: list[bytes] | None) -> MultiViewFrame:
        return MultiViewFrame(sequence="seq/a", frame=index, cameras=[camera()], images=images,
                              image_paths=["a.jpg"], pseudo_poses=None,
                              gt_poses=gt_of(POSE[None]), gt_ids=np.array([0]))  # fmt: skip

    frames = [frame(1, [jpeg]), frame(2, None), frame(3, [b"not a jpeg"]), frame(4, [jpeg])]
    preds = [POSE[None] + [0, 0, 30]] * 4
    paths = write_eval_figures(frames, preds, tmp_path / "figs", max_frames=3)
    names = [p.name for p in paths]
    assert names == ["seq_a_00000001_3d.png", "seq_a_00000001_00_03_2d.png",
                     "seq_a_00000002_3d.png", "seq_a_00000003_3d.png"]  # fmt: skip
    assert all(p.stat().st_size > 1_000 for p in paths)
    overlay = read_rgb(paths[1])
    neck = np.round(camera().project(POSE[0] + [0, 0, 30])).astype(int)
    assert tuple(overlay[neck[1], neck[0]]) == PERSON_COLOURS[0]
    with pytest.raises(ValueError, match="4 frames but 3 predictions"):
        write_eval_figures(frames, preds[:3], tmp_path / "figs")


def test_matplotlib_is_imported_lazily():
    code = ("import sys, selfpose3d.visualize\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)
