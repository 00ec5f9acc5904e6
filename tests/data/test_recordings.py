"""Recordings: per-camera image folders or videos, synchronised by frame index with offsets.

Every frame k of a camera is a flat grey image of level 10 k, so the frame a reader returns
can be recovered from its pixels (within the error of the mp4v codec)."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from selfpose3d.data import recordings
from selfpose3d.data.recordings import RecordingError, natural_key, open_recording, probe_video

W, H = 64, 48


def grey(k: int, size: tuple[int, int] = (W, H)) -> np.ndarray:
    return np.full((size[1], size[0], 3), 10 * k, np.uint8)


def write_video(path: Path, n: int, size: tuple[int, int] = (W, H)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    assert writer.isOpened()
    for k in range(n):
        writer.write(grey(k, size))
    writer.release()
    return path


def write_images(folder: Path, n: int, name: str = "img{}.png") -> Path:
    folder.mkdir(parents=True)
    for k in range(n):
        cv2.imwrite(str(folder / name.format(k)), grey(k))
    return folder


def index_of(img: np.ndarray) -> int:
    """The camera frame an image shows: level 10 k. mp4v's YUV round trip darkens a grey by up
    to 4 levels, so only half the spacing identifies a frame."""
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    level = float(img.mean())
    k = round(level / 10)
    assert abs(level - 10 * k) < 4.5, level
    return k


def shown(recording, frames) -> dict[int, dict[str, int]]:
    return {f: {c: index_of(img) for c, img in imgs.items()}
            for f, imgs in recording.read_chunk(frames)}  # fmt: skip


def test_videos_and_folders_synchronised_with_offsets(tmp_path):
    write_video(tmp_path / "a.mp4", 12)
    write_video(tmp_path / "b.mp4", 14)
    write_images(tmp_path / "c", 13)
    (tmp_path / "notes.txt").write_text("not a camera")
    rec = open_recording(tmp_path, ["c", "a", "b"], offsets={"b": 2, "c": 1})

    assert rec.cameras == ["c", "a", "b"]  # the rig's order
    assert [(s.kind, s.num_frames, s.offset) for s in rec.sources] == [
        ("images", 13, 1), ("video", 12, 0), ("video", 14, 2)]  # fmt: skip
    assert rec.num_frames == 12 == min(13 - 1, 12 - 0, 14 - 2)
    assert rec.frames == list(range(12))
    assert rec.image_sizes() == {"a": (W, H), "b": (W, H), "c": (W, H)}
    got = shown(rec, rec.frames)
    assert got == {i: {"c": i + 1, "a": i, "b": i + 2} for i in range(12)}


def test_mapping_input_and_start_stop_every(tmp_path):
    video = write_video(tmp_path / "x.mp4", 12)
    folder = write_images(tmp_path / "frames_of_y", 12, name="y_{:03d}.jpg")
    rec = open_recording({"x": video, "y": folder}, ["x", "y"], start=2, stop=11, every=3)
    assert rec.frames == [2, 5, 8] and rec.num_frames == 12
    # A chunk in the middle of the video: one seek, then sequential decoding.
    assert shown(rec, [5, 8]) == {5: {"x": 5, "y": 5}, 8: {"x": 8, "y": 8}}
    assert shown(rec, [2]) == {2: {"x": 2, "y": 2}}
    assert shown(rec, [9, 10, 11]) == {i: {"x": i, "y": i} for i in (9, 10, 11)}

    rec = open_recording({"x": video, "y": folder}, ["x", "y"], start=7, stop=100)
    assert rec.frames == [7, 8, 9, 10, 11]
    with pytest.raises(ValueError, match=r"start 12 is past the end of the recording "
                                         r"\(12 synchronised frames\)"):  # fmt: skip
        open_recording({"x": video, "y": folder}, ["x", "y"], start=12)
    for kwargs in ({"every": 0}, {"start": -1}, {"start": 5, "stop": 5}):
        with pytest.raises(ValueError, match="need start >= 0, stop > start and every >= 1"):
            open_recording({"x": video, "y": folder}, ["x", "y"], **kwargs)
    with pytest.raises(ValueError, match="strictly ascending"):
        next(rec.read_chunk([8, 7]))
    with pytest.raises(ValueError, match="outside the recording's 12 frames"):
        next(rec.read_chunk([11, 12]))


def test_image_files_are_ordered_by_the_numbers_in_their_names(tmp_path):
    folder = write_images(tmp_path / "cam", 12, name="frame{}.png")  # frame2 < frame10
    (folder / ".frame99.png").write_bytes(b"hidden")
    (folder / "frames.csv").write_text("not an image")
    rec = open_recording(tmp_path, ["cam"])
    assert [p.name for p in rec.sources[0].files][:3] == ["frame0.png", "frame1.png", "frame2.png"]
    assert shown(rec, rec.frames) == {i: {"cam": i} for i in range(12)}
    names = ["f10.png", "f2.png", "F1.jpg", "take2_f1.png", "take10_f1.png", "f", "f1"]
    assert sorted(names, key=natural_key) == ["f", "f1", "F1.jpg", "f2.png", "f10.png",
                                              "take2_f1.png", "take10_f1.png"]  # fmt: skip


def test_length_rule_and_sync_warning(tmp_path):
    write_images(tmp_path / "a", 12)
    write_images(tmp_path / "b", 8)
    with pytest.warns(UserWarning, match=r"lengths after the offsets differ by 4 frames "
                                         r"\(a: 12, b: 8\)"):  # fmt: skip
        rec = open_recording(tmp_path, ["a", "b"])
    assert rec.num_frames == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_recording(tmp_path, ["a", "b"], offsets={"a": 4}).num_frames == 8
        assert open_recording(tmp_path, ["a", "b"], offsets={"a": 1}).num_frames == 8  # 11 vs 8
    with pytest.raises(ValueError, match=rf"{tmp_path / 'b'}: camera b has 8 frames, no more "
                                         r"than its offset 8"):  # fmt: skip
        open_recording(tmp_path, ["a", "b"], offsets={"b": 8})


def test_bad_offsets_are_refused(tmp_path):
    write_images(tmp_path / "a", 3)
    write_images(tmp_path / "b", 3)
    with pytest.raises(ValueError, match=r"camera b: offset -2 is negative; offsets must be >= 0 "
                                         r".*add 2 to the other cameras' offsets"):  # fmt: skip
        open_recording(tmp_path, ["a", "b"], offsets={"b": -2})
    with pytest.raises(ValueError, match=r"offsets name cameras that are not in the rig: \['z'\]"):
        open_recording(tmp_path, ["a", "b"], offsets={"z": 1})
    with pytest.raises(ValueError, match="camera a: offset must be a whole number"):
        open_recording(tmp_path, ["a", "b"], offsets={"a": 1.5})


def test_cameras_must_match_the_rig(tmp_path):
    write_images(tmp_path / "a", 3)
    write_video(tmp_path / "b.mp4", 3)
    write_images(tmp_path / "extra", 3)
    with pytest.raises(ValueError, match=re.escape(
            f"{tmp_path}: cameras do not match the rig: missing ['c'], not in the rig ['extra'] "
            f"(rig cameras: ['a', 'b', 'c'])")):  # fmt: skip
        open_recording(tmp_path, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"mapping: cameras do not match the rig: missing "
                                         r"\['b'\], not in the rig \[\]"):  # fmt: skip
        open_recording({"a": tmp_path / "a"}, ["a", "b"])
    write_video(tmp_path / "a.mp4", 3)
    with pytest.raises(ValueError, match=f"{tmp_path}: camera a has both a and a.mp4"):
        open_recording(tmp_path, ["a", "b", "extra"])
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'none'}: recording directory not"):
        open_recording(tmp_path / "none", ["a"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=rf"{tmp_path / 'empty'}: camera e: no images"):
        open_recording({"e": tmp_path / "empty"}, ["e"])
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'gone.mp4'}: camera g: folder or "
                                                r"video not found"):  # fmt: skip
        open_recording({"g": tmp_path / "gone.mp4"}, ["g"])
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(ValueError, match=rf"{tmp_path / 't.txt'}: camera t: not an image folder "
                                         r"or a video"):  # fmt: skip
        open_recording({"t": tmp_path / "t.txt"}, ["t"])


def test_undecodable_files_are_named(tmp_path):
    folder = write_images(tmp_path / "cam", 6)
    bad = folder / "img3.png"
    bad.write_bytes(b"\x89PNG garbage")
    rec = open_recording(tmp_path, ["cam"])  # frame 0 decodes: the size is known
    with pytest.raises(RecordingError, match=rf"{bad}: camera cam, recording frame 3: image "
                                             r"cannot be decoded"):  # fmt: skip
        shown(rec, [2, 3, 4])
    cv2.imwrite(str(bad), grey(3, (32, 24)))
    with pytest.raises(RecordingError, match=rf"{bad}: camera cam, recording frame 3: image is "
                                             r"32x24 px, the camera's other frames are 64x48"):
        shown(rec, [3])
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(RecordingError, match=rf"{video}: video (cannot be opened|has no "
                                             r"decodable frame)"):  # fmt: skip
        open_recording({"v": video}, ["v"])


class _LyingCapture:
    """A capture whose container claims another frame count than the video has."""

    def __init__(self, real: type, path: str, claim: int) -> None:
        self._cap, self._claim = real(path), claim

    def get(self, prop: int) -> float:
        return float(self._claim) if prop == cv2.CAP_PROP_FRAME_COUNT else self._cap.get(prop)

    def __getattr__(self, name: str):
        return getattr(self._cap, name)


@pytest.mark.parametrize("claim", [5, 20, 0])
def test_video_frame_count_is_verified_by_decoding(tmp_path, monkeypatch, caplog, claim):
    video = write_video(tmp_path / "v.mp4", 12)
    assert probe_video(video) == (12, (W, H))
    real = cv2.VideoCapture
    monkeypatch.setattr(recordings.cv2, "VideoCapture",
                        lambda path: _LyingCapture(real, path, claim))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger=recordings.__name__):
        assert probe_video(video) == (12, (W, H))
    assert f"the container claims {claim} frames, 12 decode" in caplog.text
