"""Inference on recordings: 3D poses per frame with person track ids, written to a directory.

A :class:`Predictor` is a trained model (a checkpoint; its embedded config rebuilds it) or the
learning-free triangulation baseline (``mode="triangulation"``, capture space from a preset).
Frames come from a Panoptic-layout root (a user recording after ``selfpose3d import-recording``
and ``selfpose3d pseudo-label``, the real CMU Panoptic, or a synthetic root) or from an
ingested Parquet dataset (:func:`read_frames`). :func:`predict_sequence` predicts them in
batches and tracks each sequence's people (:mod:`selfpose3d.tracks`);
:func:`write_predictions` writes ``OUT/``:

- ``predictions.jsonl``: one JSON object per frame, in frame order: ``{"sequence", "frame",
  "people": [{"track_id", "score", "joints": 15 x [x, y, z]}]}``, world mm, z up,
  Panoptic-15 joint order (:mod:`selfpose3d.skeleton`); ``track_id`` -1 when tracking is
  off; a joint that could not be placed is ``null``;
- ``predictions.parquet``: one row per person per frame (:data:`PARQUET_SCHEMA`);
- ``summary.json``: mode, checkpoint, frames, people, tracks, seconds, frames_per_second,
  device.

The prediction files are streamed to temporary files and renamed into place at the end;
``summary.json`` is written last, so its presence marks a complete output.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from selfpose3d.baselines.triangulation import (
    TriangulationConfig,
    read_frames_without_images,
    triangulate_frame,
)
from selfpose3d.config import Config
from selfpose3d.data import panoptic_layout as layout
from selfpose3d.data.config import DataConfig
from selfpose3d.data.panoptic import FrameError, MultiViewFrame, PanopticReader, Split
from selfpose3d.data.schema import list_shards, read_dataset
from selfpose3d.io import atomic_write_json
from selfpose3d.skeleton import NUM_JOINTS, ROOT_INDEX
from selfpose3d.tracks import UNTRACKED, Tracker, TrackerConfig

if TYPE_CHECKING:
    import torch

Mode = Literal["model", "triangulation"]
SPLITS: tuple[Split, ...] = ("train", "test")
PREDICTIONS_JSONL = "predictions.jsonl"
PREDICTIONS_PARQUET = "predictions.parquet"
SUMMARY_JSON = "summary.json"
PARQUET_SCHEMA = pa.schema([
    pa.field("sequence", pa.string(), nullable=False),
    pa.field("frame", pa.int64(), nullable=False),
    pa.field("track_id", pa.int64(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
    pa.field("joints", pa.list_(pa.list_(pa.float32())), nullable=False),  # (15, 3) mm
])  # fmt: skip
_PARQUET_ROWS_PER_GROUP = 8192
PSEUDO_LABEL_HINT = "run `selfpose3d pseudo-label` on the recording first"


@dataclass(frozen=True)
class FrameResult:
    """The predicted people of one frame."""

    sequence: str
    frame: int
    poses: np.ndarray  # (P, 15, 3) world mm, z up
    scores: np.ndarray  # (P,)
    track_ids: np.ndarray  # (P,) int64; -1: not tracked

    def to_json(self) -> dict[str, Any]:
        """The frame's ``predictions.jsonl`` object (joints to 0.01 mm, scores to 7 digits)."""
        joints = np.round(np.asarray(self.poses, dtype=np.float64), 2).tolist()
        if not np.isfinite(self.poses).all():  # JSON has no NaN: an unplaced joint is null
            joints = [[[c if np.isfinite(c) else None for c in j] for j in p] for p in joints]
        people = [{"track_id": int(t), "score": float(f"{s:.7g}"), "joints": j}
                  for t, s, j in zip(self.track_ids, self.scores, joints, strict=True)]  # fmt: skip
        return {"sequence": self.sequence, "frame": int(self.frame), "people": people}


class Predictor:
    """3D poses of batches of multi-view frames, from a checkpoint or by triangulation.

    mode "model": ``checkpoint`` is a checkpoint file, a run directory or its ``final/``
    (:func:`selfpose3d.training.evaluate.resolve_checkpoint`); ``device`` auto / cpu / cuda.
    mode "triangulation": ``config`` (default: the defaults) gives the capture space and how
    frames are read; it runs on the CPU.
    """

    def __init__(self, checkpoint: str | Path | None = None, *, mode: Mode = "model",
                 config: Config | None = None, device: str = "auto") -> None:  # fmt: skip
        self.mode = mode
        self.checkpoint: Path | None = None
        if mode == "model":
            from selfpose3d.training.evaluate import load_trained_model, resolve_checkpoint
            from selfpose3d.training.run import pick_device

            if checkpoint is None:
                raise ValueError("mode 'model' needs a checkpoint")
            if config is not None:
                raise ValueError("a checkpoint carries its own config; pass config only with "
                                 "mode 'triangulation'")  # fmt: skip
            self.checkpoint = resolve_checkpoint(checkpoint)
            self.device: torch.device | str = pick_device(device)
            model, self.config = load_trained_model(self.checkpoint)
            self.model = model.to(self.device).eval()
            input_mode = self.config.model.input_mode
            self.needs_images = input_mode == "images"
            self.needs_pseudo_labels = input_mode == "pseudo_heatmaps"
            self.what = f"the model's input mode {input_mode!r}"
        elif mode == "triangulation":
            if checkpoint is not None:
                raise ValueError("mode 'triangulation' takes no checkpoint")
            if device not in ("auto", "cpu"):
                raise ValueError(f"the triangulation baseline runs on the CPU (NumPy); device "
                                 f"{device!r} applies to a checkpoint only")  # fmt: skip
            self.device = "cpu"
            self.config = config or Config()
            self.triangulation = TriangulationConfig.from_model_config(self.config.model)
            self.needs_images, self.needs_pseudo_labels = False, True
            self.what = "triangulation"
        else:
            raise ValueError(f"mode must be 'model' or 'triangulation', got {mode!r}")

    def summary(self) -> dict[str, Any]:
        """The ``summary.json`` fields the predictor decides: mode, checkpoint, device."""
        checkpoint = None if self.checkpoint is None else str(self.checkpoint)
        return {"mode": self.mode, "checkpoint": checkpoint, "device": str(self.device)}

    def check_frame(self, frame: MultiViewFrame) -> None:
        """Raise ValueError naming the frame when it lacks what this predictor reads."""
        where = f"{frame.sequence}/{frame.frame}"
        if self.needs_pseudo_labels and frame.pseudo_poses is None:
            raise ValueError(f"{where}: the frame has no pseudo 2D labels, which {self.what} "
                             f"needs; {PSEUDO_LABEL_HINT}")  # fmt: skip
        if self.needs_images and frame.images is None:
            raise ValueError(f"{where}: the frame has no images, which {self.what} needs "
                             f"(was the dataset ingested without images?)")  # fmt: skip

    def predict(self, frames: Sequence[MultiViewFrame]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per frame: poses (P, 15, 3) world mm and scores (P,), best first. The frames of
        one call must have the same number of views."""
        for frame in frames:
            self.check_frame(frame)
        if self.mode == "triangulation":
            return [triangulate_frame(frame, self.triangulation) for frame in frames]
        from selfpose3d.training.evaluate import predict_frames

        poses, _ = predict_frames(self.model, frames, batch_size=max(1, len(frames)),
                                  device=self.device)  # fmt: skip
        return [(p.poses, p.scores) for p in poses]


# -- frames ---------------------------------------------------------------------------------


def is_panoptic_root(path: Path) -> bool:
    """A directory with a manifest.json or a ``<seq>/calibration_<seq>.json``."""
    return path.is_dir() and ((path / "manifest.json").is_file()
                              or any(path.glob("*/calibration_*.json")))  # fmt: skip


def read_frames(
    data: str | Path,
    *,
    split: Split | None = None,
    sequences: Sequence[str] | None = None,
    data_cfg: DataConfig | None = None,
    images: bool = True,
    require_pseudo_labels: bool = False,
) -> tuple[Iterator[MultiViewFrame], int]:
    """The frames to predict, in (sequence, frame) order, and how many there are.

    data: a Panoptic-layout root (its ``manifest.json`` lists the sequences by split; every
    annotated frame, or every image frame of a recording without 3D annotation, is read, at
    the image size of ``data_cfg``) or an ingested Parquet dataset (``train/``, ``test/``), a
    directory of shards or one shard. split: one split (default: all); sequences: these only.
    images: read the images (only models of input mode ``images`` use them).
    require_pseudo_labels: a Panoptic sequence without a pseudo-label file is an error.
    Everything that concerns a whole sequence is checked before the first frame is returned.
    """
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset (expected a Panoptic-layout root or "
                                f"an ingested Parquet dataset)")  # fmt: skip
    splits = SPLITS if split is None else (split,)
    if is_panoptic_root(path):
        return _panoptic_frames(path, splits, sequences, data_cfg or DataConfig(), images,
                                require_pseudo_labels)  # fmt: skip
    return _parquet_frames(path, splits, split is not None, sequences, images)


def _panoptic_frames(root: Path, splits: Sequence[Split], sequences: Sequence[str] | None,
                     cfg: DataConfig, images: bool, require_labels: bool
                     ) -> tuple[Iterator[MultiViewFrame], int]:  # fmt: skip
    # Every frame of the recording's own sequences; labels next to each sequence (a label
    # directory in a checkpoint's config is the training machine's).
    cfg = dataclasses.replace(cfg, train_sequences=[], test_sequences=[], frame_interval=1,
                              test_frame_interval=1, pseudo_label_dir="")  # fmt: skip
    reader = PanopticReader(root, cfg, images=images)
    if not sequences:
        if not (root / "manifest.json").is_file():
            raise FileNotFoundError(f"{root}: no manifest.json listing the sequences; name "
                                    f"them with --sequence")  # fmt: skip
        sequences = [s for sp in splits for s in reader.sequences(sp)]
        if not sequences:
            raise ValueError(f"{root / 'manifest.json'}: no sequences in split(s) "
                             f"{', '.join(splits)}")  # fmt: skip
    plan: list[tuple[str, list[int]]] = []
    for sequence in dict.fromkeys(sequences):
        seq = reader.open_sequence(sequence)
        if require_labels and seq.labels is None:
            raise FileNotFoundError(f"{layout.pseudo_label_path(root, sequence)}: no pseudo 2D "
                                    f"labels for sequence {sequence!r}; "
                                    f"{PSEUDO_LABEL_HINT}")  # fmt: skip
        plan.append((sequence, reader.frames(sequence, "train")))
    total = sum(len(frames) for _, frames in plan)
    if not total:
        raise ValueError(f"{root}: no frames in sequence(s) {', '.join(s for s, _ in plan)}")

    def frames() -> Iterator[MultiViewFrame]:
        for sequence, indices in plan:
            for index in indices:
                try:
                    yield reader.read_frame(sequence, index)
                except FrameError as e:
                    hint = f"; {PSEUDO_LABEL_HINT}" if e.kind == "missing_pseudo_labels" else ""
                    raise ValueError(f"{sequence}/{index}: {e}{hint}") from None

    return frames(), total


def _parquet_frames(path: Path, splits: Sequence[Split], split_given: bool,
                    sequences: Sequence[str] | None, images: bool
                    ) -> tuple[Iterator[MultiViewFrame], int]:  # fmt: skip
    neither = ValueError(f"{path}: neither a Panoptic-layout root (manifest.json, "
                         f"<sequence>/calibration_<sequence>.json) nor an ingested Parquet "
                         f"dataset (train/, test/ with .parquet shards)")  # fmt: skip
    sources: list[Path] = [path]
    if path.is_dir() and any((path / s).is_dir() for s in SPLITS):
        sources = [path / s for s in splits if (path / s).is_dir()]
        if not sources:
            raise FileNotFoundError(
                f"{path}: no {splits[0]!r} split here (expected the "
                f"Parquet shards that `selfpose3d ingest` writes)"
            )
    elif split_given:
        raise ValueError(f"{path}: not split into train/ and test/; leave out --split")
    if path.is_file() and path.suffix != ".parquet":
        raise neither
    if not any(list_shards(s) for s in sources):
        raise neither
    read = read_dataset if images else read_frames_without_images
    frames = [frame for source in sources for frame in read(source)]
    if sequences:
        present = dict.fromkeys(f.sequence for f in frames)
        unknown = [s for s in sequences if s not in present]
        if unknown:
            raise ValueError(f"{path}: no sequence {unknown[0]!r} here (sequences: "
                             f"{', '.join(present) or 'none'})")  # fmt: skip
        frames = [f for f in frames if f.sequence in set(sequences)]
    if not frames:
        raise ValueError(f"{path}: the dataset holds no frames")
    # Tracking needs each sequence's frames together and in order; shards need not be.
    first = {s: i for i, s in enumerate(dict.fromkeys(f.sequence for f in frames))}
    frames.sort(key=lambda f: (first[f.sequence], f.frame))
    return iter(frames), len(frames)


# -- prediction -----------------------------------------------------------------------------


def _batches(frames: Iterable[MultiViewFrame], size: int) -> Iterator[list[MultiViewFrame]]:
    """Consecutive frames of one sequence, at most ``size`` at a time."""
    batch: list[MultiViewFrame] = []
    for frame in frames:
        if batch and (len(batch) == size or frame.sequence != batch[0].sequence):
            yield batch
            batch = []
        batch.append(frame)
    if batch:
        yield batch


def predict_sequence(
    frames: Iterable[MultiViewFrame],
    predictor: Predictor,
    *,
    tracker_cfg: TrackerConfig | None = None,
    batch_size: int = 4,
) -> Iterator[FrameResult]:
    """Predict ``frames`` (grouped by sequence, each sequence in frame order) in batches.

    With ``tracker_cfg`` every sequence is tracked on its own (track ids are unique over the
    whole output, never reused); without it every track id is -1. Lazily yields one
    :class:`FrameResult` per frame, in input order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tracker: Tracker | None = None
    sequence: str | None = None
    for batch in _batches(frames, batch_size):
        for frame, (poses, scores) in zip(batch, predictor.predict(batch), strict=True):
            poses = np.asarray(poses).reshape(-1, NUM_JOINTS, 3)
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
            if tracker_cfg is not None and frame.sequence != sequence:
                tracker = Tracker(tracker_cfg, first_id=tracker.next_id if tracker else 0)
            sequence = frame.sequence
            if tracker is None:
                ids = np.full(len(poses), UNTRACKED, dtype=np.int64)
            else:
                try:
                    ids = tracker.update(poses[:, ROOT_INDEX], scores, frame.frame)
                except ValueError as e:
                    raise ValueError(f"{frame.sequence}/{frame.frame}: {e}") from None
            yield FrameResult(sequence=frame.sequence, frame=frame.frame, poses=poses,
                              scores=scores, track_ids=ids)  # fmt: skip


# -- output ---------------------------------------------------------------------------------


def check_output(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse an output path that is a file, or a non-empty directory unless ``overwrite``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists and is not empty; pass --overwrite "
                              f"to replace its predictions, or choose another --out")  # fmt: skip


def _temp_file(directory: Path, name: str) -> Path:
    """An empty hidden file next to ``name``, with the mode a plain open() would give it."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600 files
    return Path(tmp)


def _parquet_table(rows: dict[str, list]) -> pa.Table:
    arrays = [pa.array(rows[f.name], type=f.type) for f in PARQUET_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=PARQUET_SCHEMA)


def write_predictions(
    out_dir: str | Path,
    results: Iterable[FrameResult],
    summary: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Stream ``results`` into ``out_dir``'s three files (formats: module docstring).

    summary: ``mode``, ``checkpoint`` and ``device`` (:meth:`Predictor.summary`); frames,
    people, tracks and the wall time of consuming ``results`` (which, when lazy, includes
    reading and predicting) are counted here. Returns the summary written. On any error the
    temporary files are removed and what ``out_dir`` held before is left as it was.
    """
    out_dir = Path(out_dir)
    check_output(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    temps = {name: _temp_file(out_dir, name) for name in (PREDICTIONS_JSONL, PREDICTIONS_PARQUET)}
    t0 = time.perf_counter()
    frames = people = 0
    tracks: set[int] = set()
    empty: dict[str, list] = {name: [] for name in PARQUET_SCHEMA.names}
    try:
        rows = {k: list(v) for k, v in empty.items()}
        with (open(temps[PREDICTIONS_JSONL], "w", encoding="utf-8") as jsonl,
              pq.ParquetWriter(temps[PREDICTIONS_PARQUET], PARQUET_SCHEMA) as parquet):  # fmt: skip
            for result in results:
                jsonl.write(json.dumps(result.to_json(), allow_nan=False) + "\n")
                n = len(result.scores)
                rows["sequence"] += [result.sequence] * n
                rows["frame"] += [int(result.frame)] * n
                rows["track_id"] += result.track_ids.tolist()
                rows["score"] += result.scores.tolist()
                rows["joints"] += np.asarray(result.poses, np.float32).tolist()
                frames, people = frames + 1, people + n
                tracks.update(t for t in result.track_ids.tolist() if t != UNTRACKED)
                if len(rows["frame"]) >= _PARQUET_ROWS_PER_GROUP:
                    parquet.write_table(_parquet_table(rows))
                    rows = {k: list(v) for k, v in empty.items()}
            if rows["frame"] or not people:  # an output without people still gets its schema
                parquet.write_table(_parquet_table(rows))
        seconds = time.perf_counter() - t0
        # summary.json marks a complete output: gone first, written last.
        (out_dir / SUMMARY_JSON).unlink(missing_ok=True)
        for name, tmp in temps.items():
            os.replace(tmp, out_dir / name)
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise
    full = {
        "mode": summary["mode"], "checkpoint": summary.get("checkpoint"), "frames": frames,
        "people": people, "tracks": len(tracks), "seconds": seconds,
        "frames_per_second": frames / seconds if seconds > 0 else 0.0,
        "device": summary["device"],
    }  # fmt: skip
    atomic_write_json(out_dir / SUMMARY_JSON, full)
    return full


def run_predict(
    data: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    config: Config | None = None,
    split: Split | None = None,
    sequences: Sequence[str] | None = None,
    batch_size: int = 4,
    device: str = "auto",
    tracker_cfg: TrackerConfig | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """``selfpose3d predict``: predict (with ``checkpoint``, else by triangulation with
    ``config``'s capture space) and track every frame of ``data`` (see :func:`read_frames`),
    write ``out`` (see :func:`write_predictions`) and return the summary."""
    check_output(out, overwrite)  # before anything slow
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mode: Mode = "model" if checkpoint is not None else "triangulation"
    predictor = Predictor(checkpoint, mode=mode, config=config, device=device)
    frames, total = read_frames(data, split=split, sequences=sequences,
                                data_cfg=predictor.config.data, images=predictor.needs_images,
                                require_pseudo_labels=predictor.needs_pseudo_labels)  # fmt: skip
    results: Iterable[FrameResult] = predict_sequence(frames, predictor, tracker_cfg=tracker_cfg,
                                                      batch_size=batch_size)  # fmt: skip
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=total, desc="predict", unit="frame")
    return write_predictions(out, results, predictor.summary(), overwrite=overwrite)
