"""Pseudo 2D labels for a Panoptic-layout root: a detector over every view, or a COCO import.

Writes ``<root>/<seq>/pseudo2d_<seq>.json`` (``selfpose3d/data/pseudo_labels.py``): Panoptic-15
joints, x/y in pixels of the image files on disk (``image_size`` records their sizes),
confidence in [0, 1]. The views of a sequence are the cameras of its calibration that have an
``hdImgs/<cam>/`` folder, and every ``<cam>_<frame:08d>.jpg`` in it.

Two engines give the same files: ``ray`` runs a Ray Data job per sequence over rows
(camera, frame, path) -> ``map_batches`` with a callable class holding the detector, on a
fixed pool of actors (one GPU each where the cluster has GPUs, else one CPU each); the images
are read inside the actors, so only paths and small pose arrays cross the object store.
``plain`` runs the same class in this process (debugging, small data). An image that cannot
be decoded is reported in the summary and left out of the file (the reader then rejects that
frame), never silently dropped and never stopping the job. Each sequence's file is written
atomically as soon as its views are done.

With ``coco=FILE`` no detector runs: the file (any detector's COCO keypoints output) is
imported by :func:`selfpose3d.detectors.read_coco_keypoints`.

CLI: ``selfpose3d pseudo-label ROOT [--coco FILE | --weights PATH | --random-init] ...``
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.pseudo_labels import PseudoLabels, write_pseudo_labels
from selfpose3d.detectors import (
    DetectorConfig,
    build_detector,
    read_coco_keypoints,
    resolve_weights,
)
from selfpose3d.skeleton import NUM_JOINTS, coco17_to_panoptic15

Engine = Literal["ray", "plain"]
Batch = dict[str, np.ndarray]  # Ray Data's numpy batch format: column -> (B,) array
RunViews = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


# -- what to label ----------------------------------------------------------------------------


def list_sequences(root: Path) -> list[str]:
    """The root's sequences: its manifest.json splits (train, then test), else every folder
    holding a ``calibration_<seq>.json``."""
    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            splits = json.loads(manifest.read_text()).get("splits", {})
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise ValueError(f"{manifest}: not a manifest object with 'splits' ({e})") from e
        names = [str(s) for split in ("train", "test") for s in splits.get(split, [])]
        if names:
            return list(dict.fromkeys(names))
    names = sorted(p.name for p in root.iterdir()
                   if p.is_dir() and layout.calibration_path(root, p.name).is_file())  # fmt: skip
    if not names:
        raise FileNotFoundError(f"{root}: no sequences (no manifest.json splits and no "
                                f"<seq>/calibration_<seq>.json)")  # fmt: skip
    return names


def list_views(root: Path, sequence: str) -> list[dict[str, Any]]:
    """Rows {camera, frame, path} for every image of every calibrated camera, by frame."""
    calibration = layout.read_calibration(layout.calibration_path(root, sequence))
    rows = []
    for camera in calibration:
        folder = layout.image_path(root, sequence, camera, 0).parent
        pattern = re.compile(rf"^{re.escape(camera)}_(\d{{8}})\.jpg$")
        for p in folder.glob("*.jpg") if folder.is_dir() else ():
            if m := pattern.match(p.name):
                rows.append({"camera": camera, "frame": int(m.group(1)), "path": str(p)})
    if not rows:
        raise FileNotFoundError(f"{root / sequence / layout.IMAGE_DIR}: no images of any camera "
                                f"of the calibration ({', '.join(list(calibration)[:5])}, ...) "
                                f"as <cam>/<cam>_<frame:08d>.jpg")  # fmt: skip
    order = list(calibration)
    rows.sort(key=lambda r: (r["frame"], order.index(r["camera"])))
    return rows


# -- the detector stage (runs inside Ray actors for the ray engine) ---------------------------


class DetectBatch:
    """Ray Data callable class: a batch of (camera, frame, path) rows -> the rows + poses.

    Output columns added: ``poses`` (bytes of a (P, 15, 3) float32 array: x px, y px, conf in
    Panoptic-15), ``people`` (P), ``width``/``height`` (px of the image file), ``error`` (why
    the image could not be read; empty when it was).
    """

    def __init__(self, cfg: DetectorConfig) -> None:
        self.detector = build_detector(cfg)

    def __call__(self, batch: Batch) -> Batch:
        paths = [str(p) for p in batch["path"]]
        images: list[np.ndarray] = []
        errors = []
        for path in paths:
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            errors.append("" if bgr is not None else "image cannot be read or decoded")
            if bgr is not None:
                images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        found = iter(self.detector.detect(images))
        sizes = iter([(img.shape[1], img.shape[0]) for img in images])
        poses, people, width, height = [], [], [], []
        for error in errors:
            p_P153 = (coco17_to_panoptic15(next(found)) if not error else
                      np.zeros((0, NUM_JOINTS, 3), np.float32))  # fmt: skip
            w, h = next(sizes) if not error else (0, 0)
            poses.append(p_P153.astype(np.float32).tobytes())
            people.append(len(p_P153))
            width.append(w)
            height.append(h)
        return {
            "camera": batch["camera"], "frame": batch["frame"], "path": batch["path"],
            "poses": np.array(poses, dtype=object), "people": np.array(people, np.int64),
            "width": np.array(width, np.int64), "height": np.array(height, np.int64),
            "error": np.array(errors, dtype=object),
        }  # fmt: skip


def _batches(rows: list[dict[str, Any]], batch_size: int) -> Iterator[Batch]:
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        yield {k: np.array([r[k] for r in chunk]) for k in ("camera", "frame", "path")}


@contextmanager
def _plain_engine(cfg: DetectorConfig, batch_size: int, use_gpu: bool | None,
                  progress: bool) -> Iterator[RunViews]:  # fmt: skip
    import torch
    from tqdm import tqdm

    if use_gpu and not torch.cuda.is_available():
        raise ValueError("use_gpu=True (--gpu) but CUDA is not available in this process")
    on_gpu = use_gpu is not False and torch.cuda.is_available()
    stage = DetectBatch(dataclasses.replace(cfg, device="cuda" if on_gpu else "cpu"))

    def run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for batch in tqdm(_batches(rows, batch_size), total=math.ceil(len(rows) / batch_size),
                          desc="pseudo-label", unit="batch", disable=not progress):  # fmt: skip
            result = stage(batch)
            out.extend({k: v[i] for k, v in result.items()} for i in range(len(batch["path"])))
        return out

    yield run


@contextmanager
def _ray_engine(cfg: DetectorConfig, batch_size: int, actors: int | None,
                use_gpu: bool | None, address: str | None, progress: bool
                ) -> Iterator[RunViews]:  # fmt: skip
    from pipelines.session import data_progress_bars, ray_session

    with ray_session(address) as ray:
        from ray.data import ActorPoolStrategy

        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        if use_gpu and not gpus:
            raise ValueError("use_gpu=True (--gpu) but the Ray cluster has no GPUs")
        on_gpu = gpus > 0 and use_gpu is not False
        cfg = dataclasses.replace(cfg, device="cuda" if on_gpu else "cpu")
        pool = actors or (gpus if on_gpu else cpus)

        def run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            n_batches = math.ceil(len(rows) / batch_size)
            with data_progress_bars(progress):
                ds = ray.data.from_items(rows, override_num_blocks=n_batches)
                ds = ds.map_batches(
                    DetectBatch, fn_constructor_kwargs={"cfg": cfg}, batch_size=batch_size,
                    batch_format="numpy", compute=ActorPoolStrategy(size=min(pool, n_batches)),
                    **({"num_gpus": 1} if on_gpu else {"num_cpus": 1}),
                )  # fmt: skip
                return ds.take_all()

        yield run


def _collect(rows: list[dict[str, Any]]
             ) -> tuple[PseudoLabels, dict[str, tuple[int, int]], list[dict[str, str]]]:
    """Detector output rows -> (labels, image size per camera, failed views)."""
    labels: PseudoLabels = {}
    sizes: dict[str, tuple[int, int]] = {}
    first: dict[str, str] = {}
    failures = []
    for r in sorted(rows, key=lambda r: (int(r["frame"]), str(r["camera"]))):
        camera, path = str(r["camera"]), str(r["path"])
        if r["error"]:
            failures.append({"file": path, "reason": str(r["error"])})
            continue
        size = (int(r["width"]), int(r["height"]))
        if sizes.setdefault(camera, size) != size:
            raise ValueError(f"{path}: image is {size[0]}x{size[1]} px but {first[camera]} of "
                             f"the same camera is {sizes[camera][0]}x{sizes[camera][1]}; one "
                             f"label file needs one image size per camera")  # fmt: skip
        first.setdefault(camera, path)
        poses = np.frombuffer(r["poses"], dtype=np.float32).reshape(-1, NUM_JOINTS, 3)
        labels.setdefault(int(r["frame"]), {})[camera] = poses
    return labels, sizes, failures


# -- COCO import ------------------------------------------------------------------------------


def _coco_sizes(root: Path, sequence: str, labels: PseudoLabels,
                known: dict[str, tuple[int, int]], source: Path
                ) -> dict[str, tuple[int, int]]:  # fmt: skip
    """Image size per camera: the COCO file's, else the first image on disk, else the
    calibration's resolution; cameras must be in the calibration."""
    calib_file = layout.calibration_path(root, sequence)
    calibration = layout.read_calibration(calib_file)
    sizes = {}
    for frame, per_cam in sorted(labels.items()):
        for camera in per_cam:
            if camera not in calibration:
                raise ValueError(f"{source}: camera {camera!r} (sequence {sequence}, frame "
                                 f"{frame}) is not in {calib_file}")  # fmt: skip
            if camera in sizes:
                continue
            if camera in known:
                sizes[camera] = known[camera]
                continue
            img = cv2.imread(str(layout.image_path(root, sequence, camera, frame)))
            cam = calibration[camera]
            sizes[camera] = (img.shape[1], img.shape[0]) if img is not None else (cam.width,
                                                                                  cam.height)
    return sizes


def _coco_sequences(imported: dict[str | None, Any], root: Path, sequences: list[str] | None,
                    source: Path) -> dict[str, Any]:  # fmt: skip
    """Assign the imported images to the root's sequences (file names may not name them)."""
    named = {k: v for k, v in imported.items() if k is not None}
    if None in imported:
        candidates = sequences or list_sequences(root)
        if named or len(candidates) != 1:
            raise ValueError(f"{source}: some images do not say their sequence (no "
                             f"<seq>/hdImgs/ in file_name, no 'sequence' field); import them "
                             f"one sequence at a time with sequences=[...] (--sequences)")
        return {candidates[0]: imported[None]}
    wanted = sequences or list(named)
    absent = [s for s in wanted if not layout.calibration_path(root, s).is_file()]
    if absent:
        raise FileNotFoundError(f"{source}: sequence {absent[0]!r} has no calibration "
                                f"{layout.calibration_path(root, absent[0])}")  # fmt: skip
    missing = [s for s in wanted if s not in named]
    if missing:
        raise ValueError(f"{source}: no images of sequence {missing[0]!r} (it has "
                         f"{sorted(named)})")  # fmt: skip
    return {s: named[s] for s in wanted}


# -- the job ----------------------------------------------------------------------------------


def _entry(labels: PseudoLabels, failures: list[dict[str, str]], seconds: float, path: Path
           ) -> dict[str, Any]:  # fmt: skip
    counts = [len(p) for per_cam in labels.values() for p in per_cam.values()]
    return {
        "frames": len(labels), "views": len(counts), "failed_views": len(failures),
        "people_per_view": float(np.mean(counts)) if counts else 0.0,
        "seconds": seconds, "images_per_second": len(counts) / seconds if seconds > 0 else 0.0,
        "file": str(path), "failures": failures,
    }  # fmt: skip


def _check_outputs(root: Path, sequences: list[str], overwrite: bool) -> None:
    for seq in sequences:
        path = layout.pseudo_label_path(root, seq)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: pseudo labels exist already; pass overwrite=True "
                                  f"(--overwrite) to replace them")  # fmt: skip


def pseudo_label(
    root: str | Path, *, sequences: list[str] | None = None,
    detector: Literal["keypointrcnn"] = "keypointrcnn", weights: str | Path | None = None,
    random_init: bool = False, coco: str | Path | None = None,
    coco_images: str | Path | None = None, coco_pattern: str | None = None,
    batch_size: int = 4, actors: int | None = None, use_gpu: bool | None = None,
    score_threshold: float = 0.7, min_size: int = 800, max_size: int = 1333,
    max_people: int = 20, engine: Engine = "ray", address: str | None = None,
    overwrite: bool = False, progress: bool = True,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Write ``<root>/<seq>/pseudo2d_<seq>.json`` for the root's sequences; returns a summary.

    ``sequences``: default every sequence of the root (manifest.json, else every folder with a
    calibration), or, with ``coco``, those the COCO file names. The detector (``weights``: a
    state dict file; None = torchvision's cache file; on a cluster the path must be readable on
    every node) sees images resized inside the model to ``min_size``/``max_size`` px and
    keeps people scoring above ``score_threshold`` (at most ``max_people`` per image).
    ``actors``: detector replicas (default: one per GPU, else one per CPU of the cluster);
    ``use_gpu``: None = GPUs where the cluster has them, True = require, False = CPU only.
    ``coco``/``coco_images``/``coco_pattern``: see :func:`read_coco_keypoints`.

    Returns {sequence: {frames, views, failed_views, people_per_view, seconds,
    images_per_second, file, failures: [{file, reason}]}}. Raises FileExistsError for an
    existing label file unless ``overwrite``, and ValueError/FileNotFoundError naming the file
    on bad input; nothing is written before the inputs of every sequence check out.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: root directory not found")
    if engine not in ("ray", "plain"):
        raise ValueError(f"engine must be 'ray' or 'plain', got {engine!r}")
    if batch_size < 1 or (actors is not None and actors < 1):
        raise ValueError(f"batch_size and actors must be >= 1, got {batch_size}, {actors}")
    if coco is None and (coco_images is not None or coco_pattern is not None):
        raise ValueError("coco_images and coco_pattern (--coco-images, --coco-pattern) need "
                         "coco (--coco FILE)")  # fmt: skip
    if coco is not None:
        if weights is not None or random_init:
            raise ValueError("a COCO import runs no detector: pass coco or weights/random_init, "
                             "not both")  # fmt: skip
        return _import_coco(root, Path(coco), coco_images, coco_pattern, sequences, overwrite)

    cfg = DetectorConfig(kind=detector, random_init=random_init,
                         score_threshold=score_threshold, min_size=min_size,
                         max_size=max_size, max_people=max_people)  # fmt: skip
    if not random_init:
        # Resolved here, so a missing file fails now and not inside every actor.
        cfg.weights = str(resolve_weights(weights))
    sequences = list(sequences) if sequences else list_sequences(root)
    _check_outputs(root, sequences, overwrite)
    views = {seq: list_views(root, seq) for seq in sequences}
    summary = {}
    make_engine = (_ray_engine(cfg, batch_size, actors, use_gpu, address, progress)
                   if engine == "ray" else
                   _plain_engine(cfg, batch_size, use_gpu, progress))  # fmt: skip
    with make_engine as run:
        for seq in sequences:
            t0 = time.perf_counter()
            labels, sizes, failures = _collect(run(views[seq]))
            path = layout.pseudo_label_path(root, seq)
            write_pseudo_labels(path, labels, sizes)
            summary[seq] = _entry(labels, failures, time.perf_counter() - t0, path)
    return summary


def _import_coco(root: Path, coco: Path, coco_images: str | Path | None,
                 coco_pattern: str | None, sequences: list[str] | None, overwrite: bool
                 ) -> dict[str, dict[str, Any]]:  # fmt: skip
    t0 = time.perf_counter()
    imported = read_coco_keypoints(coco, images=coco_images, camera_frame=coco_pattern)
    per_seq = _coco_sequences(imported, root, list(sequences) if sequences else None, coco)
    _check_outputs(root, list(per_seq), overwrite)
    sizes = {seq: _coco_sizes(root, seq, s.labels, s.image_size, coco)
             for seq, s in per_seq.items()}  # fmt: skip
    seconds = (time.perf_counter() - t0) / max(1, len(per_seq))  # the import is one read
    summary = {}
    for seq, s in per_seq.items():
        path = layout.pseudo_label_path(root, seq)
        write_pseudo_labels(path, s.labels, sizes[seq])
        summary[seq] = _entry(s.labels, [], seconds, path)
    return summary


def format_summary(summary: dict[str, dict[str, Any]]) -> str:
    """The summary as a table (the CLI prints it), plus the first failed views."""
    header = (f"{'sequence':<24} {'frames':>7} {'views':>7} {'failed':>7} {'people/view':>12} "
              f"{'seconds':>8} {'images/s':>9}")  # fmt: skip
    lines = [header, "-" * len(header)]
    for seq, s in summary.items():
        lines.append(f"{seq:<24} {s['frames']:>7} {s['views']:>7} {s['failed_views']:>7} "
                     f"{s['people_per_view']:>12.2f} {s['seconds']:>8.1f} "
                     f"{s['images_per_second']:>9.1f}")  # fmt: skip
    failures = [f for s in summary.values() for f in s["failures"]]
    for f in failures[:5]:
        lines.append(f"  not labelled: {f['file']}: {f['reason']}")
    if len(failures) > 5:
        lines.append(f"  ... {len(failures) - 5} more images not labelled")
    return "\n".join(lines)
