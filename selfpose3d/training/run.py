"""Train the stages in order on an ingested Parquet dataset.

``train`` reads the train split of ``data_dir`` (``<data_dir>/train/*.parquet`` as written by
``pipelines/ingest.py``) into memory, builds the model, and runs the requested stages in
order. Run directory layout:

- ``config.yaml``: the resolved config;
- ``checkpoints/``: training checkpoints and ``latest.json`` (a rerun resumes from it:
  completed stages are skipped, an interrupted stage continues at its last checkpoint);
- ``final/model.pt`` + ``final/config.yaml``: the trained weights with signature and config.

Evaluating a trained model is :mod:`selfpose3d.training.evaluate`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from selfpose3d.config import Config, config_to_dict, save_config
from selfpose3d.data.batches import ImageCache, iterate_batches
from selfpose3d.data.panoptic import MultiViewFrame
from selfpose3d.models.model import SelfPose3dModel, build_model
from selfpose3d.training.checkpoint import (
    CheckpointManager,
    load_checkpoint,
    load_model_weights,
    load_module_weights,
    model_signature,
    save_checkpoint,
)
from selfpose3d.training.config import STAGES as STAGE_NAMES
from selfpose3d.training.evaluate import (
    evaluate_model,
    load_frames,
    resolve_checkpoint,
    spread_frames,
    write_figures,
)
from selfpose3d.training.loop import CheckpointSink, train_stage
from selfpose3d.training.schedule import configure_torch, seed_everything
from selfpose3d.training.steps import batch_spec

SELF_SUPERVISED_STAGES = ("backbone", "root", "pose", "finetune")
# What ``init`` starts a run with: the networks the shared stages (backbone, root) train.
INIT_MODULES = ("heatmap_net_2d", "root_net")
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


class Tracking(Protocol):
    """What training tells an experiment tracker (``selfpose3d.tracking.Tracker``)."""

    def start_stage(self, stage: str) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def flush(self) -> None: ...
    def end_stage(self) -> None: ...


@dataclass
class RunContext:
    """How this process takes part in a run: alone (the default), or as one worker of a
    distributed run that supplies its device, gradient synchronisation and checkpoints.

    rank / world_size: this worker among all; only rank 0 writes files. wrap: applied to each
    stage's step module (DistributedDataParallel). checkpoints: where checkpoints go (default:
    ``<out>/checkpoints``); latest: the checkpoint to resume from (default: the latest one
    there, when resuming). frames_per_worker: (frames, frames with 3D GT) of the smallest
    shard of all workers, so that every worker takes the same number of steps (a collective
    per step must not wait forever).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    wrap: Callable[[nn.Module], nn.Module] | None = None
    checkpoints: CheckpointSink | None = None
    latest: dict[str, Any] | None = None
    frames_per_worker: tuple[int, int] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here")
    return torch.device(name)


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
    tracker: Tracking | None = None,
    eval_split: str | None = None,
) -> dict[str, Any]:
    """Run ``stages`` (default: the self-supervised schedule) on ``<data_dir>/train`` in
    order, in this process; returns a summary (see :func:`train_frames`).

    eval_split: a split of ``data_dir`` evaluated after every epoch (at most
    ``train.eval_max_frames`` frames spread over it), its metrics reported with the prefix
    ``eval_``.
    """
    frames = load_frames(data_dir, "train")
    eval_frames = load_frames(data_dir, eval_split) if eval_split else None
    context = RunContext(device=pick_device(cfg.train.device))
    return train_frames(cfg, frames, out_dir, stages, report, preset=preset, resume=resume,
                        progress=progress, tracker=tracker, eval_frames=eval_frames,
                        context=context)  # fmt: skip


def train_frames(
    cfg: Config,
    frames: Sequence[MultiViewFrame],
    out_dir: str | Path,
    stages: Sequence[str] | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
    *,
    preset: str | None = None,
    resume: bool = True,
    progress: bool = True,
    tracker: Tracking | None = None,
    eval_frames: Sequence[MultiViewFrame] | None = None,
    context: RunContext | None = None,
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Run ``stages`` in order on ``frames`` (this worker's training frames, in any order:
    they are sorted by sequence and frame first).

    report: called every ``train.log_every`` steps with the stage's metrics (floats) plus
    ``"stage"`` (its name). preset: the name stored in (and required of) checkpoints;
    default ``cfg.train.preset``. With ``resume`` a run directory holding checkpoints
    continues from the latest one (refused if it belongs to another preset or model shape).
    tracker: gets the step metrics, the per-epoch evaluation (also on the parent run, at
    ``epochs_trained``: epochs of this run's stages done so far), and a ``flush`` with every
    checkpoint (so that what it has logged is always covered by a checkpoint). init: a
    checkpoint or run (see :func:`resolve_checkpoint`) whose ``INIT_MODULES`` weights a run
    without checkpoints starts from, e.g. the shared backbone and root_net of a sweep.

    Returns ``{"stages", "metrics" (last step's, per stage), "final" (path of the final
    weights), "stage_seconds", "wall_seconds", "resumed_from" (None, or the stage, epoch and
    step of the checkpoint this run continued)}``.
    """
    t0 = time.perf_counter()
    ctx = context or RunContext()
    stages = list(stages) if stages is not None else default_stages(cfg)
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        raise ValueError(f"unknown training stages {unknown} (stages: {list(STAGE_NAMES)})")
    preset = cfg.train.preset if preset is None else preset
    configure_torch(cfg.train)
    seed_everything(cfg.train.seed)
    # Ray Data hands a worker its shard in whatever order its blocks finish; sorting makes
    # the seeded batch draws pick the same frames every time, so that a run (and a sweep
    # trial) trains the same way whichever order the frames arrived in.
    frames = sorted(frames, key=lambda f: (f.sequence, f.frame))
    gt_frames = [f for f in frames if f.gt_poses is not None]
    if "supervised" in stages and not gt_frames:
        raise ValueError("the supervised stage needs 3D ground truth; the train split has none")
    model = build_model(cfg.model)
    signature = model_signature(model, cfg.model, preset)
    out_dir = Path(out_dir)
    if ctx.is_main:
        save_config(cfg, out_dir / "config.yaml")
    manager = CheckpointManager(out_dir / "checkpoints", cfg.train.keep_checkpoints)
    sink = ctx.checkpoints or manager

    completed: list[str] = []
    resume_state: dict[str, Any] | None = None
    latest = ctx.latest if ctx.checkpoints is not None else manager.latest()
    latest = latest if resume else None
    if latest is not None:
        load_model_weights(model, latest, signature, "the latest checkpoint")
        if ctx.is_main:  # in a job's log, each restart says where it picked up
            print(f"resuming from the checkpoint at stage {latest['stage']}, epoch "
                  f"{latest['epoch']}, step {latest['step']}", flush=True)  # fmt: skip
        completed = list(latest.get("completed_stages", []))
        if latest["stage_done"]:
            completed.append(latest["stage"])
        else:
            resume_state = latest
    elif init is not None:
        source = resolve_checkpoint(init)
        load_module_weights(model, load_checkpoint(source), INIT_MODULES, source)
    model.to(ctx.device)

    cache = ImageCache(cfg.train.image_cache_mb << 20)
    metrics: dict[str, dict[str, float]] = {}
    stage_seconds: dict[str, float] = {}
    eval_frames = spread_frames(list(eval_frames or []), cfg.train.eval_max_frames)
    for stage in stages:
        if stage in completed:
            continue
        stage_cfg = cfg.train.stage(stage)
        spec = batch_spec(stage, cfg.model, cfg.train)
        data = gt_frames if stage == "supervised" else frames
        per_worker = len(data)
        if ctx.frames_per_worker is not None:
            per_worker = ctx.frames_per_worker[stage == "supervised"]
        n_batches = math.ceil(per_worker / stage_cfg.batch_size)
        if cfg.train.max_steps_per_epoch:
            n_batches = min(n_batches, cfg.train.max_steps_per_epoch)
        stage_id = STAGE_NAMES.index(stage)
        salt = (ctx.rank,) if ctx.world_size > 1 else ()

        def batches(epoch: int, skip: int, data=data, spec=spec, bs=stage_cfg.batch_size,
                    stage_id=stage_id, n=n_batches, salt=salt):  # fmt: skip
            rng = np.random.default_rng([cfg.train.seed, stage_id, epoch, *salt])
            return iterate_batches(data, bs, rng, spec, skip=skip, limit=n, cache=cache)

        epochs_before = sum(cfg.train.stage(s).epochs for s in stages[: stages.index(stage)])
        stage_report, stage_sink, epoch_end = _stage_hooks(
            stage, report, tracker, sink, model, eval_frames, ctx, n_batches, epochs_before
        )
        stage_t0 = time.perf_counter()
        if tracker is not None:
            tracker.start_stage(stage)
        resuming = resume_state if resume_state and resume_state["stage"] == stage else None
        extra = {"signature": signature, "config": config_to_dict(cfg),
                 "completed_stages": list(completed)}  # fmt: skip
        metrics[stage] = train_stage(
            model, stage, cfg.train, batches, report=stage_report, checkpoints=stage_sink,
            checkpoint_extra=extra, resume=resuming, steps_per_epoch=n_batches,
            progress=progress and ctx.is_main, device=ctx.device, wrap=ctx.wrap,
            seed_salt=salt, on_epoch_end=epoch_end,
        )  # fmt: skip
        if tracker is not None:
            tracker.end_stage()
        stage_seconds[stage] = time.perf_counter() - stage_t0
        completed.append(stage)
    final = out_dir / "final" / "model.pt"
    if ctx.is_main:
        final = save_final(model.cpu(), cfg, signature, out_dir / "final")
        if eval_frames and tracker is not None and cfg.train.eval_figures:
            figures = out_dir / "figures"
            write_figures(model, eval_frames, figures, cfg.train.eval_figures)
            tracker.log_artifact(figures, "figures")
    resumed = None if latest is None else {k: latest[k] for k in ("stage", "epoch", "step")}
    return {"stages": completed, "metrics": metrics, "final": str(final),
            "stage_seconds": stage_seconds, "wall_seconds": time.perf_counter() - t0,
            "resumed_from": resumed}  # fmt: skip


def _stage_hooks(
    stage: str,
    report: Callable[[dict[str, Any]], None] | None,
    tracker: Tracking | None,
    sink: CheckpointSink,
    model: SelfPose3dModel,
    eval_frames: Sequence[MultiViewFrame],
    ctx: RunContext,
    steps_per_epoch: int,
    epochs_before: int = 0,
) -> tuple[Callable, CheckpointSink, Callable[[int], None] | None]:
    """The step report, checkpoint sink and epoch-end hook of one stage, wired to the
    tracker: step metrics are logged at their stage step, each epoch's evaluation at the
    stage step that ends the epoch (and on the parent run at the run's epoch count), and
    the tracker is flushed with every checkpoint."""

    def stage_report(m: dict[str, float]) -> None:
        if tracker is not None:
            tracker.log_metrics(m, int(m["step"]))
        if report is not None:
            report({"stage": stage, **m})

    class FlushingSink:
        def save(self, state: dict[str, Any]) -> Any:
            # Flushed just before the checkpoint: a run killed in between re-logs those
            # steps on resume, and the tracker drops steps it has already written.
            if tracker is not None:
                tracker.flush()
            return sink.save(state)

    epoch_end = None
    if eval_frames and ctx.is_main:

        def epoch_end(epoch: int) -> None:
            scores = evaluate_model(model, eval_frames, device=ctx.device)
            scores = {f"eval_{k}": v for k, v in scores.items()}
            epochs_trained = epochs_before + epoch + 1
            if tracker is not None:
                tracker.log_metrics(scores, (epoch + 1) * steps_per_epoch)
                tracker.log_parent_metrics(scores, epochs_trained)
            if report is not None:
                report({"stage": stage, "epoch": float(epoch),
                        "epochs_trained": float(epochs_trained), **scores})  # fmt: skip

    return stage_report, FlushingSink(), epoch_end


# -- evaluation -----------------------------------------------------------------------------
