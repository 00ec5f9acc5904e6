"""Tracker against a real SQLite MLflow store, an unreachable server, and with enabled=False."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from selfpose3d.tracking import (
    MAX_PARAM_VALUE_LENGTH,
    Tracker,
    flatten_params,
    resolve_tracking_uri,
    ui_command,
)

PARAMS = {"train": {"pose": {"lr": 1e-4, "milestones": [5, 7]}, "preset": "smoke"},
          "model": {"use_attention": False, "extra": None}}  # fmt: skip
HTTP_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
            "MLFLOW_HTTP_REQUEST_TIMEOUT")  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No tracking URI from the outside; the Tracker's HTTP settings are undone afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in HTTP_ENV:  # setenv records the original state, delenv then removes it
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An initialised MLflow SQLite database (creating one runs migrations: seconds), copied
    by each test instead of rebuilt."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store_uri(empty_store, tmp_path) -> str:
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def steps(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client(uri).get_metric_history(run_id, key))


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tracking_uri_precedence_and_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    default = resolve_tracking_uri(None)
    assert default == f"sqlite:///{tmp_path}/mlflow.db" and default.startswith("sqlite:////")
    assert Tracker(tmp_path / "run").tracking_uri == default
    assert resolve_tracking_uri("sqlite:///rel/x.db") == f"sqlite:///{tmp_path}/rel/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None) == "http://env:5000"
    assert resolve_tracking_uri("http://arg:5000") == "http://arg:5000"
    assert ui_command(default) == (f"mlflow ui --backend-store-uri {default} "
                                   f"--host 127.0.0.1 --port 5000")  # fmt: skip
    assert ui_command("http://server:5000") == "http://server:5000"


def test_flatten_params():
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert MAX_PARAM_VALUE_LENGTH == MAX_PARAM_VAL_LENGTH
    flat = flatten_params({**PARAMS, "long": "x" * 10_000, "empty": {}})
    assert flat["train.pose.lr"] == "0.0001"
    assert flat["train.pose.milestones"] == "[5, 7]"
    assert flat["train.preset"] == "smoke"
    assert flat["model.use_attention"] == "false" and flat["model.extra"] == "null"
    assert flat["empty"] == "{}"
    assert len(flat["long"]) == MAX_PARAM_VALUE_LENGTH and flat["long"].endswith("...")


def test_parent_child_params_metrics_artifacts(store_uri, tmp_path):
    run_dir = tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text("train: {}\n")
    tracker = Tracker(run_dir, tracking_uri=store_uri, run_name="smoke")
    tracker.start(PARAMS)
    tracker.log_artifact(config)
    tracker.start_stage("pose")
    for step in range(5):
        tracker.log_metrics({"loss": 1.0 / (step + 1), "samples_per_s": 10.0}, step)
    parent, child = tracker.parent_run_id, tracker.stage_run_ids["pose"]
    assert steps(store_uri, child, "loss") == []  # buffered until flush
    assert not (run_dir / "metrics.jsonl").exists()
    tracker.flush()
    tracker.end_stage()
    tracker.log_parent_metrics({"ap25": 0.5}, step=0)
    tracker.finish()

    c = client(store_uri)
    parent_run, child_run = c.get_run(parent), c.get_run(child)
    assert parent_run.info.run_name == "smoke" and child_run.info.run_name == "pose"
    assert child_run.data.tags["mlflow.parentRunId"] == parent
    assert parent_run.info.status == child_run.info.status == "FINISHED"
    assert parent_run.data.params["train.pose.lr"] == "0.0001"
    assert parent_run.data.params["train.pose.milestones"] == "[5, 7]"
    assert steps(store_uri, child, "loss") == [0, 1, 2, 3, 4]
    assert steps(store_uri, child, "samples_per_s") == [0, 1, 2, 3, 4]
    assert steps(store_uri, parent, "ap25") == [0]
    assert [a.path for a in c.list_artifacts(parent)] == ["config.yaml"]
    state = json.loads((run_dir / "mlflow.json").read_text())
    assert state["tracking_uri"] == store_uri and state["experiment"] == "selfpose3d"
    assert state["parent_run_id"] == parent and state["stages"] == {"pose": child}
    assert [(r["stage"], r["step"]) for r in records(run_dir)] == [
        *(("pose", s) for s in range(5)), (None, 0)]  # fmt: skip


def test_resume_reopens_runs_without_gaps_or_duplicates(store_uri, tmp_path):
    run_dir = tmp_path / "run"
    first = Tracker(run_dir, tracking_uri=store_uri)
    first.start(PARAMS)
    first.start_stage("pose")
    for step in range(6):
        first.log_metrics({"loss": float(step)}, step)
    first.flush()  # a checkpoint covers steps 0-5
    for step in range(6, 8):
        first.log_metrics({"loss": float(step)}, step)  # never flushed: the process dies
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"stage": "pose", "st')  # killed in the middle of an append
    parent, child = first.parent_run_id, first.stage_run_ids["pose"]
    assert client(store_uri).get_run(child).info.status == "RUNNING"

    second = Tracker(run_dir, tracking_uri=store_uri)
    second.start({"train": {"pose": {"lr": 0.5}}, "added": 1})  # a param changed, one added
    second.start_stage("pose")
    assert (second.parent_run_id, second.stage_run_ids["pose"]) == (parent, child)
    for step in range(4, 10):  # resumed from an older checkpoint: steps 4 and 5 again
        second.log_metrics({"loss": float(step)}, step)
    second.flush()
    second.end_stage()
    second.start_stage("finetune")
    second.log_metrics({"loss": 0.0}, 0)
    second.finish()

    assert steps(store_uri, child, "loss") == list(range(10))
    assert [r["step"] for r in records(run_dir) if r["stage"] == "pose"] == list(range(10))
    state = json.loads((run_dir / "mlflow.json").read_text())
    assert state["stages"] == {"pose": child, "finetune": second.stage_run_ids["finetune"]}
    assert client(store_uri).get_run(child).info.status == "FINISHED"
    parent_run = client(store_uri).get_run(parent)
    assert parent_run.data.params["train.pose.lr"] == "0.0001"  # MLflow params are immutable
    assert parent_run.data.params["added"] == "1"
    runs = client(store_uri).search_runs([parent_run.info.experiment_id])
    assert len(runs) == 3  # parent, pose, finetune: nothing was created twice


def test_mlflow_failure_warns_once_and_next_start_backfills(store_uri, tmp_path):
    run_dir = tmp_path / "run"
    first = Tracker(run_dir, tracking_uri=store_uri)
    first.start(PARAMS)
    first.start_stage("pose")
    first.log_metrics({"loss": 0.0}, 0)
    first.flush()

    def broken(records):
        raise ConnectionError("database went away")

    first._send = broken  # MLflow fails from here on
    with pytest.warns(RuntimeWarning, match="database went away") as caught:
        for step in range(1, 4):
            first.log_metrics({"loss": float(step)}, step)
            first.flush()
        first.finish()
    assert len([w for w in caught if w.category is RuntimeWarning]) == 1
    child = first.stage_run_ids["pose"]
    assert steps(store_uri, child, "loss") == [0]
    assert [r["step"] for r in records(run_dir)] == [0, 1, 2, 3]

    second = Tracker(run_dir, tracking_uri=store_uri)
    second.start(PARAMS)
    second.start_stage("pose")  # sends steps 1-3 from metrics.jsonl
    second.log_metrics({"loss": 4.0}, 4)
    second.finish()
    assert steps(store_uri, child, "loss") == [0, 1, 2, 3, 4]


def test_mlflow_that_comes_back_gets_what_it_missed(store_uri, tmp_path, monkeypatch):
    import selfpose3d.tracking as tracking

    monkeypatch.setattr(tracking, "_RETRY_EVERY_S", 0.0)
    run_dir = tmp_path / "run"
    tracker = Tracker(run_dir, tracking_uri=store_uri)
    tracker.start(PARAMS)
    tracker.start_stage("root")
    tracker.log_metrics({"loss": 0.0}, 0)
    tracker.flush()
    working = tracker._send

    def broken(records):
        raise ConnectionError("server went away")

    tracker._send = broken
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in (1, 2):  # the outage: every retry fails again, silently
            tracker.log_metrics({"loss": float(step)}, step)
            tracker.flush()
        tracker.end_stage()  # ends while MLflow is away
        tracker.start_stage("pose")  # starts while MLflow is away: no run yet
        tracker.log_metrics({"loss": 10.0}, 0)
        tracker.flush()
        tracker._send = working  # back
        tracker.log_metrics({"loss": 11.0}, 1)
        tracker.flush()
        tracker.finish()
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert len(messages) == 2
    assert "server went away" in messages[0] and "answers again" in messages[1]
    runs = tracker.stage_run_ids
    assert steps(store_uri, runs["root"], "loss") == [0, 1, 2]
    assert steps(store_uri, runs["pose"], "loss") == [0, 1]
    statuses = {stage: client(store_uri).get_run(run).info.status for stage, run in runs.items()}
    assert statuses == {"root": "FINISHED", "pose": "FINISHED"}
    assert client(store_uri).get_run(tracker.parent_run_id).info.status == "FINISHED"


def test_unreachable_server_warns_once_and_keeps_metrics(tmp_path):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    run_dir = tmp_path / "run"
    artifact = tmp_path / "config.yaml"
    artifact.write_text("x: 1\n")
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = Tracker(run_dir, tracking_uri=uri)
        tracker.start(PARAMS)
        tracker.log_artifact(artifact)
        tracker.start_stage("pose")
        for step in range(3):
            tracker.log_metrics({"loss": float(step)}, step)
            tracker.flush()
        tracker.end_stage()
        tracker.finish()
    assert time.monotonic() - start < 10
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"  # shortened for this process
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert len(messages) == 1 and uri in messages[0]
    assert tracker.parent_run_id is None
    assert [(r["stage"], r["step"]) for r in records(run_dir)] == [("pose", s) for s in range(3)]
    assert not (run_dir / "mlflow.json").exists()


def test_nonfinite_values_and_caller_mistakes(store_uri, tmp_path):
    run_dir = tmp_path / "run"
    tracker = Tracker(run_dir, tracking_uri=store_uri)
    with pytest.raises(RuntimeError, match="start"):
        tracker.log_metrics({"loss": 1.0}, 0)
    tracker.start({})
    tracker.start_stage("pose")
    tracker.log_metrics({"loss": 1.0}, 0)
    tracker.log_metrics({"loss": float("nan"), "grad_norm": float("inf")}, 1)
    tracker.log_metrics({"loss": 0.5}, 2)
    with pytest.raises(ValueError, match="not valid for MLflow"):
        tracker.log_metrics({"AP@25": 1.0}, 3)
    with pytest.raises(ValueError, match="not a number"):
        tracker.log_metrics({"stage": "pose"}, 3)
    with pytest.raises(ValueError, match="integer"):
        tracker.log_metrics({"loss": 1.0}, 3.5)
    with pytest.raises(FileNotFoundError):
        tracker.log_artifact(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="status"):
        tracker.finish("DONE")
    tracker.finish()
    assert steps(store_uri, tracker.stage_run_ids["pose"], "loss") == [0, 2]
    assert records(run_dir)[1]["metrics"] == {"loss": None, "grad_norm": None}


def test_disabled_writes_nothing_and_mlflow_is_imported_lazily(tmp_path):
    code = (
        "import sys\n"
        "from selfpose3d.tracking import Tracker\n"
        f"t = Tracker({str(tmp_path / 'run')!r}, enabled=False)\n"
        "t.start({'a': 1}); t.start_stage('pose'); t.log_metrics({'loss': 1.0}, 0)\n"
        f"t.flush(); t.log_artifact({str(tmp_path / 'missing')!r}); t.end_stage(); t.finish()\n"
        "assert t.parent_run_id is None\n"
        "assert 'mlflow' not in sys.modules, 'mlflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []
