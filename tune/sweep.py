"""A hyperparameter sweep on Ray Tune + Optuna, every trial a Ray Train run, tracked in MLflow.

``run_sweep`` (``selfpose3d tune``) works in a sweep directory ``SWEEP``:

- ``base.yaml``: the resolved base config (a resumed sweep goes on with it);
  ``sweep.json``: the validation sequences and the shared-stage checkpoint the trials start
  from;
- ``shared/``: without ``init``, the shared stages (backbone in ``images`` mode, root) trained
  once on the train split minus the validation sequences;
- ``trials/<trial id>/``: each trial's Ray Train run (config.yaml, checkpoints, final/);
- ``tune/``: Ray Tune's experiment state (what ``--resume`` restores);
- ``trials.csv`` and ``best.yaml`` (the best trial's resolved config, usable as
  ``selfpose3d train --config``) at the end.

A trial trains ``sweep.stages`` (pose, finetune) from the shared weights with its overrides,
and after every epoch scores the validation sequences; the epoch-end checkpoint report
carries the scores and ``eval_objective`` (the metric, ties broken by MPJPE) to Tune.
Optuna's TPE sampler (seeded; the paper's values first) proposes the trials; ASHA stops the
weak ones at ``grace_period`` x ``reduction_factor``^k epochs.

MLflow: the sweep is a parent run (base config as params; the best trial's metrics, config
and checkpoint at the end); each trial is a child run whose params are its resolved config
(the searched keys under their dotted names, so parallel-coordinates views line up) with the
validation curve ``eval_*`` at ``epochs_trained``; each trial's stages are its children.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from ray import tune as ray_tune

from selfpose3d.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)
from selfpose3d.data.schema import list_shards
from selfpose3d.io import atomic_write_json, atomic_write_text
from selfpose3d.sweep_config import SCORE_KEYS
from tune.space import Param, active_params, apply_overrides, format_value, load_space

log = logging.getLogger(__name__)

OBJECTIVE = "eval_objective"
TIME_ATTR = "epochs_trained"
TUNE_NAME = "tune"
STATE_FILE = "sweep.json"
BASE_FILE = "base.yaml"
TRIAL_CPUS = 1  # Tune's default for a function trial
DATA_CPUS = 1  # kept free per trial for the Ray Data tasks reading its shards


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]
    status: str  # completed, stopped early, error
    epochs: int
    scores: dict[str, float]  # validation, evaluation keys
    objective: float
    run_dir: Path


@dataclass
class SweepResult:
    trials: list[TrialRow]
    best: TrialRow | None
    params: list[Param]
    validation: list[str]
    wall_seconds: float
    mlflow_run_id: str | None
    interrupted: bool = False  # stopped (SIGINT) before every trial ended: --resume goes on


def train_sequences(data_dir: Path) -> list[str]:
    """The sequences of ``<data>/train`` (read from the Parquet column, not the images)."""
    shards = list_shards(data_dir / "train") if (data_dir / "train").is_dir() else []
    if not shards:
        raise FileNotFoundError(f"{data_dir}: no train split (expected the output of "
                                f"`selfpose3d ingest`)")  # fmt: skip
    names: set[str] = set()
    for path in shards:
        names.update(pq.read_table(path, columns=["sequence"]).column(0).to_pylist())
    return sorted(names)


def pick_validation(data_dir: Path, wanted: list[str]) -> list[str]:
    """Held-out sequences: ``wanted``, or the last train sequence; at least one must stay."""
    sequences = train_sequences(data_dir)
    if wanted:
        missing = sorted(set(wanted) - set(sequences))
        if missing:
            raise ConfigError(f"sweep.validation_sequences: {missing[0]!r} is not a sequence of "
                              f"the train split ({sequences})")  # fmt: skip
        chosen = list(wanted)
    else:
        chosen = sequences[-1:]
    if len(set(chosen)) >= len(sequences):
        raise ConfigError(f"the train split has {len(sequences)} sequence(s): holding "
                          f"{chosen} out for validation leaves none to train on")  # fmt: skip
    return chosen


def trial_config(base: Config, point: dict[str, Any]) -> Config:
    """The base config with the sweep's trial overrides, then the point of the space."""
    overrides: dict[str, Any] = {}
    for item in base.sweep.trial_overrides:
        parts, value = parse_override(item)
        overrides[".".join(parts)] = value
    overrides["train.eval_max_frames"] = base.sweep.validation_max_frames
    # Every report a trial makes to Tune must carry the metric: report only the epoch-end
    # checkpoints, which carry the validation scores.
    overrides["train.ray_report_every"] = 10**9
    overrides["train.checkpoint_every"] = 0
    overrides.update(point)
    return apply_overrides(base, overrides, "the trial's overrides")


def shared_stages(base: Config) -> list[str]:
    from selfpose3d.training.run import default_stages

    return [s for s in default_stages(base) if s not in base.sweep.stages]


def trial_epochs(base: Config) -> int:
    """Epochs a trial trains (its budget: the trial overrides applied)."""
    cfg = trial_config(base, {})
    return sum(cfg.train.stage(s).epochs for s in cfg.sweep.stages)


def max_concurrent(base: Config) -> int:
    """Trials that fit the cluster at once: each holds 1 CPU (Tune's trial) plus its workers'
    CPUs, and needs 1 more free for the Ray Data tasks that feed its workers (without it
    the trials wait for each other forever)."""
    import ray

    sweep = base.sweep
    resources = ray.cluster_resources()
    per_trial = TRIAL_CPUS + sweep.workers_per_trial * sweep.cpus_per_worker + DATA_CPUS
    fits = int(resources.get("CPU", 0) // per_trial)
    if sweep.gpus_per_worker > 0:
        gpus = sweep.workers_per_trial * sweep.gpus_per_worker
        fits = min(fits, int(resources.get("GPU", 0) // gpus))
    if fits < 1:
        raise ValueError(f"the cluster ({resources.get('CPU', 0)} CPUs, "
                         f"{resources.get('GPU', 0)} GPUs) cannot hold one trial: 2 CPUs + "
                         f"{sweep.workers_per_trial} worker(s) x {sweep.cpus_per_worker} CPU "
                         f"/ {sweep.gpus_per_worker} GPU")  # fmt: skip
    return fits


def run_sweep(
    cfg: Config,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    init: str | Path | None = None,
    resume: bool = False,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run (or with ``resume`` continue) a sweep; Ray must be initialised by the caller.

    cfg: the base config; its ``sweep`` section says what to search and how. init: a
    ``train`` output (or checkpoint) whose backbone and root_net every trial starts from;
    without it the shared stages are trained first (once; a resumed sweep reuses them).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from selfpose3d.tracking import Tracker, resolve_tracking_uri
    from selfpose3d.training.evaluate import resolve_checkpoint
    from tune.space import paper_point, to_tune

    t0 = time.perf_counter()
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir).resolve()
    tracking_uri = resolve_tracking_uri(tracking_uri)
    tune_path = out_dir / TUNE_NAME
    restorable = tune.Tuner.can_restore(str(tune_path))
    if resume:
        if not (out_dir / BASE_FILE).is_file():
            raise FileNotFoundError(f"{out_dir}: no sweep to resume here")
        cfg = load_config(out_dir / BASE_FILE)
        state = json.loads((out_dir / STATE_FILE).read_text())
        if init is not None and str(resolve_checkpoint(init)) != state.get("init"):
            log.warning("a resumed sweep keeps its trials' starting point %s", state.get("init"))
    elif (out_dir / BASE_FILE).exists():
        raise FileExistsError(f"{out_dir} already holds a sweep; pass --resume to continue it, "
                              f"or choose another --out")  # fmt: skip
    else:
        state = {"validation": pick_validation(data_dir, cfg.sweep.validation_sequences),
                 "init": None if init is None else str(resolve_checkpoint(init))}  # fmt: skip
    sweep = cfg.sweep
    params = active_params(load_space(sweep.space, cfg), cfg)
    trial_config(cfg, {p.key: p.paper for p in params if p.paper is not None})  # checks overrides
    validation = state["validation"]
    if not resume:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / BASE_FILE)
        atomic_write_json(out_dir / STATE_FILE, state)

    tracker = Tracker(out_dir, tracking_uri=tracking_uri, run_name=out_dir.name)
    tracker.start(config_to_dict(cfg) | {"sweep.validation": ",".join(validation),
                                         "sweep.searched": ",".join(p.key for p in params)})
    parent = tracker.parent_run_id
    nest = {"mlflow.parentRunId": parent} if parent else {}
    try:
        concurrency = sweep.max_concurrent or max_concurrent(cfg)
        if state["init"] is None:
            shared = _train_shared(cfg, data_dir, out_dir / "shared", validation, tracking_uri,
                                   nest, progress, concurrency)  # fmt: skip
            state["init"] = str(shared)
            atomic_write_json(out_dir / STATE_FILE, state)
        setup = {"base": config_to_dict(cfg), "data": str(data_dir), "out": str(out_dir),
                 "init": state["init"], "validation": validation, "tracking_uri": tracking_uri,
                 "parent_run_id": parent}  # fmt: skip
        trainable = tune.with_parameters(_trial, setup=setup)
        callbacks = [TrialRunStatus(tracking_uri, trial_epochs(cfg))]
        if resume and restorable:
            tuner = tune.Tuner.restore(str(tune_path), trainable, resume_errored=True)
        else:
            first = paper_point(params)
            searcher = OptunaSearch(seed=sweep.seed, points_to_evaluate=[first] if first else None)
            scheduler = ASHAScheduler(time_attr=TIME_ATTR, max_t=trial_epochs(cfg),
                                      grace_period=sweep.grace_period,
                                      reduction_factor=sweep.reduction_factor)  # fmt: skip
            tuner = tune.Tuner(
                trainable,
                param_space=to_tune(params),
                tune_config=tune.TuneConfig(
                    metric=OBJECTIVE, mode="max", search_alg=searcher, scheduler=scheduler,
                    num_samples=sweep.num_samples,
                    max_concurrent_trials=concurrency,
                ),  # fmt: skip
                run_config=tune.RunConfig(name=TUNE_NAME, storage_path=str(out_dir),
                                          callbacks=callbacks,
                                          verbose=1 if progress else 0),  # fmt: skip
            )
        grid = tuner.fit()
        # Tune returns normally when stopped by SIGINT, its state saved for a restore.
        interrupted = grid.num_terminated + grid.num_errors < sweep.num_samples
        rows = [_row(result, params, cfg, out_dir, interrupted) for result in grid]
        rows.sort(key=lambda r: (-r.objective if r.objective == r.objective else math.inf))
        best = next((r for r in rows if r.status != "error" and r.scores), None)
        _write_outputs(out_dir, rows, params, best)
        _log_best(tracker, out_dir, rows, best)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("KILLED" if interrupted else "FINISHED")
    return SweepResult(rows, best, params, validation, time.perf_counter() - t0, parent,
                       interrupted)  # fmt: skip


def _train_shared(cfg: Config, data_dir: Path, run: Path, validation: list[str],
                  tracking_uri: str, tags: dict[str, str], progress: bool,
                  concurrency: int) -> Path:  # fmt: skip
    """Train the stages every trial shares once (resumed when a sweep was interrupted),
    with the CPUs the concurrent trials' workers will share."""
    from pipelines.train import has_run, train_on_ray

    stages = shared_stages(cfg)
    if not stages:
        raise ConfigError(f"sweep.stages {cfg.sweep.stages} leave nothing to share; give --init")
    if (run / "final" / "model.pt").is_file():
        return run
    sweep = cfg.sweep
    log.info("training the shared stages %s once, into %s", stages, run)
    train_on_ray(cfg, data_dir, run, stages, workers=sweep.workers_per_trial,
                 cpus_per_worker=sweep.cpus_per_worker * concurrency,
                 gpus_per_worker=sweep.gpus_per_worker or 1.0,
                 use_gpu=sweep.gpus_per_worker > 0, resume=has_run(run),
                 tracking_uri=tracking_uri, eval_split=None, progress=progress,
                 exclude_sequences=validation,
                 tracking_tags=tags | {"selfpose3d.sweep_role": "shared"})  # fmt: skip
    return run


def _trial(point: dict[str, Any], setup: dict[str, Any]) -> None:
    """One trial (runs in a Tune trial actor): a Ray Train run of the sweep's stages."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.train import has_run, train_on_ray

    trial_id = tune.get_context().get_trial_id()
    base = config_from_dict(setup["base"], "the sweep's base config")
    cfg = trial_config(base, point)
    sweep = cfg.sweep
    run = Path(setup["out"]) / "trials" / trial_id
    tags = {"selfpose3d.trial_id": trial_id, "selfpose3d.sweep_role": "trial"}
    if setup["parent_run_id"]:
        tags["mlflow.parentRunId"] = setup["parent_run_id"]
    validation = setup["validation"]
    train_on_ray(
        cfg, setup["data"], run, sweep.stages, workers=sweep.workers_per_trial,
        cpus_per_worker=sweep.cpus_per_worker, gpus_per_worker=sweep.gpus_per_worker or 1.0,
        use_gpu=sweep.gpus_per_worker > 0, resume=has_run(run), init=setup["init"],
        tracking_uri=setup["tracking_uri"], eval_split="train", eval_sequences=validation,
        exclude_sequences=validation, callbacks=[TuneReportCallback()], tracking_tags=tags,
        objective={"metric": sweep.metric, "mode": sweep.mode, "tie_break": sweep.tie_break},
        progress=False,
    )  # fmt: skip


def _row(result: Any, params: list[Param], cfg: Config, out_dir: Path,
         interrupted: bool) -> TrialRow:  # fmt: skip
    """A trial's last validation scores (from its result history), status and params."""
    metrics = result.metrics or {}
    trial_id = str(metrics.get("trial_id") or Path(result.path).name.split("_")[-1])
    history = result.metrics_dataframe
    scores: dict[str, float] = {}
    epochs = 0
    objective = math.nan
    if history is not None and OBJECTIVE in history:
        evaluated = history[history[OBJECTIVE].notna()]
        if len(evaluated):
            last = evaluated.iloc[-1]
            scores = {k: float(last[f"eval_{k}"]) for k in SCORE_KEYS if f"eval_{k}" in last}
            epochs = int(last[TIME_ATTR])
            objective = float(last[OBJECTIVE])
    if result.error is not None:
        status = "error"
    elif epochs >= trial_epochs(cfg):
        status = "completed"
    else:
        status = "unfinished" if interrupted else "stopped early"
    point = {p.key: result.config.get(p.key) for p in params}
    return TrialRow(trial_id, point, status, epochs, scores, objective,
                    out_dir / "trials" / trial_id)  # fmt: skip


def trials_csv(rows: list[TrialRow], params: list[Param]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial_id", *[p.key for p in params], "status", "epochs", "objective",
                     *[f"val_{k}" for k in SCORE_KEYS]])  # fmt: skip
    for r in rows:
        writer.writerow([r.trial_id, *[r.params[p.key] for p in params], r.status, r.epochs,
                         r.objective, *[r.scores.get(k, "") for k in SCORE_KEYS]])  # fmt: skip
    return buffer.getvalue()


def format_trials(rows: list[TrialRow], params: list[Param], best: TrialRow | None) -> str:
    """The trials as a fixed-width table, best first."""
    head = ["trial", *[p.key for p in params], "status", "ep", "AP50", "AP100", "MPJPE"]
    lines = []
    for r in rows:
        mark = "*" if best is not None and r.trial_id == best.trial_id else " "
        cells = [mark + r.trial_id, *[format_value(r.params[p.key]) for p in params], r.status,
                 str(r.epochs)]  # fmt: skip
        shown = ("ap50", "ap100", "mpjpe")
        cells += [f"{r.scores[k]:.1f}" if k in r.scores else "-" for k in shown]
        lines.append(cells)
    widths = [max(len(c) for c in col) for col in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*cells) for cells in [head, *lines])


def _write_outputs(out_dir: Path, rows: list[TrialRow], params: list[Param],
                   best: TrialRow | None) -> None:  # fmt: skip
    atomic_write_text(out_dir / "trials.csv", trials_csv(rows, params))
    if best is not None and (best.run_dir / "config.yaml").is_file():
        atomic_write_text(out_dir / "best.yaml", (best.run_dir / "config.yaml").read_text())


def _log_best(tracker: Any, out_dir: Path, rows: list[TrialRow], best: TrialRow | None) -> None:
    tracker.log_artifact(out_dir / "trials.csv")
    # Step = trials so far: an interrupted sweep logs its partial summary, and the resumed
    # one must not be dropped as a repeat of that step.
    step = len(rows)
    stopped = sum(r.status == "stopped early" for r in rows)
    tracker.log_parent_metrics({"trials": float(len(rows)),
                                "trials_stopped_early": float(stopped)}, step)  # fmt: skip
    if best is None:
        return
    tracker.log_parent_metrics({f"best_val_{k}": v for k, v in best.scores.items()}, step)
    if (out_dir / "best.yaml").is_file():
        tracker.log_artifact(out_dir / "best.yaml")
    final = best.run_dir / "final" / "model.pt"
    if final.is_file():
        tracker.log_artifact(final, "best_model")
    tracker.flush()


def _close_trial_runs(tracking_uri: str, trial_id: str, status: str, label: str) -> None:
    """End a trial's MLflow runs left RUNNING (a trial ASHA stopped never ends them) and tag
    the trial run with how the trial ended."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    by_trial = f"tags.`selfpose3d.trial_id` = '{trial_id}'"
    runs = client.search_runs(experiments, filter_string=by_trial)
    for run in runs:
        client.set_tag(run.info.run_id, "selfpose3d.trial_status", label)
        children = client.search_runs(
            experiments, filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
        )
        for r in [run, *children]:
            if r.info.status == "RUNNING":
                client.set_terminated(r.info.run_id, status)


class TrialRunStatus(ray_tune.Callback):
    """Driver side: closes the MLflow runs of every trial that ends, tagged with how."""

    def __init__(self, tracking_uri: str, epochs: int) -> None:
        self.tracking_uri = tracking_uri
        self.epochs = epochs

    def _close(self, trial: Any, status: str, label: str) -> None:
        try:
            _close_trial_runs(self.tracking_uri, trial.trial_id, status, label)
        except Exception as e:  # tracking never stops a sweep
            log.warning("could not update the MLflow runs of trial %s: %s", trial.trial_id, e)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = (trial.last_result or {}).get(TIME_ATTR, 0) >= self.epochs
        self._close(trial, "FINISHED" if done else "KILLED",
                    "completed" if done else "stopped early")  # fmt: skip

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "FAILED", "error")
