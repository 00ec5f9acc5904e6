"""Train the stages in order on an ingested Parquet dataset, and evaluate a trained model.

``train`` reads the train split of ``data_dir`` (``<data_dir>/train/*.parquet`` as written by
``pipelines/ingest.py``) into memory, builds the model, and runs the requested stages in
order. Run directory layout:

- ``config.yaml``: the resolved config;
- ``checkpoints/``: training checkpoints and ``latest.json`` (a rerun resumes from it:
  completed stages are skipped, an interrupted stage continues at its last checkpoint);
- ``final/model.pt`` + ``final/config.yaml``: the trained weights with signature and config.

``evaluate`` loads a checkpoint (its embedded config rebuilds the model), predicts every frame
of a split with the un-augmented views, and scores it with the Panoptic protocol.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from selfpose3d.config import Config, config_from_dict, config_to_dict, save_config
from selfpose3d.data.batches import Batch, BatchSpec, ImageCache, iterate_batches
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
    save_checkpoint,
)
from selfpose3d.training.config import STAGES as STAGE_NAMES
from selfpose3d.training.loop import train_stage
from selfpose3d.training.schedule import configure_torch, seed_everything
from selfpose3d.training.steps import batch_spec

SELF_SUPERVISED_STAGES = ("backbone", "root", "pose", "finetune")
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


def default_stages(cfg: Config) -> list[str]:
    """The self-supervised schedule; without heatmap_net_2d there is no backbone stage."""
    stages = list(SELF_SUPERVISED_STAGES)
    if cfg.model.input_mode == "pseudo_heatmaps":
        stages.remove("backbone")
    return stages


def save_final(model: SelfPose3dModel, cfg: Config, signature: dict, directory: Path) -> Path:
    path = directory / "model.pt"
    save_checkpoint(path, {"signature": signature, "config": config_to_dict(cfg),
                           "model": model.state_dict()})  # fmt: skip
    save_config(cfg, directory / "config.yaml")
    return path


def train(
    cfg: Config,
    data_dir: str | Path,
    out_dir: str | Path,
    stages: Sequence[str] | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
    *,
    preset: str | None = None,
    resume: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``stages`` (default: the self-supervised schedule) in order; returns a summary.

    report: called after every step with the stage's metrics (floats) plus ``"stage"`` (its
    name). preset: the name stored in (and required of) checkpoints; default
    ``cfg.train.preset``. With ``resume`` a run directory holding checkpoints continues
    from the latest one (refused if it belongs to another preset or model shape).
    """
    t0 = time.perf_counter()
    stages = list(stages) if stages is not None else default_stages(cfg)
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        raise ValueError(f"unknown training stages {unknown} (stages: {list(STAGE_NAMES)})")
    preset = cfg.train.preset if preset is None else preset
    configure_torch(cfg.train)
    seed_everything(cfg.train.seed)
    frames = load_frames(data_dir, "train")
    gt_frames = [f for f in frames if f.gt_poses is not None]
    if "supervised" in stages and not gt_frames:
        raise ValueError(f"{data_dir}: the supervised stage needs 3D ground truth; the train "
                         f"split has none")  # fmt: skip
    model = build_model(cfg.model)
    signature = model_signature(model, cfg.model, preset)
    out_dir = Path(out_dir)
    save_config(cfg, out_dir / "config.yaml")
    manager = CheckpointManager(out_dir / "checkpoints", cfg.train.keep_checkpoints)

    completed: list[str] = []
    resume_state: dict[str, Any] | None = None
    latest = manager.latest() if resume else None
    if latest is not None:
        load_model_weights(model, latest, signature, manager.latest_path())
        completed = list(latest.get("completed_stages", []))
        if latest["stage_done"]:
            completed.append(latest["stage"])
        else:
            resume_state = latest

    cache = ImageCache(cfg.train.image_cache_mb << 20)
    metrics: dict[str, dict[str, float]] = {}
    for stage in stages:
        if stage in completed:
            continue
        stage_cfg = cfg.train.stage(stage)
        spec = batch_spec(stage, cfg.model, cfg.train)
        data = gt_frames if stage == "supervised" else frames
        n_batches = math.ceil(len(data) / stage_cfg.batch_size)
        if cfg.train.max_steps_per_epoch:
            n_batches = min(n_batches, cfg.train.max_steps_per_epoch)
        stage_id = STAGE_NAMES.index(stage)

        def batches(epoch: int, skip: int, data=data, spec=spec, bs=stage_cfg.batch_size,
                    stage_id=stage_id):  # fmt: skip
            rng = np.random.default_rng([cfg.train.seed, stage_id, epoch])
            return iterate_batches(
                data, bs, rng, spec, skip=skip, limit=cfg.train.max_steps_per_epoch, cache=cache
            )

        def stage_report(m: dict[str, float], stage: str = stage) -> None:
            if report is not None:
                report({"stage": stage, **m})

        resuming = resume_state if resume_state and resume_state["stage"] == stage else None
        extra = {"signature": signature, "config": config_to_dict(cfg),
                 "completed_stages": list(completed)}  # fmt: skip
        metrics[stage] = train_stage(
            model, stage, cfg.train, batches, report=stage_report, checkpoints=manager,
            checkpoint_extra=extra, resume=resuming, steps_per_epoch=n_batches,
            progress=progress,
        )  # fmt: skip
        completed.append(stage)
    final = save_final(model, cfg, signature, out_dir / "final")
    return {"stages": completed, "metrics": metrics, "final": str(final),
            "wall_seconds": time.perf_counter() - t0}  # fmt: skip


# -- evaluation -----------------------------------------------------------------------------


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


def evaluate_model(
    model: SelfPose3dModel,
    frames: Sequence[MultiViewFrame],
    batch_size: int = 4,
    progress: bool = False,
) -> dict[str, float]:
    """AP/recall/MPJPE of poses and roots over ``frames`` (which must carry 3D GT)."""
    missing = [f"{f.sequence}/{f.frame}" for f in frames if f.gt_poses is None]
    if missing:
        raise ValueError(f"evaluation needs 3D ground truth; {len(missing)} frames have none "
                         f"(e.g. {missing[0]})")  # fmt: skip
    spec = BatchSpec.from_configs(model.cfg, versions=("a3",),
                                  images=model.cfg.input_mode == "images")  # fmt: skip
    poses: list[FramePrediction] = []
    roots: list[FrameRootPrediction] = []
    batches = iterate_batches(frames, batch_size, np.random.default_rng(0), spec, shuffle=False)
    total = math.ceil(len(frames) / batch_size)
    for batch in tqdm(batches, total=total, desc="evaluate", disable=not progress, leave=False):
        out = predict_batch(model, batch)
        for i in range(batch.size):
            person = out.is_person[i]
            scores = out.scores[i][person].to(torch.float64).numpy()
            poses.append(FramePrediction(out.poses[i][person].numpy(), scores))
            roots.append(FrameRootPrediction(out.proposals[i, person, :3].numpy(), scores))
    gts = [FrameGT.from_xyzv(f.gt_poses) for f in frames]
    pose_metrics = evaluate_panoptic(poses, gts)
    root_metrics = evaluate_roots(roots, gts)
    out_metrics = {k: pose_metrics[k] for k in METRIC_KEYS}
    out_metrics.update({f"root_{k}": root_metrics[f"root_{k}"] for k in METRIC_KEYS})
    return out_metrics


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
