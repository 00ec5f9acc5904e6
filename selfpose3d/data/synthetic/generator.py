"""Generate a synthetic dataset in the CMU Panoptic layout (DESIGN §3.3).

``generate(cfg, out)`` writes, for every sequence ``synth_{train,test}_NN``:
``calibration_<seq>.json``, ``hdPose3d_stage1_coco19/body3DScene_<frame>.json`` (GT, cm,
y down), ``hdImgs/<cam>/<cam>_<frame>.jpg`` and ``pseudo2d_<seq>.json`` (simulated detector),
then ``manifest.json`` (config, splits, cameras, capture space, counts, pseudo-label
statistics, speed). Everything is written into a sibling staging directory that is renamed
to ``out`` at the end, so ``out`` never holds a half-written dataset.

Determinism: every random draw comes from a generator seeded by (seed, sequence, stream
[, frame]), so the bytes written depend on the config only, not on ``workers``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.pseudo_labels import write_pseudo_labels
from selfpose3d.data.synthetic import manifest as mf
from selfpose3d.data.synthetic.config import DetectorConfig, PeopleConfig, RigConfig, SynthConfig
from selfpose3d.data.synthetic.detector import Stats
from selfpose3d.data.synthetic.rigs import Rig, build_rig
from selfpose3d.data.synthetic.scene import Scene, build_scene

CHUNK_FRAMES = 10  # frames per work unit (fixed: it must not change the output)
CACHE_DIR = ".cache"  # inside the staging directory: per-sequence backgrounds


@dataclass
class _Chunk:
    cfg: SynthConfig
    rig: Rig
    root: str  # staging directory
    index: int  # sequence index
    name: str
    start: int  # first frame
    points: np.ndarray  # (F, P, N, 3) mm
    in_gt: np.ndarray  # (F, P) bool
    bodies: list


def sequence_names(cfg: SynthConfig) -> list[tuple[str, str]]:
    """[(sequence name, split)] in index order: the train sequences, then the test ones."""
    return [(f"synth_train_{i:02d}", "train") for i in range(cfg.train_sequences)] + [
        (f"synth_test_{i:02d}", "test") for i in range(cfg.test_sequences)
    ]


def tiny_config(seed: int = 0) -> SynthConfig:
    """The smallest useful dataset: 2 views, 1 train + 1 test sequence of 4 frames, 160x90 px."""
    return SynthConfig(
        seed=seed, train_sequences=1, test_sequences=1, frames_per_sequence=4, workers=1,
        rig=RigConfig(kind="dome", cameras=["00_03", "00_12"], image_width=160,
                      image_height=90),
        people=PeopleConfig(min_people=2, max_people=3),
        detector=DetectorConfig(outside_people=1),
    )  # fmt: skip


def make_tiny_dataset(out: Path, seed: int = 0) -> dict[str, Any]:
    """Generate ``tiny_config(seed)`` into ``out`` (~0.1 s); returns the manifest."""
    return generate(tiny_config(seed), out, progress=False)


def generate(
    cfg: SynthConfig, out: Path, *, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Write the dataset of ``cfg`` to ``out``; returns its manifest.

    If ``out`` already holds a complete dataset of the same config (``workers`` aside), that
    manifest is returned and nothing is written. A different synthetic dataset is replaced
    only with ``overwrite=True``; a non-empty directory without a synthetic manifest is never
    replaced (ValueError).
    """
    out = Path(out)
    existing = mf.check_existing(out, cfg, overwrite)
    if existing is not None:
        return existing
    t0 = time.perf_counter()
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = _generate_into(cfg, staging, progress, t0)
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _replace(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


def _generate_into(cfg: SynthConfig, root: Path, progress: bool, t0: float) -> dict[str, Any]:
    from tqdm import tqdm

    rig = build_rig(cfg.rig)
    seqs = sequence_names(cfg)
    workers = cfg.workers or os.cpu_count() or 1
    n_chunks = len(seqs) * -(-cfg.frames_per_sequence // CHUNK_FRAMES)
    pool = _pool(min(workers, n_chunks)) if workers > 1 and n_chunks > 1 else None
    try:
        args = [(cfg, rig, i, name, split) for i, (name, split) in enumerate(seqs)]
        bg_args = [(cfg, rig, i, v, str(root)) for i in range(len(seqs))
                   for v in range(len(rig.cameras))]  # fmt: skip
        if pool:
            scenes = list(pool.map(build_scene, *zip(*args, strict=True)))
            list(pool.map(_save_background, *zip(*bg_args, strict=True)))
        else:
            scenes = [build_scene(*a) for a in args]
            for a in bg_args:
                _save_background(*a)
        chunks = [c for s in scenes for c in _chunks(cfg, rig, s, root)]
        labels: dict[str, dict[int, dict[str, np.ndarray]]] = {s.name: {} for s in scenes}
        stats, gt_bodies = Stats(), 0
        if pool:
            results = (f.result() for f in as_completed([pool.submit(_render_chunk, c)
                                                          for c in chunks]))  # fmt: skip
        else:
            results = map(_render_chunk, chunks)
        total = len(seqs) * cfg.frames_per_sequence
        with tqdm(total=total, unit="frame", disable=not progress, desc="synthetic") as bar:
            for name, frame_labels, chunk_stats, n_gt, n_frames in results:
                labels[name].update(frame_labels)
                stats.merge(chunk_stats)
                gt_bodies += n_gt
                bar.update(n_frames)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        _CACHE.clear()
    shutil.rmtree(root / CACHE_DIR, ignore_errors=True)
    size = {c.name: (c.width, c.height) for c in rig.cameras}
    for scene in scenes:
        layout.write_calibration(layout.calibration_path(root, scene.name), rig.cameras)
        write_pseudo_labels(layout.pseudo_label_path(root, scene.name), labels[scene.name], size)
    manifest = mf.build_manifest(cfg, rig, scenes, stats, gt_bodies, time.perf_counter() - t0)
    mf.write_manifest(root, manifest)
    return manifest


def _pool(n: int) -> ProcessPoolExecutor:
    # Never plain fork: the caller may already run OpenCV, OpenMP or Ray threads, and a
    # forked child can deadlock on a lock one of them held. A fork server is a clean process
    # that workers fork from. An executor (unlike multiprocessing.Pool) raises when a worker
    # dies instead of waiting for it forever.
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(n, mp_context=mp.get_context(method), initializer=_init_worker)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already


def _chunks(cfg: SynthConfig, rig: Rig, scene: Scene, root: Path) -> list[_Chunk]:
    for cam in rig.cameras:
        (root / scene.name / layout.IMAGE_DIR / cam.name).mkdir(parents=True, exist_ok=True)
    (root / scene.name / layout.POSE_DIR).mkdir(parents=True, exist_ok=True)
    return [
        _Chunk(cfg=cfg, rig=rig, root=str(root), index=scene.index, name=scene.name, start=s,
               points=scene.points[s : s + CHUNK_FRAMES], in_gt=scene.in_gt[s : s + CHUNK_FRAMES],
               bodies=scene.bodies)
        for s in range(0, cfg.frames_per_sequence, CHUNK_FRAMES)
    ]  # fmt: skip


_CACHE: dict[tuple[str, int], tuple[list[np.ndarray], dict[str, np.ndarray]]] = {}


def _background_path(root: str, index: int, view: int) -> Path:
    return Path(root) / CACHE_DIR / f"background_{index:03d}_{view:02d}.npy"


def sequence_background(cfg: SynthConfig, rig: Rig, index: int, view: int) -> np.ndarray:
    """(H, W, 3) uint8: the empty scene of sequence ``index`` seen by camera ``view``."""
    from selfpose3d.data.synthetic.backdrop import render_background, sequence_style
    from selfpose3d.data.synthetic.scene import scene_rng

    style = sequence_style(scene_rng(cfg.seed, index, 3))
    return render_background(rig.environment, rig.cameras[view],
                             scene_rng(cfg.seed, index, 4, view), style)  # fmt: skip


def _save_background(cfg: SynthConfig, rig: Rig, index: int, view: int, root: str) -> None:
    """Render one camera's background of a sequence once, for every worker to load."""
    path = _background_path(root, index, view)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, sequence_background(cfg, rig, index, view))


def _static(chunk: _Chunk):
    """Backgrounds and detector event episodes of the chunk's sequence (cached per process)."""
    from selfpose3d.data.synthetic.detector import sample_events
    from selfpose3d.data.synthetic.scene import scene_rng

    key = (chunk.root, chunk.index)
    if key not in _CACHE:
        if len(_CACHE) >= 2:
            _CACHE.pop(next(iter(_CACHE)))
        cfg, rig = chunk.cfg, chunk.rig
        bgs = [np.load(_background_path(chunk.root, chunk.index, v))
               for v in range(len(rig.cameras))]  # fmt: skip
        events = sample_events(scene_rng(cfg.seed, chunk.index, 2), cfg.frames_per_sequence,
                               len(rig.cameras), len(chunk.bodies), cfg.detector)  # fmt: skip
        _CACHE[key] = (bgs, events)
    return _CACHE[key]


def _render_chunk(chunk: _Chunk):
    """Images, GT files and pseudo labels of a chunk's frames."""
    import cv2

    from selfpose3d.data.synthetic.detector import detect
    from selfpose3d.data.synthetic.render import draw_people
    from selfpose3d.data.synthetic.scene import scene_rng
    from selfpose3d.data.synthetic.views import Views

    cfg, rig, root = chunk.cfg, chunk.rig, Path(chunk.root)
    bgs, events = _static(chunk)
    views = Views.of(rig.cameras)
    uv, z = views.project(chunk.points)  # (F, P, V, N, ...)
    uv, z = uv.swapaxes(1, 2), z.swapaxes(1, 2)  # (F, V, P, N, ...)
    stats, labels, n_gt = Stats(), {}, 0
    ids = np.arange(len(chunk.bodies))
    for f in range(len(chunk.points)):
        frame = chunk.start + f
        ev = {k: v[frame] for k, v in events.items()}
        rng = scene_rng(cfg.seed, chunk.index, 1, frame)
        gt = chunk.in_gt[f]
        dets = detect(uv[f], z[f], chunk.bodies, ~gt, views, ev, cfg.detector, rng, stats)
        labels[frame] = {cam.name: d for cam, d in zip(rig.cameras, dets, strict=True)}
        for v, cam in enumerate(rig.cameras):
            img = bgs[v].copy()
            draw_people(img, uv[f, v], z[f, v], chunk.bodies, float(views.focal[v]))
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
            assert ok, "JPEG encoding failed"
            layout.image_path(root, chunk.name, cam.name, frame).write_bytes(buf.tobytes())
        joints = layout.points_mm_to_cm(chunk.points[f, gt, :19])
        conf = np.ones(joints.shape[:2] + (1,))  # every joint of a synthetic body is known
        layout.write_bodies(layout.body_path(root, chunk.name, frame), ids[gt],
                            np.concatenate([joints, conf], -1))  # fmt: skip
        n_gt += int(gt.sum())
    return chunk.name, labels, stats, n_gt, len(chunk.points)
