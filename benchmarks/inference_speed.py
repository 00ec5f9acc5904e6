"""Inference speed of the model on this CPU: milliseconds and frames per second per preset.

For each preset (``configs/<name>.yaml``) the model is built with random weights (speed does
not depend on them) and run on synthetic frames of the preset's rig (the synthetic generator's
cameras at the stored image size) with 1, 2 and 3 people standing in the capture space: pseudo
2D labels projected from them, and, for ``images`` input, JPEG images of the cameras' size.
The timed part is what ``selfpose3d predict`` runs per frame on the model (as
``training.evaluate.predict_batch``: input heatmaps, root_net proposals, pose_net on every
proposal that is a person), except that the proposals are marked as people at the people's
true roots: a random root_net finds none, and pose_net's cost grows with the people it
regresses. Decoding and warping the images into the batch is done beforehand and not
timed. Each (preset, people) row is the mean over its frames, after ``--warmup`` untimed
calls.

    python benchmarks/inference_speed.py [--presets cpu paper] [--frames 6] [--threads 2]

The paper preset (ResNet-50 on five 960x512 views, 64^3 pose cubes) takes seconds per frame
on a CPU: ``--presets paper --frames 3 --warmup 0`` is a quick check.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from selfpose3d.config import Config, load_config
from selfpose3d.data.batches import Batch, BatchSpec, make_batch
from selfpose3d.data.panoptic import MultiViewFrame
from selfpose3d.data.synthetic.rigs import build_rig
from selfpose3d.geometry.camera import Camera
from selfpose3d.models.model import SelfPose3dModel, build_model
from selfpose3d.skeleton import NUM_JOINTS, ROOT_INDEX, STANDING_POSE

REPO = Path(__file__).resolve().parents[1]


def rig_cameras(cfg: Config) -> list[Camera]:
    """The preset's synthetic rig at the size the data is stored at (``data.image_*``)."""
    cams = build_rig(cfg.synth.rig).cameras
    if cfg.data.image_width:
        cams = [c.scaled(cfg.data.image_width / c.width, cfg.data.image_height / c.height)
                for c in cams]  # fmt: skip
    return cams


def people_in_space(rng: np.random.Generator, cfg: Config, n: int) -> np.ndarray:
    """(n, 15, 3) mm: turned standing people within 1 m of the space centre, >= 700 mm apart."""
    centre = np.asarray(cfg.model.space_center[:2])
    roots: list[np.ndarray] = []
    while len(roots) < n:
        xy = centre + rng.uniform(-1000, 1000, 2)
        if all(np.linalg.norm(xy - r) >= 700 for r in roots):
            roots.append(xy)
    people = []
    for xy in roots:
        yaw = rng.uniform(0, 2 * np.pi)
        Rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        people.append(STANDING_POSE @ Rz.T + [*xy, 0.0])
    return np.stack(people)


def synthetic_frame(rng: np.random.Generator, cfg: Config, cams: list[Camera], n_people: int,
                    index: int) -> MultiViewFrame:  # fmt: skip
    people = people_in_space(rng, cfg, n_people)
    labels = [np.concatenate([c.project(people.reshape(-1, 3)).reshape(n_people, -1, 2),
                              np.full((n_people, NUM_JOINTS, 1), 0.9)], -1).astype(np.float32)
              for c in cams]  # fmt: skip
    images = None
    if cfg.model.input_mode == "images":
        images = []
        for c in cams:
            image = rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8)
            images.append(cv2.imencode(".jpg", image)[1].tobytes())
    return MultiViewFrame(sequence="bench", frame=index, cameras=cams, images=images,
                          image_paths=[], pseudo_poses=labels,
                          gt_poses=np.concatenate([people, np.ones_like(people[..., :1])], -1),
                          gt_ids=np.arange(n_people))  # fmt: skip


def infer(model: SelfPose3dModel, batch: Batch, roots: torch.Tensor) -> torch.Tensor:
    """One forward pass on the un-augmented views; ``roots`` (B, P, 3) mm become the people
    among the proposals. Returns poses (B, K, J, 3) mm."""
    a3 = batch.view("a3")
    with torch.inference_mode():
        heatmaps = model.input_heatmaps(a3.affines, a3.images, batch.pseudo.joints,
                                        batch.pseudo.weights("soft", 1.0))  # fmt: skip
        _, proposals = model.proposals(heatmaps, batch.cameras, a3.affines)
        n = roots.shape[1]
        proposals = proposals.clone()
        proposals[:, :, 4] = 0.0
        proposals[:, :n, :3], proposals[:, :n, 3:] = roots, 1.0
        return model.poses(heatmaps, proposals, batch.cameras, a3.affines)


def time_preset(name: str, n_frames: int, warmup: int, seed: int) -> list[tuple]:
    """Rows (preset, input mode, views, people, ms/frame, frames) for 1..3 people."""
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    torch.manual_seed(seed)
    model = build_model(cfg.model).eval()
    cams = rig_cameras(cfg)
    rng = np.random.default_rng(seed)
    spec = BatchSpec.from_configs(cfg.model, images=cfg.model.input_mode == "images")
    people_counts = [min(1 + i % 3, cfg.model.max_people) for i in range(n_frames)]
    frames = [synthetic_frame(rng, cfg, cams, n, i) for i, n in enumerate(people_counts)]
    batches = [make_batch([f], spec) for f in frames]
    roots = [torch.from_numpy(f.gt_poses[None, :, ROOT_INDEX, :3]).float() for f in frames]
    for batch, r in list(zip(batches, roots, strict=True))[:warmup]:
        infer(model, batch, r)
    seconds: dict[int, list[float]] = {}
    for n, batch, r in zip(people_counts, batches, roots, strict=True):
        start = time.perf_counter()
        infer(model, batch, r)
        seconds.setdefault(n, []).append(time.perf_counter() - start)
    return [(name, cfg.model.input_mode, len(cams), n, 1e3 * float(np.mean(s)), len(s))
            for n, s in sorted(seconds.items())]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "paper"],
                        help="names in configs/ (default: cpu paper)")  # fmt: skip
    parser.add_argument(
        "--frames",
        type=int,
        default=6,
        help="timed frames per preset, cycling through 1, 2, 3 people",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.frames < 1 or args.warmup < 0:
        parser.error("--frames must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [row for name in args.presets
            for row in time_preset(name, args.frames, args.warmup, args.seed)]  # fmt: skip

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model inference "
          f"with random weights, batch of 1 frame, batch preparation not timed")  # fmt: skip
    names = ("preset", "input mode", "views", "people", "frames", "ms/frame", "frames/s")
    header = "{:<8} {:<16} {:>5} {:>6} {:>6} {:>9} {:>8}".format(*names)
    print(header)
    print("-" * len(header))
    for preset, mode, views, people, ms, frames in rows:
        print(f"{preset:<8} {mode:<16} {views:>5} {people:>6} {frames:>6} {ms:>9.1f} "
              f"{1e3 / ms:>8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
