"""Evaluate a trained model: load it from a checkpoint, predict frames, score them.

``evaluate`` loads a checkpoint (its embedded config rebuilds the model), predicts every frame
of a split of an ingested dataset (``<data_dir>/<split>/*.parquet``) with the un-augmented
views, and scores it with the Panoptic protocol (:mod:`selfpose3d.evaluation`). Training
uses the same functions for its per-epoch scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from selfpose3d.config import Config, config_from_dict
from selfpose3d.data.batches import Batch, BatchSpec, iterate_batches
from selfpose3d.data.panoptic import MultiViewFrame
from selfpose3d.data.schema import read_dataset
from selfpose3d.evaluation import (
    FrameGT,
    FramePrediction,
    FrameRootPrediction,
    evaluate_panoptic,
    evaluate_roots,
)
from selfpose3d.models.model import ModelOutput, SelfPose3dModel, build_model
from selfpose3d.training.checkpoint import (
    LATEST,
    CheckpointManager,
    load_checkpoint,
    load_model_weights,
    model_signature,
)

METRIC_KEYS = ("ap25", "ap50", "ap75", "ap100", "ap125", "ap150", "recall500", "mpjpe",
               "num_gt", "num_pred")  # fmt: skip


def load_frames(data_dir: str | Path, split: str) -> list[MultiViewFrame]:
    """Every frame of ``<data_dir>/<split>`` (Parquet shards), in stored order."""
    path = Path(data_dir) / split
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no {split!r} split here (expected the Parquet "
                                f"shards that `selfpose3d ingest` writes)")  # fmt: skip
    frames = list(read_dataset(path))
    if not frames:
        raise ValueError(f"{path}: the {split!r} split holds no frames")
    return frames


def spread_frames(frames: Sequence[MultiViewFrame], count: int) -> list[MultiViewFrame]:
    """At most ``count`` frames evenly spaced over ``frames``, in order (all of them when
    there are fewer). Frames of a split come sequence after sequence and adjacent frames are
    near-duplicates: the first ``count`` would score one stretch of the first sequence."""
    if count <= 0:
        return []
    if count >= len(frames):
        return list(frames)
    # A spacing of at least one frame: the rounded indices are distinct.
    return [frames[i] for i in np.linspace(0, len(frames) - 1, count).round().astype(int)]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, a directory with ``model.pt`` (e.g. ``final/``), a checkpoints
    directory (its latest) or a run directory (its ``final/model.pt``)."""
    path = Path(path)
    if path.is_file():
        return path
    for candidate in (path / "model.pt", path / "final" / "model.pt"):
        if candidate.is_file():
            return candidate
    if (path / LATEST).is_file():
        latest = CheckpointManager(path).latest_path()
        if latest is not None:
            return latest
    raise FileNotFoundError(
        f"{path}: no checkpoint here (expected a .pt file, model.pt, "
        f"final/model.pt or a checkpoints directory with {LATEST})"
    )


def load_trained_model(checkpoint: str | Path) -> tuple[SelfPose3dModel, Config]:
    """Rebuild the model from a checkpoint's embedded config and load its weights."""
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"], str(path))
    model = build_model(cfg.model)
    preset = state.get("signature", {}).get("preset", "")
    load_model_weights(model, state, model_signature(model, cfg.model, preset), path)
    return model, cfg


def predict_batch(model: SelfPose3dModel, batch: Batch) -> ModelOutput:
    """Inference on the un-augmented views of a batch (eval mode, no gradients)."""
    a3 = batch.view("a3")
    return model.predict(batch.cameras, a3.affines, images=a3.images,
                         pseudo_joints=batch.pseudo.joints,
                         pseudo_weights=batch.pseudo.weights("soft", 1.0))  # fmt: skip


def predict_frames(
    model: SelfPose3dModel,
    frames: Sequence[MultiViewFrame],
    batch_size: int = 4,
    progress: bool = False,
    device: torch.device | str = "cpu",
) -> tuple[list[FramePrediction], list[FrameRootPrediction]]:
    """Per frame: the predicted poses ((P, J, 3) world mm, with scores) and their roots
    ((P, 3) world mm); the model must be on ``device``."""
    spec = BatchSpec.from_configs(model.cfg, versions=("a3",),
                                  images=model.cfg.input_mode == "images")  # fmt: skip
    poses: list[FramePrediction] = []
    roots: list[FrameRootPrediction] = []
    batches = iterate_batches(frames, batch_size, np.random.default_rng(0), spec, shuffle=False)
    total = math.ceil(len(frames) / batch_size)
    for batch in tqdm(batches, total=total, desc="evaluate", disable=not progress, leave=False):
        out = predict_batch(model, batch.to(device)).to("cpu")
        for i in range(batch.size):
            person = out.is_person[i]
            scores = out.scores[i][person].to(torch.float64).numpy()
            poses.append(FramePrediction(out.poses[i][person].numpy(), scores))
            roots.append(FrameRootPrediction(out.proposals[i, person, :3].numpy(), scores))
    return poses, roots


def evaluate_model(
    model: SelfPose3dModel,
    frames: Sequence[MultiViewFrame],
    batch_size: int = 4,
    progress: bool = False,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """AP/recall/MPJPE of poses and roots over ``frames`` (which must carry 3D GT); the
    model must be on ``device``."""
    missing = [f"{f.sequence}/{f.frame}" for f in frames if f.gt_poses is None]
    if missing:
        raise ValueError(f"evaluation needs 3D ground truth; {len(missing)} frames have none "
                         f"(e.g. {missing[0]})")  # fmt: skip
    poses, roots = predict_frames(model, frames, batch_size, progress, device)
    gts = [FrameGT.from_xyzv(f.gt_poses) for f in frames]
    pose_metrics = evaluate_panoptic(poses, gts)
    root_metrics = evaluate_roots(roots, gts)
    out_metrics = {k: pose_metrics[k] for k in METRIC_KEYS}
    out_metrics.update({f"root_{k}": root_metrics[f"root_{k}"] for k in METRIC_KEYS})
    return out_metrics


def write_figures(
    model: SelfPose3dModel,
    frames: Sequence[MultiViewFrame],
    out_dir: str | Path,
    max_frames: int = 4,
    device: torch.device | str = "cpu",
) -> list[Path]:
    """Predicted-vs-GT 3D plots and 2D overlays (first view) of the first ``max_frames``
    frames, written to ``out_dir``; returns the paths."""
    from selfpose3d.visualize import write_eval_figures

    frames = list(frames)[:max_frames]
    poses, _ = predict_frames(model, frames, device=device)
    return write_eval_figures(frames, [p.poses for p in poses], out_dir, max_frames=max_frames)


def evaluate(
    checkpoint_dir: str | Path,
    data_dir: str | Path,
    split: str = "test",
    *,
    batch_size: int = 4,
    progress: bool = False,
) -> dict[str, float]:
    """Load a trained model and score it on ``<data_dir>/<split>``: keys ap25 ... ap150,
    recall500, mpjpe (mm), num_gt, num_pred, and the same prefixed with ``root_``."""
    model, _ = load_trained_model(checkpoint_dir)
    return evaluate_model(model, load_frames(data_dir, split), batch_size, progress)
