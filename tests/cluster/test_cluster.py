"""A real local cluster: a Ray head started with `ray start --head`, a second Ray node, a real
`mlflow server`; `selfpose3d train` submitted as a Ray job, and faults injected into that one
run by killing real processes, one after the other: the MLflow server, a Train worker, the node
holding a worker, the job's driver.

Every service binds 127.0.0.1 on free ports, runs in its own process group and is stopped in
the fixture's finaliser, whatever the test did.
"""

from __future__ import annotations

import contextlib
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
ROOT_EPOCHS = 3  # 24 root + 8 pose steps: the three faults land by about root step 18
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
    the controller has taken in its report, and one not taken in is lost with its worker.
    None before the first registration."""
    path = out / "ray_train" / "checkpoint_manager_snapshot.json"
    # The controller rewrites the snapshot in place (truncate, then write): a read can
    # catch it empty or half-written, which is not "no checkpoint yet".
    for _ in range(100):
        try:
            snapshot = json.loads(path.read_text())
            break
        except FileNotFoundError:
            return None
        except ValueError:
            time.sleep(0.05)
    else:
        raise AssertionError(f"{path} stayed unreadable for 5 s")
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


def resumed_positions(log: str) -> list[tuple[str, int]]:
    """(stage, step) of every "resuming from the checkpoint" line, in order: one per start of
    a worker group from a checkpoint. A job's log can repeat a worker's line; the worker's
    pid tells the repeats apart from a new start."""
    found: dict[tuple[str, str, int], None] = {}
    for line in log.splitlines():
        if "resuming from the checkpoint at stage" in line:
            pid = line.split("pid=", 1)[1].split(")", 1)[0] if "pid=" in line else ""
            words = line[line.index("resuming"):].replace(",", "").split()
            found[pid, words[words.index("stage") + 1], int(words[words.index("step") + 1])] = None
    return [(stage, step) for _, stage, step in found]


def at_or_after(position: tuple[str, int], reference: tuple[str, int]) -> bool:
    order = {"root": 0, "pose": 1}
    return (order[position[0]], position[1]) >= (order[reference[0]], reference[1])


def restarted_checkpoint(cluster: Cluster, out: Path, seen: tuple[str, int],
                         before: set[int], proc: subprocess.Popen) -> tuple[str, int]:  # fmt: skip
    """The first checkpoint newer than ``seen`` registered by a new worker group (no pid of
    ``before``): the proof that the run restarted and went on."""
    wait_for("a new worker group", lambda: (pids := {w.pid for w in train_workers(cluster)})
             and len(pids) == 2 and not pids & before, proc=proc)  # fmt: skip
    return wait_for("a checkpoint after the restart",
                    lambda: (r := registered(out)) and not at_or_after(seen, r) and r,
                    proc=proc)  # fmt: skip


# -- the drill ---------------------------------------------------------------------------------


def test_one_run_survives_every_fault(cluster, smoke_data, tmp_path):
    """One submitted run (2 workers, one per node), and in turn:

    1. the MLflow server stops, then a Train worker is SIGKILLed: the run restarts from its
       latest checkpoint, warns about MLflow, and MLflow gets the steps once it is back;
    2. the second node, holding one worker, is killed (its raylet and workers, SIGKILL): the
       run restarts on the head from its latest checkpoint;
    3. the job's driver is SIGKILLed: the job fails; `train --resume`, submitted again,
       continues from the last checkpoint and finishes.

    Each restart resumes at or after the checkpoint registered when the fault hit (so at most
    CHECKPOINT_EVERY steps are trained again), and MLflow ends with every step exactly once.
    """
    from ray.util.state import list_nodes

    from cluster import jobs

    out = tmp_path / "run"
    proc = submit(cluster, out, smoke_data)
    observed = []

    # 1. MLflow outage, then a worker killed.
    first = wait_for("the first checkpoint", lambda: registered(out), proc=proc)
    local.stop(cluster.state, [local.MLFLOW], timeout=10)
    # A flush (next to each checkpoint) meets the dead server before the worker dies.
    seen = wait_for("a checkpoint while MLflow is down",
                    lambda: registered(out) != first and registered(out), proc=proc)  # fmt: skip
    workers = train_workers(cluster)
    assert len(workers) == 2
    os.kill(workers[0].pid, signal.SIGKILL)
    killed_at, trained = time.monotonic(), flushed_steps(out)
    after = restarted_checkpoint(cluster, out, seen, {w.pid for w in workers}, proc)
    observed.append(("worker SIGKILL (MLflow down)", seen, trained, after,
                     time.monotonic() - killed_at))  # fmt: skip
    local.start_mlflow(cluster.state, port=cluster.mlflow_port)

    # 2. The node holding a worker removed.
    nodes = {n.node_id: n for n in list_nodes(address=cluster.dashboard, detail=True)}
    workers = train_workers(cluster)
    on_second = [w for w in workers if not nodes[w.node_id].is_head_node]
    assert len(workers) == 2 and len(on_second) == 1  # SPREAD: one worker per node
    seen = wait_for("a registered checkpoint", lambda: registered(out), proc=proc)
    # The machine goes away: its Ray processes (the node's process group) and the worker
    # it ran, which Ray puts in a process group of its own.
    os.killpg(local.load(cluster.state, "ray-node-1").pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(on_second[0].pid, signal.SIGKILL)
    killed_at, trained = time.monotonic(), flushed_steps(out)
    after = restarted_checkpoint(cluster, out, seen, {w.pid for w in workers}, proc)
    observed.append(("second node SIGKILL", seen, trained, after, time.monotonic() - killed_at))

    # 3. The driver killed, then `train --resume` submitted.
    job_id = next(j["submission_id"] for j in jobs.list_jobs(cluster.dashboard)
                  if j["status"] == "RUNNING" and str(out) in j["entrypoint"])  # fmt: skip
    driver = jobs.client(cluster.dashboard).get_job_info(job_id).driver_info.pid
    os.kill(int(driver), signal.SIGKILL)
    killed_at = time.monotonic()
    code, log = wait_job(proc, out)
    seen, trained = registered(out), flushed_steps(out)
    assert code == 1 and "FAILED" in log, log[-3000:]
    assert f"MLflow tracking at {cluster.tracking_uri} failed" in log
    restarts = resumed_positions(log)
    assert len(restarts) == 2, restarts
    for (what, at_fault, *_), resumed in zip(observed, restarts, strict=True):
        assert at_or_after(resumed, at_fault), (what, resumed, at_fault)

    code, log = wait_job(submit(cluster, out, smoke_data, "--resume"), out)
    assert code == 0 and "SUCCEEDED" in log, log[-3000:]
    assert resumed_positions(log) == [seen], (resumed_positions(log), seen)
    finished_s = time.monotonic() - killed_at
    assert_tracked_without_gaps(cluster, out)
    # The run restarted as soon as its worker died; the GCS marks the node DEAD once its
    # health checks have failed. Filtered here, not by the State API: its "total" counts the
    # nodes before the filter and it then reports the filtered answer as truncated.
    dead = wait_for("the second node marked DEAD", lambda: [
        n.node_id for n in list_nodes(address=cluster.dashboard) if n.state == "DEAD"])
    assert dead == [on_second[0].node_id]

    print()
    for (what, at_fault, written, next_checkpoint, seconds), resumed in zip(
            observed, restarts, strict=True):  # fmt: skip
        print(f"{what}: registered checkpoint at the fault {at_fault}, steps written by then "
              f"{written}; resumed at {resumed}; next checkpoint {next_checkpoint} "
              f"{seconds:.1f} s after the fault")
    print(f"driver SIGKILL: registered checkpoint {seen}, steps written {trained}; "
          f"`train --resume` resumed at {seen}; finished {finished_s:.1f} s after the kill")
