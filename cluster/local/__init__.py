"""A local Ray cluster and MLflow server on this machine, bound to 127.0.0.1.

``python -m cluster.local up`` (or ``cluster/local/up.sh``) starts a Ray head node, optionally
extra worker nodes on the same machine, and an MLflow tracking server (SQLite backend store and
an artifact directory, artifacts served over HTTP so that every node can upload them). ``down``
stops what ``up`` started, and nothing else: unlike ``ray stop``, which kills every Ray process
of the machine, each service is a process group recorded in the state directory
(``runs/cluster`` by default), stopped by its own id.

Every service binds 127.0.0.1 unless ``--host`` says otherwise. Ray's token authentication
(``RAY_AUTH_MODE``) is set explicitly for the head, the nodes and the commands printed for the
clients, because a head and a client whose modes differ refuse each other.

State directory: ``<name>.json`` per service (pid, command, addresses) and ``<name>.log``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_STATE_DIR = Path("runs/cluster")
HEAD = "ray-head"
MLFLOW = "mlflow"
AUTH_MODES = ("token", "disabled")


class ClusterError(RuntimeError):
    """A service could not be started or stopped; the message says which and why."""


@dataclass
class Service:
    """One started process group: what it is and how to reach it."""

    name: str
    pid: int
    command: list[str]
    log: str
    addresses: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return _pid_alive(self.pid)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (exited, not yet reaped) still answers signal 0.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _bin(name: str) -> str:
    """An executable of this Python environment (``ray``, ``mlflow``), else from PATH."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise ClusterError(f"`{name}` is not installed in this environment")
    return found


def _env(auth_mode: str) -> dict[str, str]:
    if auth_mode not in AUTH_MODES:
        raise ClusterError(f"auth mode must be one of {AUTH_MODES}, got {auth_mode!r}")
    env = dict(os.environ, RAY_AUTH_MODE=auth_mode)
    # Jobs run `selfpose3d ...` through the node's PATH: put this environment's scripts first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _state_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.json"


def load(state_dir: Path | str, name: str) -> Service | None:
    """The recorded service ``name``; None when none was started."""
    path = _state_file(Path(state_dir), name)
    if not path.is_file():
        return None
    return Service(**json.loads(path.read_text()))


def services(state_dir: Path | str) -> list[Service]:
    """Every recorded service of ``state_dir``, the head first."""
    state_dir = Path(state_dir)
    found = [load(state_dir, p.stem) for p in sorted(state_dir.glob("*.json"))]
    return sorted((s for s in found if s), key=lambda s: (s.name != HEAD, s.name))


def _record(state_dir: Path, service: Service) -> None:
    path = _state_file(state_dir, service.name)
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=f".{service.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(service), f, indent=1)
    os.replace(tmp, path)


def _launch(state_dir: Path, name: str, command: list[str], env: dict[str, str],
            addresses: dict[str, str]) -> Service:  # fmt: skip
    existing = load(state_dir, name)
    if existing is not None and existing.alive():
        raise ClusterError(f"{name} is already running (pid {existing.pid}); stop it first: "
                           f"python -m cluster.local --state-dir {state_dir} down")  # fmt: skip
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / f"{name}.log"
    with open(log, "ab") as out:
        # Its own session: stopping it signals the whole group and nothing else.
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    service = Service(name, proc.pid, command, str(log), addresses)
    _record(state_dir, service)
    return service


def _wait(service: Service, ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise ClusterError(f"{service.name} exited while starting; see {service.log}:\n"
                               f"{_tail(service.log)}")  # fmt: skip
        if ready():
            return
        time.sleep(0.5)
    raise ClusterError(f"{service.name}: {what} not ready after {timeout:.0f} s; see "
                       f"{service.log}:\n{_tail(service.log)}")  # fmt: skip


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as r:
            return r.status == 200
    except urllib.error.HTTPError as e:
        return e.code == 401  # up, behind token authentication
    except OSError:
        return False


def _node_ports(host: str) -> list[str]:
    """Ports a node would otherwise take at fixed defaults (the dashboard agent's 52365, the
    client server's 10001, ...): a second node, or a second cluster, on the same machine
    would collide with the first."""
    return [
        f"--node-manager-port={free_port(host)}", f"--object-manager-port={free_port(host)}",
        f"--dashboard-agent-listen-port={free_port(host)}",
        f"--dashboard-agent-grpc-port={free_port(host)}",
        f"--runtime-env-agent-port={free_port(host)}", f"--metrics-export-port={free_port(host)}",
    ]  # fmt: skip


def start_head(
    state_dir: Path | str = DEFAULT_STATE_DIR,
    *,
    port: int = 6379,
    dashboard_port: int = 8265,
    client_port: int = 10001,
    num_cpus: int | None = None,
    host: str = "127.0.0.1",
    auth_mode: str = "token",
    temp_dir: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90.0,
) -> Service:
    """Start a Ray head node (``ray start --head --block``) and wait until its dashboard (the
    job server) answers. Addresses: ``gcs`` (host:port, for ``ray start --address`` and
    ``ray.init``) and ``dashboard`` (http://host:dashboard_port, for job submission).
    ``env``: extra environment of the node's processes, which its jobs inherit (e.g.
    ``MLFLOW_TRACKING_URI``)."""
    state_dir = Path(state_dir)
    command = [
        _bin("ray"), "start", "--head", "--block", "--disable-usage-stats",
        f"--node-ip-address={host}", f"--port={port}", f"--dashboard-host={host}",
        f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={client_port}",
        *_node_ports(host),
    ]  # fmt: skip
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    if temp_dir is not None:
        command.append(f"--temp-dir={temp_dir}")
    addresses = {"gcs": f"{host}:{port}", "dashboard": f"http://{host}:{dashboard_port}",
                 "auth_mode": auth_mode}  # fmt: skip
    if auth_mode == "token":
        _ensure_token()
    service = _launch(state_dir, HEAD, command, _env(auth_mode) | dict(env or {}), addresses)
    _wait(service, lambda: _port_open(host, port)
          and _http_ok(f"http://{host}:{dashboard_port}/api/version"), timeout,
          "the GCS and the dashboard")  # fmt: skip
    return service


def add_node(
    state_dir: Path | str = DEFAULT_STATE_DIR,
    *,
    num_cpus: int = 1,
    resources: dict[str, float] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    attempts: int = 2,
) -> Service:
    """Start one more Ray node on this machine, joined to the recorded head; named
    ``ray-node-<n>``. Waits until the cluster counts it as alive; a node that has not
    registered after ``timeout`` s is killed and started again with fresh ports (one that
    another process took meanwhile is the likely cause), up to ``attempts`` times."""
    state_dir = Path(state_dir)
    head = load(state_dir, HEAD)
    if head is None or not head.alive():
        raise ClusterError(f"no running Ray head recorded in {state_dir}; start one first")
    host = head.addresses["gcs"].rsplit(":", 1)[0]
    n = 1
    while load(state_dir, f"ray-node-{n}") is not None:
        n += 1
    name = f"ray-node-{n}"
    auth_mode = head.addresses.get("auth_mode", "token")
    before = _wait_value(lambda: _alive_nodes(head), timeout, "the head's State API")
    failures: list[str] = []
    for _ in range(max(attempts, 1)):
        command = [
            _bin("ray"), "start", "--block", "--disable-usage-stats",
            f"--address={head.addresses['gcs']}", f"--node-ip-address={host}",
            f"--num-cpus={num_cpus}", *_node_ports(host),
        ]  # fmt: skip
        if resources:
            command.append(f"--resources={json.dumps(resources)}")
        service = _launch(state_dir, name, command, _env(auth_mode) | dict(env or {}),
                          {"gcs": head.addresses["gcs"], "auth_mode": auth_mode})  # fmt: skip
        try:
            _wait(service, lambda: _alive_nodes(head) > before, timeout, "the node")
            return service
        except ClusterError as e:
            failures.append(str(e))
            stop(state_dir, [name], timeout=10)
    raise ClusterError(f"{name} did not join after {len(failures)} attempt(s):\n"
                       + "\n".join(failures))  # fmt: skip


def _wait_value(value: Callable[[], int], timeout: float, what: str) -> int:
    """The first non-negative ``value()`` within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while (found := value()) < 0:
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} did not answer within {timeout:.0f} s")
        time.sleep(0.5)
    return found


def _ensure_token() -> None:
    """Token authentication needs a token: ``ray start`` does not make one, so create
    ``~/.ray/auth_token`` (Ray's default place) unless a token is already configured."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    if (Path.home() / ".ray" / "auth_token").is_file():
        return
    done = subprocess.run([_bin("ray"), "get-auth-token", "--generate"], capture_output=True,
                          text=True, env=_env("token"))  # fmt: skip
    if done.returncode != 0:
        raise ClusterError(f"could not create a Ray auth token: {done.stderr.strip()}")


def _alive_nodes(head: Service) -> int:
    """How many nodes the head counts as alive (Ray's State API over the dashboard)."""
    os.environ.setdefault("RAY_AUTH_MODE", head.addresses.get("auth_mode", "token"))
    from ray.exceptions import AuthenticationError
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(address=head.addresses["dashboard"], raise_on_missing_output=False,
                           filters=[("state", "=", "ALIVE")])  # fmt: skip
    except AuthenticationError as e:
        # Ray fixes a process's mode when it is first imported: waiting will not help.
        raise ClusterError(f"the head refuses this process's State API calls ({e}); set "
                           f"RAY_AUTH_MODE={head.addresses.get('auth_mode', 'token')} before "
                           f"Ray is first imported") from e  # fmt: skip
    except Exception:  # the State API is not up yet
        return -1
    return len(nodes)


def start_mlflow(
    state_dir: Path | str = DEFAULT_STATE_DIR,
    *,
    port: int = 5000,
    host: str = "127.0.0.1",
    data_dir: Path | str | None = None,
    timeout: float = 90.0,
) -> Service:
    """Start ``mlflow server``: SQLite backend ``<data_dir>/mlflow.db``, artifacts in
    ``<data_dir>/artifacts`` served by the server (clients upload over HTTP, so workers on
    other nodes need no access to the directory); ``data_dir`` defaults to
    ``<state_dir>/mlflow``. Waits for ``/health``; address ``tracking_uri``."""
    state_dir = Path(state_dir)
    data = Path(data_dir if data_dir is not None else state_dir / "mlflow").absolute()
    data.mkdir(parents=True, exist_ok=True)
    command = [
        _bin("mlflow"), "server", "--host", host, "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
        "--artifacts-destination", str(data / "artifacts"), "--serve-artifacts",
    ]  # fmt: skip
    url = f"http://{host}:{port}"
    service = _launch(state_dir, MLFLOW, command, dict(os.environ), {"tracking_uri": url})
    _wait(service, lambda: _http_ok(f"{url}/health"), timeout, "the tracking server")
    return service


def stop(state_dir: Path | str = DEFAULT_STATE_DIR, names: Sequence[str] | None = None,
         timeout: float = 30.0) -> list[str]:  # fmt: skip
    """Stop the recorded services ``names`` (default: all, nodes before the head): SIGTERM to
    the process group, SIGKILL after ``timeout`` s. Returns the names stopped."""
    state_dir = Path(state_dir)
    todo = services(state_dir)
    if names is not None:
        unknown = sorted(set(names) - {s.name for s in todo})
        if unknown:
            raise ClusterError(f"no service {unknown[0]!r} recorded in {state_dir}")
        todo = [s for s in todo if s.name in set(names)]
    todo.sort(key=lambda s: s.name == HEAD)  # the head last: nodes drain into it
    stopped = []
    for service in todo:
        _signal_group(service.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while service.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(service.pid, signal.SIGKILL)  # leftovers of the group, if any
        _state_file(state_dir, service.name).unlink(missing_ok=True)
        stopped.append(service.name)
    return stopped


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def client_env(state_dir: Path | str = DEFAULT_STATE_DIR) -> dict[str, str]:
    """The environment a client of the recorded services needs: ``RAY_ADDRESS`` (the job
    server), ``RAY_AUTH_MODE`` and ``MLFLOW_TRACKING_URI`` (when an MLflow server runs)."""
    env = {}
    head = load(state_dir, HEAD)
    if head is not None:
        env["RAY_ADDRESS"] = head.addresses["dashboard"]
        env["RAY_AUTH_MODE"] = head.addresses.get("auth_mode", "token")
    mlflow = load(state_dir, MLFLOW)
    if mlflow is not None:
        env["MLFLOW_TRACKING_URI"] = mlflow.addresses["tracking_uri"]
    return env
