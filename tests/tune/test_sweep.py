"""A real sweep on the smoke preset: Ray Tune + Optuna + ASHA, each trial a Ray Train run,
tracked in a real SQLite MLflow store. One sweep (two Train start-ups fewer than a separate
uninterrupted sweep would cost) is interrupted by SIGINT after its first trial, resumed, and
then checked as a whole."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfpose3d.config import load_config

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
# pseudo_heatmaps and no attention net: the shared stage is root only and steps are cheap;
# the space then searches lambda and the hard-label threshold.
FAST = [
    "model.input_mode=pseudo_heatmaps",
    "model.use_attention=false",
    "train.root_consistency_weight=0",
    "train.max_steps_per_epoch=2",
    "train.num_threads=1",
    "sweep.trial_overrides=[train.pose.epochs=2, train.finetune.epochs=1]",
    "sweep.validation_max_frames=4",
    "sweep.num_samples=3",
]
PAPER = {"train.l1_weight": 0.01, "train.hard_label_threshold": 0.7}


def mlflow_runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client, client.search_runs(experiments, max_results=1000)


def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(ray_session, smoke_data,
                                                                        tmp_path):  # fmt: skip
    from tune.sweep import run_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "sweep"
    overrides = [*FAST, "sweep.max_concurrent=1"]
    command = [sys.executable, "-m", "selfpose3d.cli", "tune", "--config", str(SMOKE),
               "--data", str(smoke_data), "--out", str(out), "--tracking-uri", uri, "--quiet"]
    command += [f"--set={item}" for item in overrides]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        # One trial at a time: the second trial's run directory appears once Tune has
        # recorded the first as finished (its final model alone is not enough: the trial
        # still has to return).
        deadline = time.monotonic() + 420
        started: list[Path] = []
        while len(started) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            started = list((out / "trials").glob("*")) if (out / "trials").is_dir() else []
        assert len(started) >= 2, f"no second trial:\n{proc.stdout.read() if proc.poll() else ''}"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, output
    assert "continue with --resume" in output
    finished = list((out / "trials").glob("*/final/model.pt"))
    assert len(finished) == 1, finished
    first = finished[0].parents[1]
    first_mtime = finished[0].stat().st_mtime_ns
    first_checkpoints = sorted(p.name for p in (first / "ray_train").iterdir())

    result = run_sweep(load_config(SMOKE, overrides), smoke_data, out, resume=True,
                       tracking_uri=uri, progress=False)  # fmt: skip
    assert not result.interrupted
    assert len(result.trials) == 3
    assert first.name in {r.trial_id for r in result.trials}
    assert finished[0].stat().st_mtime_ns == first_mtime, "a finished trial was trained again"
    assert sorted(p.name for p in (first / "ray_train").iterdir()) == first_checkpoints
    _, runs = mlflow_runs(uri)
    trial_runs = [r for r in runs if r.data.tags.get("selfpose3d.sweep_role") == "trial"]
    assert sorted(r.data.tags["selfpose3d.trial_id"] for r in trial_runs) == sorted(
        r.trial_id for r in result.trials
    ), "one MLflow run per trial, none duplicated"
    assert len([r for r in runs if r.data.tags.get("selfpose3d.sweep_role") == "shared"]) == 1
    check_sweep_result(result, out, uri)
    check_seed_benchmark(result, out, smoke_data)


def check_seed_benchmark(result, out: Path, data: Path) -> None:
    """benchmarks/sweep_seeds.py retrains the best and the paper's point as trials do: with
    the sweep's own seed, a trial that ran all its epochs is reproduced to the last digit
    (in plain PyTorch, where the trial ran on Ray Train)."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("sweep_seeds",
                                                  REPO / "benchmarks" / "sweep_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--sweep", str(out), "--data", str(data), "--seeds", "0",
                        "--jobs", "1"])  # fmt: skip
    retrained = {r["name"]: r for r in rows}
    assert set(retrained) == {"best", "paper"}
    trials = {"best": result.best, "paper": next(r for r in result.trials if r.params == PAPER)}
    compared = 0
    for name, trial in trials.items():
        if trial.status == "completed":
            for key in ("ap50", "ap100", "mpjpe"):
                np.testing.assert_allclose(retrained[name][key], trial.scores[key],
                                           equal_nan=True, err_msg=f"{name} {key}")
            compared += 1
    assert compared, "neither the best nor the paper's trial ran all its epochs"


def check_sweep_result(result, out: Path, uri: str) -> None:
    """What a finished 3-trial sweep leaves: Optuna's first point is the paper's, ASHA's
    statuses, the ranking, best.yaml, trials.csv and the MLflow parent and child runs with
    continuous validation curves (a resumed trial included)."""
    assert [p.key for p in result.params] == list(PAPER)
    assert any(r.params == PAPER for r in result.trials), "the paper's point is tried first"
    assert {r.status for r in result.trials} <= {"completed", "stopped early"}
    assert any(r.status == "completed" and r.epochs == 3 for r in result.trials)
    assert result.validation == ["synth_train_01"]
    objectives = [r.objective for r in result.trials]
    assert objectives == sorted(objectives, reverse=True)
    best = result.best
    assert best is result.trials[0] and set(best.scores) >= {"ap50", "mpjpe"}

    best_cfg = load_config(out / "best.yaml")
    assert best_cfg.train.l1_weight == pytest.approx(best.params["train.l1_weight"])
    assert best_cfg.train.pose.epochs == 2 and best_cfg.train.eval_max_frames == 4
    with (out / "trials.csv").open() as f:
        table = list(csv.DictReader(f))
    assert sorted(r["trial_id"] for r in table) == sorted(r.trial_id for r in result.trials)

    client, runs = mlflow_runs(uri)
    assert all(r.info.status != "RUNNING" for r in runs), "a run was left RUNNING"
    sweep = next(r for r in runs if r.info.run_id == result.mlflow_run_id)
    assert sweep.data.metrics["trials"] == 3
    assert sweep.data.metrics["best_val_ap50"] == pytest.approx(best.scores["ap50"])
    artifacts = {a.path for a in client.list_artifacts(sweep.info.run_id)}
    assert {"best.yaml", "trials.csv", "best_model"} <= artifacts
    trials = {r.data.tags["selfpose3d.trial_id"]: r for r in runs
              if r.data.tags.get("selfpose3d.sweep_role") == "trial"}  # fmt: skip
    assert set(trials) == {r.trial_id for r in result.trials}
    for row in result.trials:
        run = trials[row.trial_id]
        assert run.data.tags["mlflow.parentRunId"] == sweep.info.run_id
        assert run.data.tags["selfpose3d.trial_status"] == row.status
        assert float(run.data.params["train.l1_weight"]) == pytest.approx(
            row.params["train.l1_weight"]
        )
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "eval_ap50")]
        assert steps == list(range(1, row.epochs + 1))
