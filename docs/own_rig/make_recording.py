"""Stand in for a user's studio: film a synthetic scene with the ceiling-mounted room rig and
hand over what a real capture session leaves behind.

    python docs/own_rig/make_recording.py OUT [--frames 60] [--early room_01=4]

OUT gets
- ``synthetic/``: the scene from ``selfpose3d synth`` (4 cameras in the corners of a
  6 x 5 m room, 2-3 people mostly walking, one more standing by a wall outside the
  generator's capture space), kept for its ground truth; the user has nothing like it;
- ``studio/calibration.toml``: the rig as an anipose calibration, translations in metres
  (``selfpose3d rig convert``), as anipose or Pose2Sim write it;
- ``studio/rec/<camera>.mp4``: one video per camera (OpenCV mp4v, 10 frames/s). A camera
  named by ``--early CAM=N`` started recording N frames before the others, as unsynchronised
  cameras do: its frame i + N shows the instant of the other cameras' frame i
  (``selfpose3d import-recording --offset CAM=N`` undoes it);
- ``studio/detections.json``: a COCO keypoints dataset file standing in for an external 2D
  detector run on the synchronised recording: one image per view and recording frame
  (``<camera>/<camera>_<frame:08d>.jpg``), one annotation per person with ``score`` and
  ``keypoint_scores``. The poses are the synthetic detector's (noise, misses, left/right swaps,
  false positives), mapped from Panoptic-15 to COCO-17; the eyes and ears are unknown (0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from selfpose3d.cli import main as selfpose3d
from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.pseudo_labels import read_pseudo_labels
from selfpose3d.skeleton import COCO17_JOINTS, panoptic15_to_coco17

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "configs" / "cpu.yaml"
FPS = 10.0  # synth.fps: the videos play at the rate the scene was sampled


def scene_overrides(frames: int, width: int, height: int, seed: int) -> list[str]:
    """``--set`` values of the scene: one sequence on the room rig, 2-3 adults or children who
    mostly walk and never leave, the synthetic detector's default errors and bystander."""
    return [
        "synth.rig.kind=room", f"synth.rig.image_width={width}",
        f"synth.rig.image_height={height}", "synth.train_sequences=1",
        "synth.test_sequences=0", f"synth.frames_per_sequence={frames}", f"synth.seed={seed}",
        "synth.people.min_people=2", "synth.people.max_people=3",
        "synth.people.walk_prob=0.9", "synth.people.enter_exit_prob=0.0",
    ]  # fmt: skip


def write_coco(labels: dict, size: dict, path: Path) -> int:
    """{recording frame: {camera: (P, 15, 3)}} -> a COCO keypoints dataset file; returns the
    number of annotations. A person's score is the mean confidence of its reported joints."""
    images, annotations = [], []
    for frame, per_cam in sorted(labels.items()):
        for cam, poses in sorted(per_cam.items()):
            image_id = len(images)
            images.append({"id": image_id, "file_name": f"{cam}/{cam}_{frame:08d}.jpg",
                           "width": size[cam][0], "height": size[cam][1]})  # fmt: skip
            for person in panoptic15_to_coco17(poses):
                conf = person[:, 2]
                reported = conf > 0
                xyv = np.concatenate([person[:, :2], reported[:, None] * 2.0], axis=1)
                annotations.append({
                    "id": len(annotations), "image_id": image_id, "category_id": 1,
                    "score": round(float(conf[reported].mean()) if reported.any() else 0.0, 4),
                    "keypoints": xyv.reshape(-1).round(2).tolist(),
                    "keypoint_scores": conf.round(4).tolist(),
                })  # fmt: skip
    categories = [{"id": 1, "name": "person", "keypoints": list(COCO17_JOINTS)}]
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))  # fmt: skip
    return len(annotations)


def write_videos(src: Path, sequence: str, cameras: list[str], frames: list[int],
                 early: dict[str, int], lead: int, out: Path) -> None:  # fmt: skip
    """One MP4 per camera. The recording proper is ``frames[lead:]``; a camera that started
    ``early[cam]`` frames before the others also holds the scene frames just before it."""
    out.mkdir(parents=True, exist_ok=True)
    for cam in cameras:
        kept = frames[lead - early.get(cam, 0) :]
        first = cv2.imread(str(layout.image_path(src, sequence, cam, kept[0])))
        height, width = first.shape[:2]
        writer = cv2.VideoWriter(str(out / f"{cam}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), FPS,
                                 (width, height))  # fmt: skip
        for frame in kept:
            writer.write(cv2.imread(str(layout.image_path(src, sequence, cam, frame))))
        writer.release()


def parse_early(values: list[str]) -> dict[str, int]:
    early = {}
    for value in values:
        cam, sep, n = value.partition("=")
        if not sep or not n.isdigit():
            raise ValueError(f"--early {value!r}: expected CAM=N with N >= 0 frames")
        early[cam] = int(n)
    return early


def make_recording(out: Path, *, frames: int, width: int, height: int, seed: int,
                   early: dict[str, int]) -> None:  # fmt: skip
    lead = max(early.values(), default=0)
    synthetic, studio = out / "synthetic", out / "studio"
    argv = ["synth", "--config", str(PRESET), "--out", str(synthetic), "--overwrite", "--quiet"]
    for override in scene_overrides(frames + lead, width, height, seed):
        argv += ["--set", override]
    if selfpose3d(argv) != 0:
        raise SystemExit("selfpose3d synth failed")
    (sequence,) = json.loads((synthetic / "manifest.json").read_text())["splits"]["train"]
    calibration = layout.calibration_path(synthetic, sequence)
    cameras = list(layout.read_calibration(calibration))
    unknown = sorted(set(early) - set(cameras))
    if unknown:
        raise ValueError(f"--early: cameras {unknown} are not in the rig ({cameras})")
    scene_frames = layout.list_frames(synthetic, sequence)

    studio.mkdir(parents=True, exist_ok=True)
    if selfpose3d(["rig", "convert", str(calibration), "--to", "anipose", "--out",
                   str(studio / "calibration.toml"), "--out-unit", "m"]) != 0:  # fmt: skip
        raise SystemExit("selfpose3d rig convert failed")
    write_videos(synthetic, sequence, cameras, scene_frames, early, lead, studio / "rec")
    labels, size = read_pseudo_labels(layout.pseudo_label_path(synthetic, sequence))
    recording = {i: labels[f] for i, f in enumerate(scene_frames[lead:])}
    people = write_coco(recording, size, studio / "detections.json")
    shifted = ", ".join(f"{cam} started {n} frames early" for cam, n in early.items())
    images = len(recording) * len(cameras)
    print(f"wrote {studio}: calibration.toml (anipose, m), rec/ ({len(cameras)} videos of "
          f"{len(recording)} frames at {width}x{height}{'; ' + shifted if shifted else ''}), "
          f"detections.json ({people} people in {images} images)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--frames", type=int, default=60, help="frames of the recording")
    parser.add_argument("--width", type=int, default=640, help="image width, px")
    parser.add_argument("--height", type=int, default=360, help="image height, px")
    parser.add_argument("--seed", type=int, default=0, help="scene seed")
    parser.add_argument("--early", action="append", default=[], metavar="CAM=N",
                        help="CAM started N frames before the others (repeatable)")  # fmt: skip
    args = parser.parse_args()
    make_recording(args.out, frames=args.frames, width=args.width, height=args.height,
                   seed=args.seed, early=parse_early(args.early))  # fmt: skip


if __name__ == "__main__":
    main()
