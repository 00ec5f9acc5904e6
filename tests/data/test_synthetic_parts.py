"""Parts of the synthetic generator: rigs, bodies, motion, projection guard, BVH, config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from selfpose3d.data.panoptic_layout import camera_from_panoptic
from selfpose3d.data.synthetic import PeopleConfig, RigConfig, SynthConfig, bvh
from selfpose3d.data.synthetic import body as B
from selfpose3d.data.synthetic.kinematics import standing_points
from selfpose3d.data.synthetic.rigs import DOME_DEFAULT_CAMERAS, build_rig
from selfpose3d.data.synthetic.scene import build_scene
from selfpose3d.data.synthetic.views import Views


@pytest.mark.parametrize(("kind", "n_cams"), [("dome", 5), ("room", 4), ("outdoor3", 3)])
def test_rigs_build_and_see_the_capture_space(kind, n_cams):
    rig = build_rig(RigConfig(kind=kind, image_width=960, image_height=540))
    assert len(rig.cameras) == n_cams
    views = Views.of(rig.cameras)
    # The centre and the floor below it, seen by every camera (Panoptic's low HD cameras
    # cut off the feet of people there: 00_23 does not see that floor point).
    pts = np.array([rig.space_center, [*rig.space_center[:2], 0.0]])
    uv, z = views.project(pts)
    seen = views.inside(uv, z)
    assert seen[:, 0].all() and seen[:, 1].sum() >= n_cams - 1
    for cam in rig.cameras:
        assert (cam.width, cam.height) == (960, 540)
        hfov = np.degrees(2 * np.arctan(cam.width / 2 / cam.K[0, 0]))
        assert 55 < hfov < 95
        assert np.any(cam.dist[:2] != 0)  # a real lens, mildly distorted
    if kind == "dome":
        assert rig.names == DOME_DEFAULT_CAMERAS


def test_dome_is_the_real_panoptic_calibration(fixtures_dir):
    real = json.loads((fixtures_dir / "panoptic/160906_band1/calibration_160906_band1.json")
                      .read_text())["cameras"]  # fmt: skip
    real = {c["name"]: camera_from_panoptic(c) for c in real if c["type"] == "hd"}
    rig = build_rig(RigConfig(kind="dome", cameras=sorted(real)))
    assert len(rig.cameras) == 31
    for cam in rig.cameras:
        ref = real[cam.name]
        np.testing.assert_allclose(cam.K, ref.K)
        np.testing.assert_allclose(cam.R, ref.R)
        np.testing.assert_allclose(cam.t, ref.t)
        np.testing.assert_allclose(cam.dist, ref.dist)


def test_rig_rejects_unknown_cameras_and_scales():
    with pytest.raises(ValueError, match="not in the dome rig"):
        build_rig(RigConfig(kind="dome", cameras=["00_03", "99_99"]))
    small = build_rig(RigConfig(kind="dome", image_width=480, image_height=270)).cameras[0]
    full = build_rig(RigConfig(kind="dome")).cameras[0]
    p = np.array([[100.0, -300.0, 900.0]])
    np.testing.assert_allclose((small.project(p) + 0.5) * 4, full.project(p) + 0.5, atol=1e-6)


def test_projection_guard_keeps_far_points_outside():
    cam = build_rig(RigConfig(kind="dome")).cameras[0]
    views = Views.of([cam])
    # Points sideways of the camera, far outside its ~69 deg field of view.
    side = cam.center + 3000 * cam.R[0] + 300 * cam.R[2]
    uv, z = views.project(np.array([side, cam.center + 3000 * cam.R[2]]))
    inside = views.inside(uv, z)
    assert not inside[0, 0] and inside[0, 1]
    np.testing.assert_allclose(uv[0, 1], cam.project(cam.center + 3000 * cam.R[2]))


def test_statures_and_proportions():
    rng = np.random.default_rng(0)
    cfg = PeopleConfig(child_fraction=0.5)
    bodies = [B.sample_body(rng, cfg, hue=0.1) for _ in range(300)]
    adults = [b for b in bodies if not b.child]
    children = [b for b in bodies if b.child]
    assert 100 < len(adults) < 200 and 100 < len(children) < 200
    assert all(1440 <= b.stature <= 1960 for b in adults)
    assert all(1000 <= b.stature <= 1500 for b in children)
    assert abs(np.mean([b.stature for b in adults]) - 1700) < 20
    for b in bodies:
        pts = standing_points(b)
        assert abs(pts[B.HEAD_TOP, 2] - b.stature) < 0.01 * b.stature  # stands as tall as H
        hip = pts[B.MID_HIP, 2] / b.stature
        assert (0.46 if b.child else 0.5) < hip < 0.56  # Drillis-Contini: hip at 0.53 H
    child = min(children, key=lambda b: b.stature)
    assert child.head_scale > 1.15  # small children have big heads


def _root_distances(scene) -> np.ndarray:
    root = scene.points[:, :, B.MID_HIP, :2]
    d = np.linalg.norm(root[:, :, None] - root[:, None], axis=-1)
    return d + np.eye(root.shape[1]) * 1e9


def walkers_of(scene) -> list[int]:
    return [p for p, r in enumerate(scene.roles) if r != "bystander"]


@pytest.mark.parametrize("kind", ["room", "dome"])
def test_no_interpenetration_and_plausible_motion(kind):
    rig_cfg = RigConfig(kind=kind, image_width=320, image_height=180)
    cfg = SynthConfig(frames_per_sequence=150, rig=rig_cfg,
                      people=PeopleConfig(min_people=6, max_people=6))  # fmt: skip
    rig = build_rig(cfg.rig)
    moved = []
    for index in range(3):
        scene = build_scene(cfg, rig, index, "s", "train")
        assert _root_distances(scene).min() >= cfg.people.min_distance - 1e-6
        pts = scene.points
        speed = np.linalg.norm(np.diff(pts[:, :, B.MID_HIP, :2], axis=0), axis=-1) * cfg.fps
        assert speed.max() < 2500  # mm/s: walking, not teleporting
        ankles = pts[:, :, [B.L_ANKLE, B.R_ANKLE], 2].min(-1)
        assert np.allclose(ankles, [b.ankle_height for b in scene.bodies], atol=1.0)  # on the floor
        moved.append((speed[:, walkers_of(scene)] > 300).mean())  # share of time walking
        walkers = walkers_of(scene)
        assert scene.in_gt[:, walkers].mean() > 0.6
        assert not scene.in_gt[:, [p for p in range(len(scene.roles)) if p not in walkers]].any()
    assert np.mean(moved) > 0.05  # people do walk around, even six in a small space


def test_enter_exit_people_leave_the_gt():
    cfg = SynthConfig(frames_per_sequence=200, rig=RigConfig(image_width=320, image_height=180),
                      people=PeopleConfig(min_people=3, max_people=3, enter_exit_prob=1.0))
    rig = build_rig(cfg.rig)
    scene = build_scene(cfg, rig, 0, "s", "train")
    movers = [p for p, r in enumerate(scene.roles) if r in ("enter", "exit")]
    assert len(movers) == 3
    for p in movers:
        in_gt = scene.in_gt[:, p]
        assert in_gt.any() and not in_gt.all()  # inside for part of the sequence only
        outside = ~rig.in_space(scene.points[:, p, B.MID_HIP])
        np.testing.assert_array_equal(~in_gt, outside)


# --------------------------------------------------------------------------------------------
# BVH

_CHAINS = [  # (name, parent, offset in cm, Y up)
    ("Hips", None, (0, 0, 0)), ("LeftUpLeg", "Hips", (9, 0, 0)),
    ("LeftLeg", "LeftUpLeg", (0, -42, 0)), ("LeftFoot", "LeftLeg", (0, -42, 0)),
    ("RightUpLeg", "Hips", (-9, 0, 0)),
    ("RightLeg", "RightUpLeg", (0, -42, 0)), ("RightFoot", "RightLeg", (0, -42, 0)),
    ("Spine", "Hips", (0, 10, 0)), ("Neck", "Spine", (0, 40, 0)), ("Head", "Neck", (0, 10, 0)),
    ("LeftArm", "Spine", (17, 38, 0)), ("LeftForeArm", "LeftArm", (0, -30, 0)),
    ("LeftHand", "LeftForeArm", (0, -25, 0)), ("RightArm", "Spine", (-17, 38, 0)),
    ("RightForeArm", "RightArm", (0, -30, 0)), ("RightHand", "RightForeArm", (0, -25, 0)),
]  # fmt: skip


def write_bvh(path: Path, frames: int = 30, drop: str = "") -> Path:
    """A tiny Y-up BVH (cm): a person walking slowly along +z, swinging the legs."""
    chains = [c for c in _CHAINS if c[0] != drop]
    children: dict[str | None, list] = {}
    for c in chains:
        children.setdefault(c[1], []).append(c)
    lines = ["HIERARCHY"]

    def emit(c, depth):
        pad = "  " * depth
        lines.append(f"{pad}{'ROOT' if c[1] is None else 'JOINT'} {c[0]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {c[2][0]} {c[2][1]} {c[2][2]}")
        chans = "6 Xposition Yposition Zposition" if c[1] is None else "3"
        lines.append(f"{pad}  CHANNELS {chans} Zrotation Xrotation Yrotation")
        for child in children.get(c[0], []):
            emit(child, depth + 1)
        if not children.get(c[0]):
            lines.append(f"{pad}  End Site\n{pad}  {{\n{pad}    OFFSET 0 -5 0\n{pad}  }}")
        lines.append(f"{pad}}}")

    emit(chains[0], 0)
    lines += ["MOTION", f"Frames: {frames}", "Frame Time: 0.0333333"]
    for f in range(frames):
        swing = 20 * np.sin(2 * np.pi * f / 30)
        values = [0.0, 90.0, 2.0 * f, 0.0, 0.0, 0.0]
        for c in chains[1:]:
            x = swing if c[0] == "LeftUpLeg" else -swing if c[0] == "RightUpLeg" else 0.0
            values += [0.0, x, 0.0]
        lines.append(" ".join(f"{v:.4f}" for v in values))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bvh_parse_and_forward_kinematics(tmp_path):
    clip = bvh.parse_bvh(write_bvh(tmp_path / "walk.bvh"))
    assert clip.n_frames == 30 and abs(clip.frame_time - 1 / 30) < 1e-6
    assert clip.names[0] == "Hips" and "Head_end" in clip.names
    assert clip.motion.shape == (30, 6 + 3 * 15)
    pos = bvh.positions(clip)
    j = {n: i for i, n in enumerate(clip.names)}
    np.testing.assert_allclose(pos[0, j["LeftFoot"]], [9, 90 - 84, 0], atol=1e-9)
    # Frame 7: the left hip turned by 20 sin(84 deg) deg about +x (right-handed): the straight
    # 84 cm leg rotates with it.
    a = np.radians(20 * np.sin(2 * np.pi * 7 / 30))
    expected = pos[7, j["Hips"]] + [9, -84 * np.cos(a), -84 * np.sin(a)]
    np.testing.assert_allclose(pos[7, j["LeftFoot"]], expected, atol=1e-3)  # 4-decimal file
    up = bvh.to_model_frame(clip)
    assert up[0, j["Head"], 2] > up[0, j["Hips"], 2] > up[0, j["LeftFoot"], 2]  # z is up now


def test_bvh_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.bvh"
    bad.write_text(write_bvh(tmp_path / "ok.bvh").read_text().rsplit("\n", 2)[0] + "\n1 2 3\n")
    with pytest.raises(ValueError, match=r"bad\.bvh.*frames x"):
        bvh.parse_bvh(bad)
    no_foot = bvh.parse_bvh(write_bvh(tmp_path / "nofoot.bvh", drop="LeftFoot"))
    with pytest.raises(ValueError, match="leftfoot"):
        bvh.joint_map(no_foot.names)
    with pytest.raises(FileNotFoundError):
        bvh.parse_bvh(tmp_path / "missing.bvh")


def test_bvh_drives_people(tmp_path):
    path = write_bvh(tmp_path / "walk.bvh", frames=60)
    cfg = SynthConfig(frames_per_sequence=40, rig=RigConfig(image_width=320, image_height=180),
                      people=PeopleConfig(min_people=2, max_people=2, bvh_path=str(path),
                                          enter_exit_prob=0.0))  # fmt: skip
    rig = build_rig(cfg.rig)
    scene = build_scene(cfg, rig, 0, "s", "train")
    bvh_people = [p for p, m in enumerate(scene.motions) if m == "bvh"]
    assert bvh_people
    for p in bvh_people:
        pts, body = scene.points[:, p], scene.bodies[p]
        thigh = np.linalg.norm(pts[:, B.L_HIP] - pts[:, B.L_KNEE], axis=-1)
        shank = np.linalg.norm(pts[:, B.L_KNEE] - pts[:, B.L_ANKLE], axis=-1)
        np.testing.assert_allclose(thigh + shank, body.leg, rtol=1e-3)  # scaled to the person
        assert pts[:, B.NOSE, 2].min() > pts[:, B.MID_HIP, 2].max()
        assert scene.in_gt[:, p].all()
    assert _root_distances(scene).min() >= cfg.people.min_distance - 1e-6


# --------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"frames_per_sequence": 0}, "frames_per_sequence"),
        ({"train_sequences": 0, "test_sequences": 0}, "at least one sequence"),
        ({"fps": 0.5}, "fps"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
    ],
)
def test_config_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SynthConfig(**kwargs)


def test_section_validation():
    with pytest.raises(ValueError, match="min_people"):
        PeopleConfig(min_people=3, max_people=2)
    with pytest.raises(ValueError, match="min_distance"):
        PeopleConfig(min_distance=100.0)
    with pytest.raises(ValueError, match="space_center"):
        RigConfig(space_center=[0.0, 0.0])


# --------------------------------------------------------------------------------------------
# Rendering and occlusion


def test_near_people_hide_far_people_in_images_and_labels():
    from selfpose3d.data.synthetic.detector import occlusion
    from selfpose3d.data.synthetic.render import draw_people
    from selfpose3d.data.synthetic.rigs import look_at
    from selfpose3d.geometry.camera import Camera

    R, t = look_at(np.array([0.0, -3000.0, 1000.0]), np.array([0.0, 0.0, 1000.0]))
    cam = Camera(name="c", K=[[500, 0, 319.5], [0, 500, 239.5], [0, 0, 1]], dist=[0] * 5, R=R,
                 t=t, width=640, height=480)  # fmt: skip
    rng = np.random.default_rng(0)
    near, far = (B.make_body(1750.0, child=False, rng=rng, hue=h) for h in (0.0, 0.6))
    pts = np.stack([standing_points(near, (0.0, 0.0), np.pi / 2),
                    standing_points(far, (0.0, 2000.0), np.pi / 2)])  # fmt: skip
    views = Views.of([cam])
    uv, z = views.project(pts)  # (P, V, N, ...)
    uv, z = uv.swapaxes(0, 1), z.swapaxes(0, 1)
    img = np.zeros((480, 640, 3), np.uint8)
    draw_people(img, uv[0], z[0], [near, far], float(views.focal[0]))
    chest = np.round((uv[0, 0, B.NECK] + uv[0, 0, B.MID_HIP]) / 2).astype(int)
    pixel = img[chest[1], chest[0]].astype(float)
    shirt = np.array(near.colors["shirt"], float) * 0.85  # the torso's fill shade
    other = np.array(far.colors["shirt"], float) * 0.85
    assert np.abs(pixel - shirt).max() < 3 < np.abs(pixel - other).max()
    by_other, _ = occlusion(uv, z, [near, far], views)
    assert not by_other[0, 0].any()  # nothing stands in front of the near person
    assert by_other[0, 1, [B.NECK, B.MID_HIP, B.L_HIP, B.R_HIP]].all()  # hidden behind them
