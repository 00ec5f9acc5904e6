"""Distributed training on Ray Train: the thin worker shell around ``selfpose3d.training``.

``train_on_ray`` starts a ``TorchTrainer`` with ``workers`` processes. Each worker reads its
shard of ``<data>/train`` through Ray Data (``datasets=`` + ``get_dataset_shard``), builds
the model, and runs the same stages as ``selfpose3d.training.run.train_frames`` with

- DistributedDataParallel around each stage's step (Gloo on CPU, NCCL on GPU, set up by
  Ray Train): gradients are averaged over the workers, so N workers see N frames per step;
- every worker taking the same number of steps per epoch (the smallest shard's), because
  each step ends in a collective;
- checkpoints (model, optimiser, scheduler, stage, epoch, step, resolved config) reported to
  Ray Train by rank 0 every ``train.checkpoint_every`` steps and at each epoch's end, kept
  under ``<out>/ray_train/`` (``train.keep_checkpoints`` of them);
- metrics reported to Ray Train every ``train.ray_report_every`` steps, and every
  ``train.log_every`` steps to MLflow by rank 0 (``selfpose3d.tracking``): one parent run, one
  child run per stage.

A worker that fails is restarted (``max_failures``) and resumes from the latest checkpoint;
running the same command again with the same ``out`` resumes too (Ray Train finds the run by
its name and storage path). ``<out>`` must be on storage every node can reach.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from selfpose3d.config import Config, config_from_dict, config_to_dict
from selfpose3d.data.schema import check_schema_version, list_shards, row_to_frame
from selfpose3d.sweep_config import ranking_score

RAY_RUN_NAME = "ray_train"  # fixed: a rerun with the same name and storage path resumes
CHECKPOINT_FILE = "checkpoint.pt"


def has_run(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` already holds a (possibly unfinished) Ray Train run."""
    return (Path(out_dir) / RAY_RUN_NAME).is_dir()


def _train_shards(data_dir: Path) -> list[str]:
    folder = data_dir / "train"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no 'train' split here (expected the Parquet shards "
                                f"that `selfpose3d ingest` writes)")  # fmt: skip
    shards = list_shards(folder)
    if not shards:
        raise ValueError(f"{folder}: the 'train' split holds no Parquet shards")
    for path in shards:
        check_schema_version(pq.read_schema(path), path)
    return [str(p) for p in shards]


def train_on_ray(
    cfg: Config,
    data_dir: str | Path,
    out_dir: str | Path,
    stages: Sequence[str] | None = None,
    *,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 1.0,
    use_gpu: bool | None = None,
    resume: bool = False,
    max_failures: int = 2,
    tracking_uri: str | None = None,
    eval_split: str | None = "test",
    progress: bool = True,
    init: str | Path | None = None,
    eval_sequences: Sequence[str] | None = None,
    exclude_sequences: Sequence[str] = (),
    callbacks: Sequence[Any] = (),
    tracking_tags: Mapping[str, str] | None = None,
    objective: Mapping[str, str] | None = None,
    placement_strategy: str = "PACK",
) -> dict[str, Any]:
    """Train ``stages`` (default: the self-supervised schedule) on Ray; returns rank 0's
    summary (``train_frames``'s, plus ``mlflow_run_id``).

    Ray must be initialised (``ray.init(address=...)``) by the caller. use_gpu: None = use
    GPUs when the cluster has one per worker. resume: continue the run already in
    ``out_dir``; without it such a directory is refused, so that no run is mixed up with
    another by accident. init: a checkpoint or run whose backbone and root_net
    a fresh run starts from. eval_sequences: score only these sequences of ``eval_split``;
    exclude_sequences: train without these sequences (a validation set held out of the
    train split). callbacks: Ray Train callbacks (e.g. Tune's report callback: every
    checkpoint report then carries rank 0's latest per-epoch evaluation). tracking_tags:
    extra tags of the MLflow run (``mlflow.parentRunId`` nests it under another run).
    objective: ``{"metric", "mode", "tie_break"}``: each evaluation also reports
    ``eval_objective`` (:func:`selfpose3d.sweep_config.ranking_score`, to maximise).
    placement_strategy: Ray's placement of the workers (PACK, SPREAD, ...).
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from selfpose3d.tracking import resolve_tracking_uri
    from selfpose3d.training.evaluate import resolve_checkpoint
    from selfpose3d.training.run import default_stages

    # Resolved here: workers run in other directories, where a relative store would differ.
    tracking_uri = resolve_tracking_uri(tracking_uri)
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir).resolve()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if has_run(out_dir) and not resume:
        raise FileExistsError(f"{out_dir} already holds a training run; pass --resume to "
                              f"continue it, or choose another --out")  # fmt: skip
    shards = _train_shards(data_dir)
    if eval_split is not None:  # fail now, not after the first epoch
        _eval_frames(data_dir, eval_split, eval_sequences)
    if init is not None:
        init = resolve_checkpoint(init)
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) >= workers * gpus_per_worker
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    stages = list(stages) if stages is not None else default_stages(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "config": config_to_dict(cfg), "stages": stages, "out_dir": str(out_dir),
            "data_dir": str(data_dir), "eval_split": eval_split, "tracking_uri": tracking_uri,
            "progress": progress,
            "init": None if init is None else str(init), "eval_sequences": eval_sequences,
            "tracking_tags": dict(tracking_tags or {}), "objective": objective,
        },  # fmt: skip
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources,
            placement_strategy=placement_strategy,
        ),
        run_config=RunConfig(
            name=RAY_RUN_NAME,
            storage_path=str(out_dir),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            callbacks=list(callbacks),
        ),
        datasets={"train": _dataset(shards, exclude_sequences)},
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return result.return_value


def _dataset(shards: list[str], exclude_sequences: Sequence[str]) -> Any:
    import ray.data

    dataset = ray.data.read_parquet(shards)
    if exclude_sequences:
        excluded = frozenset(exclude_sequences)
        dataset = dataset.filter(lambda row: row["sequence"] not in excluded)
    # Each worker reads its shard once per run, in a second; Ray Data's bars for that, drawn
    # by the split's coordinator actor, would interleave with the workers' training bars.
    dataset.context.enable_progress_bars = False
    return dataset


def _eval_frames(data_dir: Path, split: str, sequences: Sequence[str] | None) -> list:
    from selfpose3d.training.evaluate import load_frames

    frames = load_frames(data_dir, split)
    if sequences is None:
        return frames
    missing = sorted(set(sequences) - {f.sequence for f in frames})
    if missing:
        raise ValueError(f"{data_dir / split}: no sequence {missing[0]!r} to evaluate on")
    return [f for f in frames if f.sequence in set(sequences)]


class _RayCheckpoints:
    """Checkpoints reported to Ray Train: rank 0 attaches the state, every rank reports
    (a report is a barrier)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.evaluation: dict[str, Any] = {}  # rank 0's latest per-epoch evaluation

    def save(self, state: dict[str, Any]) -> None:
        import ray.train

        from selfpose3d.training.checkpoint import save_checkpoint

        position = {"stage": state["stage"], "epoch": state["epoch"], "step": state["step"]}
        name = f"{state['stage']}-e{state['epoch']:03d}-s{state['step']:07d}"
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if self.rank == 0:
                save_checkpoint(Path(tmp) / CHECKPOINT_FILE, state)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            metrics = {**self.evaluation, **position}
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        self.evaluation = {}


def _latest_state() -> dict[str, Any] | None:
    import ray.train

    from selfpose3d.training.checkpoint import load_checkpoint

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return load_checkpoint(Path(folder) / CHECKPOINT_FILE)


def _read_shard() -> list:
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    frames = []
    for batch in shard.iter_batches(batch_size=16, batch_format="pyarrow"):
        frames.extend(row_to_frame(row) for row in batch.to_pylist())
    return frames


def _worker_loop(config: dict[str, Any]) -> dict[str, Any]:
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from selfpose3d.tracking import Tracker
    from selfpose3d.training.run import RunContext, train_frames

    cfg: Config = config_from_dict(config["config"], "the Ray Train loop config")
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    frames = _read_shard()
    # Every collective must be reached by every worker: take the smallest shard's steps.
    counts = torch.tensor([len(frames), sum(f.gt_poses is not None for f in frames)])
    if world > 1:
        dist.all_reduce(counts, op=dist.ReduceOp.MIN)
    if counts[0] == 0:
        raise ValueError(f"a worker's shard of the train split is empty: {world} workers for "
                         f"too few frames")  # fmt: skip

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        if world == 1:
            return module
        ids = [device] if device.type == "cuda" else None
        # Stages train different sub-networks and a step can leave one unused (no proposal).
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    last_reported = {"step": 0.0}
    checkpoints = _RayCheckpoints(rank)

    def report(metrics: dict[str, Any]) -> None:
        # Every rank reaches the same steps. Rank 0's per-epoch evaluation (no "step") rides
        # on the epoch-end checkpoint's report, which every rank makes. Steps restart at 0
        # in each stage.
        step = metrics.get("step")
        if step is None:
            evaluation = {k: v for k, v in metrics.items() if isinstance(v, int | float | str)}
            if config["objective"]:
                scores = {k[len("eval_") :]: v for k, v in metrics.items()
                          if k.startswith("eval_")}  # fmt: skip
                evaluation["eval_objective"] = ranking_score(scores, **config["objective"])
            checkpoints.evaluation = evaluation
            return
        if step < last_reported["step"]:
            last_reported["step"] = 0.0
        if step - last_reported["step"] >= cfg.train.ray_report_every:
            last_reported["step"] = step
            ray.train.report({k: v for k, v in metrics.items() if isinstance(v, int | float | str)})

    out_dir = Path(config["out_dir"])
    tracker = Tracker(out_dir, tracking_uri=config["tracking_uri"], run_name=out_dir.name,
                      enabled=rank == 0, tags=config["tracking_tags"])  # fmt: skip
    tracker.start(config_to_dict(cfg) | {"workers": world, "device": str(device)})
    eval_frames = None
    if rank == 0 and config["eval_split"]:
        eval_frames = _eval_frames(Path(config["data_dir"]), config["eval_split"],
                                   config["eval_sequences"])  # fmt: skip
    latest = _latest_state()
    run_context = RunContext(
        rank=rank, world_size=world, device=device, wrap=wrap, checkpoints=checkpoints,
        latest=latest, frames_per_worker=(int(counts[0]), int(counts[1])),
    )  # fmt: skip
    try:
        summary = train_frames(
            cfg, frames, out_dir, config["stages"], report, progress=config["progress"],
            tracker=tracker, eval_frames=eval_frames, context=run_context, init=config["init"],
        )  # fmt: skip
    except BaseException:
        tracker.finish("FAILED")
        raise
    if rank == 0:
        tracker.log_artifact(out_dir / "config.yaml")
        tracker.log_artifact(summary["final"], "final")
    tracker.finish()
    summary["mlflow_run_id"] = tracker.parent_run_id
    summary["workers"] = world
    summary["frames_per_worker"] = int(counts[0])
    return summary
