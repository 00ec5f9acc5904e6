"""Camera rig import: every format round-trips, units and up axes convert, bad files are
named, and the automatic capture space covers the synthetic rigs' spaces."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from selfpose3d.config import load_config
from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.capture_space import capture_space, fit_space, up_axis_warning, visible
from selfpose3d.data.rigs import UP_AXES, check_image_sizes, load_rig, save_rig
from selfpose3d.data.synthetic.config import RigConfig
from selfpose3d.data.synthetic.rigs import DOME_DEFAULT_CAMERAS, build_rig, look_at
from selfpose3d.geometry.camera import Camera, stack_cameras

REPO = Path(__file__).resolve().parents[2]
SEQ = "160906_band1"
SUFFIX = {"panoptic": ".json", "anipose": ".toml", "opencv": ".yaml", "opencv-json": ".json"}


@pytest.fixture(scope="module")
def real_calibration(fixtures_dir) -> Path:
    return fixtures_dir / "panoptic" / SEQ / f"calibration_{SEQ}.json"


def room_cameras() -> list[Camera]:
    return build_rig(RigConfig(kind="room")).cameras


def points_in_front(cams: list[Camera], n: int = 50) -> np.ndarray:
    """(n, 3) mm: points in the middle of the rigs, in front of every camera."""
    pts = np.random.default_rng(0).uniform([-1500, -1500, 0], [1500, 1500, 1800], (n, 3))
    for c in cams:
        assert ((pts @ c.R.T + c.t)[:, 2] > 0).all()
    return pts


def assert_same_cameras(got: list[Camera], want: list[Camera]) -> None:
    assert [c.name for c in got] == [c.name for c in want]
    for g, w in zip(got, want, strict=True):
        assert (g.width, g.height) == (w.width, w.height)
        for a in ("K", "dist", "t"):
            np.testing.assert_allclose(getattr(g, a), getattr(w, a), rtol=1e-9,
                                       atol=1e-9 * np.abs(getattr(w, a)).max())  # fmt: skip
        np.testing.assert_allclose(g.R, w.R, rtol=0, atol=1e-9)


def assert_projects_like_opencv(got: list[Camera], want: list[Camera], pts: np.ndarray) -> None:
    for g, w in zip(got, want, strict=True):
        front = (pts @ w.R.T + w.t)[:, 2] > 100
        ref = cv2.projectPoints(pts[front], cv2.Rodrigues(w.R)[0], w.t, w.K, w.dist)[0]
        np.testing.assert_allclose(g.project(pts[front]), ref.reshape(-1, 2), atol=1e-6)


def save(tmp_path: Path, cams: list[Camera], fmt: str, **kw) -> Path:
    path = tmp_path / f"rig{SUFFIX[fmt]}"
    save_rig(path, cams, fmt.removesuffix("-json"), **kw)
    return path


# -- formats ---------------------------------------------------------------------------------


def test_the_real_panoptic_calibration_loads_like_the_panoptic_reader(real_calibration):
    cams = load_rig(real_calibration)
    assert len(cams) == 520
    assert cams == list(layout.read_calibration(real_calibration).values())
    hd = load_rig(real_calibration, cameras=DOME_DEFAULT_CAMERAS)
    assert [c.name for c in hd] == DOME_DEFAULT_CAMERAS and hd[0].extra["node"] == 3


@pytest.mark.parametrize("fmt", ["panoptic", "anipose", "opencv", "opencv-json"])
def test_every_format_round_trips_the_real_calibration(fmt, real_calibration, tmp_path):
    cams = load_rig(real_calibration)
    back = load_rig(save(tmp_path, cams, fmt))
    assert_same_cameras(back, cams)
    assert_projects_like_opencv(back, cams, points_in_front(back[-10:]))


@pytest.mark.parametrize("fmt", ["panoptic", "anipose", "opencv", "opencv-json"])
def test_every_format_round_trips_a_synthetic_rig(fmt, tmp_path):
    cams = room_cameras()
    path = save(tmp_path, cams, fmt)
    back = load_rig(path, format=fmt.removesuffix("-json"))
    assert_same_cameras(back, cams)
    assert_projects_like_opencv(back, cams, points_in_front(cams))


def test_anipose_file_holds_rodrigues_vectors_and_fewer_distortions_are_padded(tmp_path):
    cams = room_cameras()
    path = save(tmp_path, cams, "anipose")
    table = tomllib.loads(path.read_text())["cam_1"]
    assert table["name"] == "room_01" and table["size"] == [1920, 1080]
    np.testing.assert_allclose(cv2.Rodrigues(np.array(table["rotation"]))[0], cams[1].R,
                               atol=1e-12)  # fmt: skip
    # What anipose's 4-coefficient writers (Pose2Sim) produce, plus an ignored metadata table.
    text = re.sub(r"distortions = \[.*\]", "distortions = [-0.1, 0.05, 0.001, 0.002]",
                  path.read_text(), count=1)  # fmt: skip
    path.write_text(text + "\n[metadata]\nadjusted = false\nerror = 0.3\n")
    back = load_rig(path)
    np.testing.assert_array_equal(back[0].dist, [-0.1, 0.05, 0.001, 0.002, 0.0])


def test_opencv_yaml_as_users_write_it_with_file_storage(tmp_path):
    """A top-level `names` list and one map per camera, rvec / tvec / image_size fields."""
    cams = room_cameras()[:2]
    path = tmp_path / "calib.yml"
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.startWriteStruct("names", cv2.FileNode_SEQ)
    for name in ("left", "right"):
        fs.write("", name)
    fs.endWriteStruct()
    for name, c in zip(("left", "right"), cams, strict=True):
        fs.startWriteStruct(name, cv2.FileNode_MAP)
        fs.write("camera_matrix", c.K)
        fs.write("dist_coeffs", c.dist[:4].reshape(1, 4))
        fs.write("rvec", cv2.Rodrigues(c.R)[0])
        fs.write("tvec", c.t.reshape(3, 1) / 1000)
        fs.write("image_size", np.array([[c.width], [c.height]], dtype=np.int32))
        fs.endWriteStruct()
    fs.release()
    back = load_rig(path, unit="m")
    assert [c.name for c in back] == ["left", "right"]
    for b, c in zip(back, cams, strict=True):
        np.testing.assert_allclose(b.R, c.R, atol=1e-12)
        np.testing.assert_allclose(b.t, c.t, rtol=1e-12)
        np.testing.assert_array_equal(b.dist, [*c.dist[:4], 0.0])
        assert (b.width, b.height) == (c.width, c.height)


def test_a_file_in_metres_equals_one_in_millimetres(tmp_path):
    cams = room_cameras()
    for fmt in ("anipose", "opencv"):
        path = save(tmp_path, cams, fmt, unit="m")
        assert_same_cameras(load_rig(path, unit="m"), cams)
        in_mm = load_rig(path, unit="mm")  # the same numbers read as mm: 1000x too small
        np.testing.assert_allclose(in_mm[0].t * 1000, cams[0].t, rtol=1e-12)
    table = tomllib.loads((tmp_path / "rig.toml").read_text())["cam_0"]
    np.testing.assert_allclose(table["translation"], cams[0].t / 1000, rtol=1e-15)
    # cm like Panoptic's, so that `unit` is what the Panoptic reader does for its own files.
    path = save(tmp_path, cams, "anipose", unit="cm")
    assert_same_cameras(load_rig(path, unit="cm"), cams)


def test_up_axes_rotate_the_world_and_keep_the_projections(tmp_path):
    # x_user = M @ x_zup: a point 1 m above the floor is at y = +1 m (y up) or -1 m (y down).
    np.testing.assert_array_equal(UP_AXES["y"] @ [0, 0, 1000], [0, 1000, 0])
    np.testing.assert_array_equal(UP_AXES["-y"] @ [0, 0, 1000], [0, -1000, 0])
    cams = room_cameras()
    pts_zup = points_in_front(cams)
    for up in ("y", "-y"):
        M = UP_AXES[up]
        assert np.isclose(np.linalg.det(M), 1.0)
        path = save(tmp_path, cams, "anipose", up=up)
        tables = tomllib.loads(path.read_text())
        for c, table in zip(cams, tables.values(), strict=True):
            R_user = cv2.Rodrigues(np.array(table["rotation"]))[0]
            np.testing.assert_allclose(R_user, c.R @ M.T, atol=1e-12)
            # The user's camera sees the user's (rotated) points where ours sees ours.
            ref = cv2.projectPoints(pts_zup @ M.T, np.array(table["rotation"]),
                                    np.array(table["translation"]), c.K, c.dist)[0]
            np.testing.assert_allclose(c.project(pts_zup), ref.reshape(-1, 2), atol=1e-6)
        assert_same_cameras(load_rig(path, up=up), cams)
    # A Panoptic file is the y-down, cm case of the general conversion.
    panoptic = json.loads(save(tmp_path, cams, "panoptic").read_text())["cameras"]
    user = tomllib.loads(save(tmp_path, cams, "anipose", unit="cm", up="-y").read_text())
    for entry, table in zip(panoptic, user.values(), strict=True):
        np.testing.assert_allclose(entry["R"], cv2.Rodrigues(np.array(table["rotation"]))[0],
                                   atol=1e-12)  # fmt: skip
        np.testing.assert_allclose(np.ravel(entry["t"]), table["translation"], rtol=1e-12)


# -- bad input -------------------------------------------------------------------------------


def opencv_json(tmp_path: Path, edit=None, cams: list[Camera] | None = None) -> Path:
    path = save(tmp_path, cams or room_cameras(), "opencv-json")
    data = json.loads(path.read_text())
    if edit:
        edit(data)
    path.write_text(json.dumps(data))
    return path


def _set(index: int, key: str, value):
    def edit(data):
        data["cameras"][index][key] = value
    return edit


def _scale_r(data):
    data["cameras"][1]["R"] = (1.01 * np.array(data["cameras"][1]["R"])).tolist()


def _reflect_r(data):
    data["cameras"][0]["R"] = (-np.array(data["cameras"][0]["R"])).tolist()


def _del(index: int, key: str):
    def edit(data):
        del data["cameras"][index][key]
    return edit


def _one_camera(data):
    data["names"], data["cameras"] = data["names"][:1], data["cameras"][:1]


def _duplicate(data):
    data["names"][2] = data["cameras"][2]["name"] = "room_00"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_scale_r, "camera 'room_01': rotation 'R' is not orthonormal (max |R R^T - I| = 0.0201"),
        (_reflect_r, "camera 'room_00': rotation 'R' has determinant -1.000: a reflection"),
        (_set(0, "K", [[0, 0, 960], [0, 1000, 540], [0, 0, 1]]), "focal length must be > 0, "
         "got fx = 0, fy = 1000"),
        (_set(3, "K", [[900, 0, 960], [0, -900, 540], [0, 0, 1]]), "camera 'room_03': focal "
         "length must be > 0"),
        (_set(0, "K", [[900, 0, 0], [0, 900, 0], [960, 540, 1]]), "is the matrix transposed?"),
        (_set(0, "K", [[np.nan, 0, 960], [0, 900, 540], [0, 0, 1]]), "'K' holds NaN or inf"),
        (_set(0, "t", [1.0, 2.0]), "camera 'room_00': 't' needs 3 numbers, got 2"),
        (_set(0, "D", [0.1, 0, 0, 0, 0, 0.2, 0, 0]), "only OpenCV's 5-coefficient distortion"),
        (_set(0, "width", -5), "image size must be positive, got -5x1080"),
        (_del(1, "K"), "camera 'room_01': missing the intrinsics ('K' or 'camera_matrix')"),
        (_del(1, "t"), "camera 'room_01': missing the translation"),
        (_del(1, "R"), "camera 'room_01': missing the rotation ('R' (3x3) or 'rvec')"),
        (_del(1, "height"), "camera 'room_01': missing the image size"),
        (_one_camera, "a rig needs at least 2 cameras, found 1"),
        (_duplicate, "duplicate camera names ['room_00']"),
    ],
)
def test_bad_opencv_calibrations_name_the_file_camera_and_problem(tmp_path, edit, message):
    path = opencv_json(tmp_path, edit)
    with pytest.raises(ValueError) as e:
        load_rig(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def anipose_file(tmp_path: Path, old: str = "", new: str = "") -> Path:
    path = save(tmp_path, room_cameras(), "anipose")
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("translation = ", "# translation = ", "camera 'room_00' ([cam_0]): missing translation "
         "(an anipose camera table has name, size, matrix, distortions, rotation, translation)"),
        ("size = [1920, 1080]", "size = [1920]", "size must be [width, height], got [1920]"),
        ("matrix = [[", "matrix = [[0.0, 0.0, 0.0], [", "'matrix' needs 9 numbers, got 12"),
        ("matrix = [[", "matrix = [[0.0, ", "'matrix' is not an array of numbers: [[0.0, "),
        ("rotation = [", "rotation = [\"a\", ", "'rotation' is not an array of numbers"),
        ("[cam_0]\n", "[cam_0]\nfisheye = true\n", "fisheye cameras are not supported"),
        ("name = \"room_01\"", "name = \"room_00\"", "duplicate camera names ['room_00']"),
        ("[cam_0]", "[cam_0", "not a valid TOML file"),
    ],
)
def test_bad_anipose_calibrations_name_the_file_camera_and_problem(tmp_path, old, new, message):
    path = anipose_file(tmp_path, old, new)
    with pytest.raises(ValueError) as e:
        load_rig(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_bad_panoptic_and_unreadable_files_are_named(tmp_path, real_calibration):
    data = json.loads(real_calibration.read_text())
    data["cameras"][7]["R"][0][0] += 0.01
    path = tmp_path / "calibration_bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"camera '01_08': rotation 'R' is not orthonormal"):
        load_rig(path)
    del data["cameras"][7]["distCoef"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"camera '01_08': missing distCoef"):
        load_rig(path)
    cases = [
        (tmp_path / "missing.toml", FileNotFoundError, "calibration file not found"),
        (tmp_path / "calib.txt", ValueError, "cannot tell the calibration format"),
        (tmp_path / "broken.json", ValueError, "calibration is not valid JSON"),
        (tmp_path / "broken.yaml", ValueError, "not a valid OpenCV YAML file (line 4: "),
        (tmp_path / "empty.yaml", ValueError, "no cameras (expected a top-level 'names' list"),
    ]
    (tmp_path / "calib.txt").write_text("hello\n")
    (tmp_path / "broken.json").write_text("{\"cameras\": [")
    (tmp_path / "broken.yaml").write_text("%YAML:1.0\n---\nnames: [a, b\n  - : :\n")
    (tmp_path / "empty.yaml").write_text("%YAML:1.0\n---\nfoo: 1\n")
    for file, error, message in cases:
        with pytest.raises(error) as e:
            load_rig(file)
        assert str(e.value).startswith(f"{file}: ") and message in str(e.value), str(e.value)


def test_bad_arguments_and_unknown_cameras(real_calibration):
    with pytest.raises(ValueError, match="unit 'inch': expected mm, cm or m"):
        load_rig(real_calibration, unit="inch")
    with pytest.raises(ValueError, match="up 'x': expected z, y or -y"):
        load_rig(real_calibration, up="x")
    with pytest.raises(ValueError, match="rig format 'colmap'"):
        load_rig(real_calibration, format="colmap")
    with pytest.raises(ValueError, match=r"cameras \['00_99'\] are not in the calibration"):
        load_rig(real_calibration, cameras=["00_03", "00_99"])
    with pytest.raises(ValueError, match="a rig needs at least 2 cameras, found 1"):
        load_rig(real_calibration, cameras=["00_03"])


def test_check_image_sizes_names_every_mismatch():
    cams = room_cameras()
    check_image_sizes(cams, {"room_00": (1920, 1080), "room_02": (1920, 1080)}, "rec/")
    with pytest.raises(ValueError) as e:
        check_image_sizes(cams, {"room_00": (960, 540), "room_01": (1280, 1024)}, "rec/")
    assert str(e.value) == (
        "rec/: camera 'room_00': images are 960x540 px but the calibration says 1920x1080 "
        "(same aspect: resized by 0.5? scale the intrinsics); camera 'room_01': images are "
        "1280x1024 px but the calibration says 1920x1080")
    with pytest.raises(ValueError, match=r"rec/: cameras \['cam9'\] are not in the calibration"):
        check_image_sizes(cams, {"cam9": (1920, 1080)}, "rec/")


# -- capture space ---------------------------------------------------------------------------


def test_visible_agrees_with_opencv_and_rejects_points_behind_and_outside():
    cams = room_cameras()
    pts = np.random.default_rng(1).uniform([-6000, -6000, -500], [6000, 6000, 3000], (400, 3))
    seen = visible(pts, stack_cameras(cams))
    for v, c in enumerate(cams):
        uv = cv2.projectPoints(pts, cv2.Rodrigues(c.R)[0], c.t, c.K, c.dist)[0].reshape(-1, 2)
        inside = (uv >= -0.5).all(1) & (uv <= [c.width - 0.5, c.height - 0.5]).all(1)
        front = (pts @ c.R.T + c.t)[:, 2] > 1
        assert not (seen[v] & ~(front & inside)).any()
        # Within 45 degrees of the axis the lens model does not fold: OpenCV's verdict holds.
        cam = pts @ c.R.T + c.t
        central = front & inside & ((cam[:, :2] ** 2).sum(1) < cam[:, 2] ** 2)
        assert seen[v][central].all() and central.sum() > 10


def test_visible_rejects_rays_the_distortion_folds_back_into_the_image():
    # k1 = -0.5: r (1 - 0.5 r^2) peaks at r^2 = 2/3; a ray at r = 1.2 lands at u = 320 + 500 *
    # 1.2 * (1 - 0.72) = 488 px, inside the 640 px image, though it is 50 degrees off-axis.
    cam = Camera(name="c", K=[[500, 0, 320], [0, 500, 240], [0, 0, 1]], dist=[-0.5, 0, 0, 0, 0],
                 R=np.eye(3), t=np.zeros(3), width=640, height=480)  # fmt: skip
    pts = np.array([[1200.0, 0, 1000], [500, 0, 1000], [0, 0, -1000]])
    np.testing.assert_allclose(cam.project(pts[:2]), [[488, 240], [538.75, 240]])
    assert visible(pts, stack_cameras([cam])).tolist() == [[False, True, False]]


@pytest.mark.parametrize("kind", ["dome", "room", "outdoor3"])
def test_capture_space_contains_the_synthetic_rigs_space(kind):
    rig = build_rig(RigConfig(kind=kind))
    center, size = capture_space(rig.cameras)
    lo, hi = center - size / 2, center + size / 2
    want_lo, want_hi = rig.space_center - rig.space_size / 2, rig.space_center + rig.space_size / 2
    assert (lo <= want_lo).all() and (hi >= want_hi).all(), (center, size)
    assert (size[:2] <= 2.5 * rig.space_size[:2]).all(), size  # not the whole horizon
    assert size[2] == 2000 and center[2] == 800
    np.testing.assert_array_equal(lo % 100, 0)
    np.testing.assert_array_equal(hi % 100, 0)
    # The camera order does not matter; more required views give a smaller box.
    c2, s2 = capture_space(rig.cameras[::-1])
    np.testing.assert_array_equal(c2, center)
    np.testing.assert_array_equal(s2, size)
    _, s3 = capture_space(rig.cameras, min_views=len(rig.cameras))
    assert (s3 <= size).all()


def look_at_camera(name: str, center: list[float]) -> Camera:
    """A pinhole camera (1920 x 1080, ~100 deg wide) at ``center`` mm aimed at (0, 0, 900)."""
    R, t = look_at(np.array(center), np.array([0.0, 0.0, 900.0]))
    return Camera(name=name, K=[[800, 0, 959.5], [0, 800, 539.5], [0, 0, 1]], dist=np.zeros(5),
                  R=R, t=t, width=1920, height=1080)  # fmt: skip


def test_capture_space_of_cameras_on_one_wall_extends_where_they_look():
    # Three cameras on the wall y = -4 m, 2.5 m high, aimed at (0, 0, 900): their centres are
    # collinear, the space is in front of them.
    cams = [look_at_camera(f"wall_{i}", [x, -4000.0, 2500.0])
            for i, x in enumerate((-2500.0, 0.0, 2500.0))]  # fmt: skip
    center, size = capture_space(cams)
    lo, hi = center - size / 2, center + size / 2
    assert (lo[:2] <= [-1500, -1500]).all() and (hi[:2] >= [1500, 1500]).all(), (lo, hi)
    # Not behind the wall; in front, as far as the cameras stand before their aim, y = -250.
    assert lo[1] >= -4000 and hi[1] <= 3500, (lo, hi)
    # Two cameras facing each other: a line of centres still gives an area between them.
    pair = [look_at_camera("a", [-4000.0, 0, 2000]), look_at_camera("b", [4000.0, 0, 2000])]
    center, size = capture_space(pair)
    assert (size[:2] >= 2000).all() and np.allclose(center[:2], 0, atol=100), (center, size)


def test_capture_space_of_a_wrong_up_axis_says_so():
    # Cameras that all look at the ceiling see no floor.
    cams = []
    for c in room_cameras():
        R, t = look_at(c.center, c.center * [0.5, 0.5, 2.0])
        cams.append(Camera(name=c.name, K=c.K, dist=c.dist, R=R, t=t, width=c.width,
                           height=c.height))  # fmt: skip
    with pytest.raises(ValueError, match="check the calibration's up axis and translation unit"):
        capture_space(cams)
    # A y-up calibration read as z up: the image 'down' of the cameras is the world's -y.
    y_up = [Camera(name=c.name, K=c.K, dist=c.dist, R=c.R @ UP_AXES["y"].T, t=c.t,
                   width=c.width, height=c.height) for c in room_cameras()]  # fmt: skip
    assert "the calibration's up axis may differ" in up_axis_warning(y_up)
    assert up_axis_warning(room_cameras()) is None
    with pytest.raises(ValueError, match="min_views = 5: must be between 1 and the 4 cameras"):
        capture_space(room_cameras(), min_views=5)


def test_fit_space_keeps_the_presets_voxel_size():
    model = load_config(REPO / "configs" / "cpu.yaml").model
    rig = build_rig(RigConfig(kind="outdoor3"))
    fitted = fit_space(model, rig.cameras)
    center, size = capture_space(rig.cameras)
    assert fitted.space_center == center.tolist() and fitted.space_size == size.tolist()
    old_voxel = np.array(model.space_size) / (np.array(model.root_bins) - 1)
    new_voxel = size / (np.array(fitted.root_bins) - 1)
    assert (new_voxel <= old_voxel + 1e-9).all()
    assert (size / (np.array(fitted.root_bins) - 2) > old_voxel).all()  # one bin fewer: too big
    assert model.space_size == [4000.0, 4000.0, 2000.0]  # a copy, the preset is unchanged
    assert fitted.pose_bins == model.pose_bins
    # By hand: the dome's space is 5200 x 5500 x 2000 mm; voxels 4000 / 39 = 102.6 mm give
    # ceil(50.7) + 1 and ceil(53.6) + 1 bins, and z keeps the preset's 10 bins exactly.
    dome = fit_space(model, build_rig(RigConfig(kind="dome")).cameras)
    assert dome.space_size == [5200.0, 5500.0, 2000.0] and dome.root_bins == [52, 55, 10]


# -- command line ----------------------------------------------------------------------------


def test_cli_rig_info_prints_cameras_and_overrides(real_calibration, capsys):
    from selfpose3d.cli import main

    assert main(["rig", "info", str(real_calibration), "--cameras", *DOME_DEFAULT_CAMERAS]) == 0
    out = capsys.readouterr().out
    cams = load_rig(real_calibration, cameras=DOME_DEFAULT_CAMERAS)
    fitted = fit_space(load_config(REPO / "configs" / "cpu.yaml").model, cams)
    for c in cams:
        line = next(row for row in out.splitlines() if row.startswith(c.name))
        assert f"{c.width}x{c.height}" in line and f"{c.K[0, 0]:.1f}" in line
        dist = np.linalg.norm(c.center - fitted.space_center)
        assert line.rstrip().endswith(f"{dist:.0f}")
    overrides = next(row for row in out.splitlines() if "--set model.space_center" in row)
    sets = overrides.split("--set")[1:]
    cfg = load_config(REPO / "configs" / "cpu.yaml", [s.strip() for s in sets])
    assert cfg.model == fitted


def test_cli_rig_convert_and_its_errors(real_calibration, tmp_path, capsys):
    from selfpose3d.cli import main

    out = tmp_path / "calibration.toml"
    assert main(["rig", "convert", str(real_calibration), "--to", "anipose", "--out", str(out),
                 "--cameras", *DOME_DEFAULT_CAMERAS, "--out-unit", "m"]) == 0  # fmt: skip
    assert str(out) in capsys.readouterr().out
    assert_same_cameras(load_rig(out, unit="m"),
                        load_rig(real_calibration, cameras=DOME_DEFAULT_CAMERAS))  # fmt: skip
    assert main(["rig", "info", str(tmp_path / "nope.toml")]) == 2
    assert "selfpose3d rig: error: " in capsys.readouterr().err
    # A z-up file read as y up: a warning says the cameras' image 'down' is not the world's.
    assert main(["rig", "info", str(out), "--unit", "m", "--up", "y"]) == 0
    assert "the calibration's up axis may differ" in capsys.readouterr().err
