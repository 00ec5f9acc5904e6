"""The synthetic Panoptic generator end to end: layout, determinism, images vs GT vs labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.pseudo_labels import read_pseudo_labels
from selfpose3d.data.synthetic import (
    DetectorConfig,
    PeopleConfig,
    RigConfig,
    SynthConfig,
    generate,
    make_tiny_dataset,
)
from selfpose3d.data.synthetic.detector import occlusion
from selfpose3d.data.synthetic.generator import sequence_background, sequence_names
from selfpose3d.data.synthetic.rigs import build_rig
from selfpose3d.data.synthetic.scene import build_scene
from selfpose3d.data.synthetic.views import Views
from selfpose3d.skeleton import LIMBS15


def small_config(seed: int = 0, workers: int = 1) -> SynthConfig:
    return SynthConfig(
        seed=seed, train_sequences=1, test_sequences=1, frames_per_sequence=24, workers=workers,
        rig=RigConfig(kind="dome", cameras=["00_03", "00_06", "00_12"], image_width=320,
                      image_height=180),
        people=PeopleConfig(min_people=3, max_people=4),
        detector=DetectorConfig(outside_people=1, false_positive_rate=0.2),
    )  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict, SynthConfig]:
    cfg = small_config()
    out = tmp_path_factory.mktemp("synth") / "ds"
    return out, generate(cfg, out, progress=False), cfg


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob(pattern))}


def test_layout_and_manifest(dataset):
    out, manifest, cfg = dataset
    assert manifest["generator"] == "selfpose3d-synthetic"
    assert manifest["splits"] == {"train": ["synth_train_00"], "test": ["synth_test_00"]}
    assert manifest["cameras"] == ["00_03", "00_06", "00_12"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    counts = manifest["counts"]
    assert counts["frames"] == 48 and counts["images"] == 144
    assert len(list(out.rglob("*.jpg"))) == counts["images"]
    for key in ("median_error_px", "occluded_joint_share", "false_positive_rate", "miss_rate",
                "swap_rate"):  # fmt: skip
        assert key in manifest["pseudo_labels"]
    assert manifest["space_size"] == [3400.0, 3000.0, 2000.0]
    n_gt = 0
    for seq in sequence_names(cfg):
        name = seq[0]
        cams = layout.read_calibration(layout.calibration_path(out, name))
        assert list(cams) == manifest["cameras"]
        assert all((c.width, c.height) == (320, 180) for c in cams.values())
        assert layout.list_frames(out, name) == list(range(24))
        for frame in range(24):
            ids, joints = layout.read_bodies(layout.body_path(out, name, frame))
            assert joints.shape[1:] == (19, 4)
            assert np.all((joints[..., 3] > 0.1) & (joints[..., 3] <= 1.0))
            n_gt += len(ids)
    assert n_gt == counts["gt_bodies"] > 0
    assert not (out / ".cache").exists()
    assert not any(p.name.startswith(".ds.") for p in out.parent.iterdir())  # no staging left


def test_same_seed_same_bytes_and_workers_do_not_matter(dataset, tmp_path):
    out, _, cfg = dataset
    again = tmp_path / "again"
    generate(small_config(workers=2), again, progress=False)
    for pattern in ("body3DScene_*.json", "pseudo2d_*.json", "calibration_*.json", "*.jpg"):
        a, b = _files(out, pattern), _files(again, pattern)
        assert a and a == b, pattern
    other = tmp_path / "other"
    generate(small_config(seed=1), other, progress=False)
    assert _files(out, "pseudo2d_*.json") != _files(other, "pseudo2d_*.json")
    assert _files(out, "body3DScene_*.json") != _files(other, "body3DScene_*.json")


def _scene_points(cfg: SynthConfig, index: int):
    rig = build_rig(cfg.rig)
    name, split = sequence_names(cfg)[index]
    return rig, build_scene(cfg, rig, index, name, split)


def test_gt_lands_on_the_drawn_person_and_matches_labels(dataset):
    out, _, cfg = dataset
    rig, scene = _scene_points(cfg, 0)
    name = scene.name
    cams = layout.read_calibration(layout.calibration_path(out, name))
    views = Views.of(list(cams.values()))
    labels, size = read_pseudo_labels(layout.pseudo_label_path(out, name))
    assert size == {c: (320, 180) for c in cams}
    backgrounds = [sequence_background(cfg, rig, 0, v) for v in range(len(cams))]
    head_diff, errors, matched, expected = [], [], 0, 0
    import cv2

    for frame in range(0, 24, 3):
        ids, joints = layout.read_bodies(layout.body_path(out, name, frame))
        mm = layout.points_cm_to_mm(joints[..., :3])  # (P, 19, 3)
        # The GT written to disk is the scene's 3D (the bystander is left out).
        np.testing.assert_allclose(mm, scene.points[frame, ids, :19], atol=0.01)
        uv, z = views.project(scene.points[frame])  # (P, V, N, ...)
        uv, z = uv.swapaxes(0, 1), z.swapaxes(0, 1)
        hidden, _ = occlusion(uv, z, scene.bodies, views)
        inside = views.inside(uv, z, view_axis=-3)
        for v, cam in enumerate(cams):
            img = cv2.imread(str(layout.image_path(out, name, cam, frame))).astype(float)
            gt_uv = cams[cam].project(mm)  # projected with the calibration read back
            for k, p in enumerate(ids):
                head = gt_uv[k, 15:19].mean(0)  # eyes and ears: inside the head
                x, y = np.round(head).astype(int)
                if inside[v, p, 15:19].all() and not hidden[v, p, [1]].any() and \
                        2 <= x < 318 and 2 <= y < 178:  # fmt: skip
                    patch = np.s_[y - 1 : y + 2, x - 1 : x + 2]
                    head_diff.append(np.abs(img[patch] - backgrounds[v][patch]).mean())
                visible = inside[v, p, :15] & ~hidden[v, p]
                if visible.sum() < 10:
                    continue
                expected += 1
                dets = labels[frame][cam]
                if len(dets) == 0:
                    continue
                d = np.linalg.norm(dets[:, :, :2] - gt_uv[k, None, :15], axis=-1)
                best = int(np.argmin(np.median(d, axis=1)))
                good = visible & (dets[best, :, 2] > 0)
                if np.median(d[best][good]) < 3.0:
                    matched += 1
                    errors.extend(d[best][good])
    assert len(head_diff) > 10
    assert np.mean(np.array(head_diff) > 20) > 0.85  # the person is drawn where the GT says
    assert expected > 20 and matched / expected > 0.75  # most visible people are detected
    assert np.median(errors) < 1.5  # px at 320 wide: detector noise, not a wrong projection


def test_bystanders_are_detected_but_not_in_gt(dataset):
    out, manifest, cfg = dataset
    rig, scene = _scene_points(cfg, 1)
    bystanders = [p for p, r in enumerate(scene.roles) if r == "bystander"]
    assert bystanders and all(p["role"] == "bystander" for p in manifest["sequences"][1]["people"]
                              if p["id"] in bystanders)  # fmt: skip
    cams = layout.read_calibration(layout.calibration_path(out, scene.name))
    labels, _ = read_pseudo_labels(layout.pseudo_label_path(out, scene.name))
    hits = 0
    for frame in range(24):
        ids, _ = layout.read_bodies(layout.body_path(out, scene.name, frame))
        assert not set(ids) & set(bystanders)
        for cam_name, cam in cams.items():
            for p in bystanders:
                uv = cam.project(scene.points[frame, p, :15])
                dets = labels[frame][cam_name]
                if len(dets):
                    err = np.linalg.norm(dets[:, :, :2] - uv, axis=-1)
                    hits += bool((np.median(err, axis=1) < 5.0).any())
    assert hits > 5
    assert not rig.in_space(scene.points[:, bystanders, 2]).any()


def test_occluded_joints_have_lower_confidence(dataset):
    stats = dataset[1]["pseudo_labels"]
    assert stats["occluded_joint_share"] > 0.02
    assert stats["mean_conf_occluded"] < stats["mean_conf_visible"] - 0.2


def test_pseudo_labels_hold_swaps_misses_and_false_positives(tmp_path):
    cfg = small_config()
    cfg.detector.swap_prob, cfg.detector.miss_prob = 0.3, 0.3
    manifest = generate(cfg, tmp_path / "d", progress=False)
    stats = manifest["pseudo_labels"]
    assert stats["swap_rate"] > 0.15 and stats["miss_rate"] > 0.15
    assert stats["false_positive_rate"] > 0.0


def test_bone_lengths_constant_over_time(dataset):
    out, _, _ = dataset
    lengths: dict[int, list[np.ndarray]] = {}
    for frame in range(24):
        ids, joints = layout.read_bodies(layout.body_path(out, "synth_train_00", frame))
        mm = layout.points_cm_to_mm(joints[..., :3])
        for k, p in enumerate(ids):
            lengths.setdefault(int(p), []).append(
                np.array([np.linalg.norm(mm[k, a] - mm[k, b]) for a, b in LIMBS15]))
    assert lengths
    for per_frame in lengths.values():
        arr = np.array(per_frame)
        assert arr.min() > 30.0  # mm: a real skeleton
        assert np.abs(arr - arr[0]).max() < 0.1  # mm: rigid bones


def test_existing_dataset_reuse_refusal_and_overwrite(tmp_path):
    out = tmp_path / "tiny"
    first = make_tiny_dataset(out, seed=0)
    marker = out / "manifest.json"
    mtime = marker.stat().st_mtime_ns
    assert make_tiny_dataset(out, seed=0) == first  # same config: reused, not regenerated
    assert marker.stat().st_mtime_ns == mtime
    from selfpose3d.data.synthetic import tiny_config

    with pytest.raises(ValueError, match="different config.*seed"):
        generate(tiny_config(seed=3), out, progress=False)
    assert json.loads(marker.read_text())["seed"] == 0  # untouched
    replaced = generate(tiny_config(seed=3), out, overwrite=True, progress=False)
    assert replaced["seed"] == 3 and json.loads(marker.read_text())["seed"] == 3
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a synthetic dataset"):
        generate(tiny_config(), foreign, overwrite=True, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    from selfpose3d.data.synthetic import generator

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(generator, "write_pseudo_labels", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        make_tiny_dataset(tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def test_package_import_is_light():
    code = ("import sys, selfpose3d.data.synthetic as s\n"
            "assert 'cv2' not in sys.modules and 'selfpose3d.data.synthetic.generator' "
            "not in sys.modules\nassert callable(s.generate)")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hungarian_matching_of_labels_is_possible(dataset):
    # The label arrays have the documented shape and can be matched to GT like a real
    # detector's output (the training losses do exactly this).
    out, _, _ = dataset
    labels, _ = read_pseudo_labels(layout.pseudo_label_path(out, "synth_test_00"))
    cams = layout.read_calibration(layout.calibration_path(out, "synth_test_00"))
    ids, joints = layout.read_bodies(layout.body_path(out, "synth_test_00", 5))
    for cam_name, cam in cams.items():
        dets = labels[5][cam_name]
        assert dets.ndim == 3 and dets.shape[1:] == (15, 3)
        assert np.all((dets[..., 2] >= 0) & (dets[..., 2] <= 1))
        assert np.all((dets[..., 0] >= 0) & (dets[..., 0] <= 319))
        gt_uv = cam.project(layout.points_cm_to_mm(joints[:, :15, :3]))
        if len(dets) and len(ids):
            cost = np.linalg.norm(dets[None, :, :, :2] - gt_uv[:, None], axis=-1).mean(-1)
            rows, cols = linear_sum_assignment(cost)
            assert len(rows) == min(len(ids), len(dets))
