"""A real local cluster: a Ray head started with `ray start --head`, a second Ray node, a real
`mlflow server`; `selfpose3d train` submitted as Ray jobs, and faults injected by killing real
processes: a Train worker, the node holding a worker, the job's driver, the MLflow server.

Every service binds 127.0.0.1 on free ports, runs in its own process group and is stopped in
the fixture's finaliser, whatever the tests did.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster import local

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SELFPOSE3D = str(Path(sys.executable).with_name("selfpose3d"))
STEPS_PER_EPOCH = 8
CHECKPOINT_EVERY = 2
ROOT_EPOCHS = 3
TRAIN = [
    "--config", "configs/smoke.yaml", "--stages", "root", "pose", "--workers", "2",
    "--placement-strategy", "SPREAD", "--eval-split", "", "--quiet",
    "--set", "model.input_mode=pseudo_heatmaps", "--set", "model.use_attention=false",
    "--set", "train.root_consistency_weight=0", "--set", "train.num_threads=1",
    "--set", f"train.max_steps_per_epoch={STEPS_PER_EPOCH}",
    "--set", f"train.checkpoint_every={CHECKPOINT_EVERY}",
    "--set", f"train.root.epochs={ROOT_EPOCHS}", "--set", "train.pose.epochs=1",
]  # fmt: skip


@dataclass
class Cluster:
    state: Path
    dashboard: str
    tracking_uri: str
    mlflow_port: int

    def env(self) -> dict[str, str]:
        return dict(os.environ, RAY_ADDRESS=self.dashboard, RAY_AUTH_MODE="token")


@pytest.fixture(scope="module")
def cluster(smoke_data):
    # A short root: Ray's socket paths under its temp dir must fit in 107 bytes.
    state = Path(tempfile.mkdtemp(prefix="sp3c-", dir="/tmp"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "token")
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.chdir(REPO)  # where the nodes, and so the jobs, run
        try:
            port = local.free_port()
            mlflow = local.start_mlflow(state, port=port)
            uri = mlflow.addresses["tracking_uri"]
            env = {"MLFLOW_TRACKING_URI": uri, "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
                   "SELFPOSE3D_DEBUG": "1"}  # tracebacks in the job logs
            # 3 CPUs on the head: two workers and their data reads fit on it alone, as after
            # the second node is gone.
            head = local.start_head(state, port=local.free_port(),
                                    dashboard_port=local.free_port(),
                                    client_port=local.free_port(), num_cpus=3,
                                    temp_dir=str(state / "ray"), env=env)  # fmt: skip
            local.add_node(state, num_cpus=2, env=env)
            yield Cluster(state, head.addresses["dashboard"], uri, port)
        finally:
            local.stop(state, timeout=10)
            shutil.rmtree(state, ignore_errors=True)


# -- helpers -----------------------------------------------------------------------------------


def submit(cluster: Cluster, out: Path, data: Path, *extra: str) -> subprocess.Popen:
    """`selfpose3d submit -- train ...` as a subprocess; its output goes to ``out``.log."""
    # No --working-dir: the nodes share this machine's disk, and the jobs run in the
    # directory `ray start` ran in (the repository), as on a cluster with shared storage.
    command = [SELFPOSE3D, "submit", "--", "train", "--data", str(data), "--out", str(out),
               *TRAIN, *extra]  # fmt: skip
    log = open(f"{out}.log", "w")  # noqa: SIM115  (closed by wait_job)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=cluster.env(),
                            cwd=REPO)  # fmt: skip


def wait_job(proc: subprocess.Popen, out: Path, timeout: float = 400) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=timeout)
    finally:
        proc.kill()
        proc.stdout and proc.stdout.close()
    return code, Path(f"{out}.log").read_text()


def registered(out: Path) -> tuple[str, int] | None:
    """(stage, step) of the newest checkpoint Ray Train's controller has registered (its
    snapshot file): the one a restart resumes from. A checkpoint directory can exist before
    the controller has taken in its report, and one not taken in is lost with its worker."""
    try:
        snapshot = json.loads((out / "ray_train" / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):
        return None
    latest = (snapshot.get("latest_checkpoint_result") or {}).get("metrics")
    return None if not latest else (latest["stage"], int(latest["step"]))


def flushed_steps(out: Path, stage: str = "root") -> int:
    """The last step of ``stage`` whose metrics the run has written (flushed with each
    checkpoint save)."""
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return max((json.loads(x)["step"] for x in lines if json.loads(x)["stage"] == stage),
               default=0)  # fmt: skip


def wait_for(what: str, check: Callable[[], object], timeout: float = 240,
             proc: subprocess.Popen | None = None) -> object:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job ended (exit {proc.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def train_workers(cluster: Cluster) -> list:
    from ray.util.state import list_actors

    return list_actors(address=cluster.dashboard, detail=True, raise_on_missing_output=False,
                       filters=[("class_name", "=", "RayTrainWorker"),
                                ("state", "=", "ALIVE")])  # fmt: skip


def mlflow_get(cluster: Cluster, path: str, **query: str) -> dict:
    url = f"{cluster.tracking_uri}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def mlflow_steps(cluster: Cluster, run_id: str, key: str) -> list[int]:
    history = mlflow_get(cluster, "metrics/get-history", run_id=run_id, metric_key=key)
    return sorted(m["step"] for m in history.get("metrics", []))


def tracked_runs(cluster: Cluster, out: Path) -> tuple[dict, dict[str, dict]]:
    """The run's parent and its stages' child runs, read through MLflow's REST API."""
    state = json.loads((out / "mlflow.json").read_text())
    parent = mlflow_get(cluster, "runs/get", run_id=state["parent_run_id"])["run"]
    stages = {s: mlflow_get(cluster, "runs/get", run_id=r)["run"]
              for s, r in state["stages"].items()}  # fmt: skip
    return parent, stages


def assert_tracked_without_gaps(cluster: Cluster, out: Path) -> None:
    parent, stages = tracked_runs(cluster, out)
    assert parent["info"]["status"] == "FINISHED"
    assert {s: r["info"]["status"] for s, r in stages.items()} == {"root": "FINISHED",
                                                                   "pose": "FINISHED"}
    for s in stages.values():
        tags = {t["key"]: t["value"] for t in s["data"].get("tags", [])}
        assert tags["mlflow.parentRunId"] == parent["info"]["run_id"]
    # Every step exactly once, whatever was killed in between.
    root_steps = mlflow_steps(cluster, stages["root"]["info"]["run_id"], "loss")
    assert root_steps == list(range(1, ROOT_EPOCHS * STEPS_PER_EPOCH + 1))
    assert mlflow_steps(cluster, stages["pose"]["info"]["run_id"], "loss") == list(
        range(1, STEPS_PER_EPOCH + 1))  # fmt: skip
    params = {p["key"]: p["value"] for p in parent["data"]["params"]}
    assert params["train.checkpoint_every"] == str(CHECKPOINT_EVERY) and params["workers"] == "2"


def resumed_position(log: str) -> tuple[str, int]:
    line = next(x for x in log.splitlines() if x.startswith("resumed from the checkpoint"))
    words = line.replace(",", "").split()
    return words[words.index("stage") + 1], int(words[words.index("step") + 1])


def at_or_after(position: tuple[str, int], reference: tuple[str, int]) -> bool:
    order = {"root": 0, "pose": 1}
    return (order[position[0]], position[1]) >= (order[reference[0]], reference[1])


# -- tests -------------------------------------------------------------------------------------


def test_killed_worker_and_mlflow_outage(cluster, smoke_data, tmp_path):
    """A submitted job: a Train worker is SIGKILLed mid-training while the MLflow server is
    down; the run restarts from its latest checkpoint, finishes, and MLflow, once back, holds
    every step exactly once."""
    out = tmp_path / "run"
    proc = submit(cluster, out, smoke_data)
    first = wait_for("the first checkpoint", lambda: registered(out), proc=proc)
    local.stop(cluster.state, [local.MLFLOW], timeout=10)
    # A flush (next to each checkpoint) meets the dead server before the worker dies.
    seen = wait_for("a checkpoint while MLflow is down",
                    lambda: registered(out) != first and registered(out), proc=proc)  # fmt: skip
    workers = train_workers(cluster)
    assert len(workers) == 2
    os.kill(workers[0].pid, signal.SIGKILL)
    killed_at, trained = time.monotonic(), flushed_steps(out)
    after = wait_for("a checkpoint after the restart",
                     lambda: (r := registered(out)) and not at_or_after(seen, r) and r,
                     proc=proc)  # fmt: skip
    recovery_s = time.monotonic() - killed_at
    local.start_mlflow(cluster.state, port=cluster.mlflow_port)
    code, log = wait_job(proc, out)
    assert code == 0, log[-3000:]
    assert "SUCCEEDED" in log
    resumed = resumed_position(log)
    assert at_or_after(resumed, seen), (resumed, seen)  # at most CHECKPOINT_EVERY steps again
    assert f"MLflow tracking at {cluster.tracking_uri} failed" in log
    assert_tracked_without_gaps(cluster, out)
    print(f"\nworker kill: resumed at {resumed} (registered checkpoint at the kill: {seen}; "
          f"steps written by then: {trained}); next checkpoint {after} {recovery_s:.1f} s "
          f"after the kill")


def test_killed_driver_resumes_with_train_resume(cluster, smoke_data, tmp_path):
    """SIGKILL to the job's driver (the `selfpose3d train` process) fails the job; `train
    --resume` submitted again continues from the last checkpoint."""
    from cluster import jobs

    out = tmp_path / "run"
    proc = submit(cluster, out, smoke_data)
    wait_for("a checkpoint after the first epoch",
             lambda: (registered(out) or ("", 0))[1] > STEPS_PER_EPOCH, proc=proc)
    job_id = next(j["submission_id"] for j in jobs.list_jobs(cluster.dashboard)
                  if j["status"] == "RUNNING" and str(out) in j["entrypoint"])  # fmt: skip
    driver = jobs.client(cluster.dashboard).get_job_info(job_id).driver_info.pid
    os.kill(int(driver), signal.SIGKILL)
    seen, trained = registered(out), flushed_steps(out)
    code, log = wait_job(proc, out)
    assert code == 1 and "FAILED" in log
    code, log = wait_job(submit(cluster, out, smoke_data, "--resume"), out)
    assert code == 0, log[-3000:]
    resumed = resumed_position(log)
    assert resumed == seen, (resumed, seen)
    assert_tracked_without_gaps(cluster, out)
    print(f"\ndriver kill: resumed at {resumed}, the registered checkpoint when it died "
          f"(steps written by then: {trained})")


def test_removed_node_recovers(cluster, smoke_data, tmp_path):
    """The second node, holding one of the two workers, is killed (its raylet and workers,
    SIGKILL): the run restarts on the head from its latest checkpoint and finishes."""
    from ray.util.state import list_nodes

    out = tmp_path / "run"
    proc = submit(cluster, out, smoke_data)
    wait_for("the first checkpoint", lambda: registered(out), proc=proc)
    nodes = {n.node_id: n for n in list_nodes(address=cluster.dashboard, detail=True)}
    on_second = [w for w in train_workers(cluster) if not nodes[w.node_id].is_head_node]
    assert len(on_second) == 1  # SPREAD: one worker per node
    seen = registered(out)
    node = local.load(cluster.state, "ray-node-1")
    os.killpg(node.pid, signal.SIGKILL)
    killed_at, trained = time.monotonic(), flushed_steps(out)
    after = wait_for("a checkpoint after the restart",
                     lambda: (r := registered(out)) and not at_or_after(seen, r) and r,
                     proc=proc)  # fmt: skip
    recovery_s = time.monotonic() - killed_at
    code, log = wait_job(proc, out)
    assert code == 0, log[-3000:]
    assert at_or_after(resumed_position(log), seen)
    # Filtered here, not by the State API: its "total" counts the nodes before the filter
    # and it then reports the filtered answer as truncated.
    dead = [n.node_id for n in list_nodes(address=cluster.dashboard) if n.state == "DEAD"]
    assert dead == [on_second[0].node_id]
    assert_tracked_without_gaps(cluster, out)
    print(f"\nnode removal: resumed at {resumed_position(log)} (registered checkpoint at the "
          f"kill: {seen}; steps written by then: {trained}); next checkpoint {after} "
          f"{recovery_s:.1f} s after the kill")
