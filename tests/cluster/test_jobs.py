"""Job submission and the local-cluster scripts without a cluster: what is refused, and how."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import jobs, local

REPO = Path(__file__).resolve().parents[2]
SELFPOSE3D = str(Path(sys.executable).with_name("selfpose3d"))


def test_entrypoint_is_a_checked_quoted_selfpose3d_command():
    words = ["train", "--config", "configs/cpu.yaml", "--data", "/shared/my data", "--out", "/o"]
    line = jobs.entrypoint(words)
    assert shlex.split(line) == ["selfpose3d", *words]  # the space survives the shell
    assert jobs.entrypoint(["selfpose3d", *words]) == line  # a leading selfpose3d is optional
    with pytest.raises(ValueError, match="not a valid command"):
        jobs.entrypoint(["train", "--data", "/d", "--out", "/o", "--wrokers", "2"])
    with pytest.raises(ValueError, match="runs on this machine"):
        jobs.entrypoint(["submit", "--", "train"])
    with pytest.raises(ValueError, match="no command to submit"):
        jobs.entrypoint([])


def test_addresses_env_and_runtime_env(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    assert jobs.job_server_address() == "http://127.0.0.1:8265"
    assert jobs.job_server_address("10.0.0.5:8265") == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265/")
    assert jobs.job_server_address() == "http://head:8265"
    assert jobs.job_server_address("http://other:8265") == "http://other:8265"  # flag wins
    with pytest.raises(ValueError, match="not to a Ray client address"):
        jobs.job_server_address("ray://head:10001")

    assert jobs.parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        jobs.parse_env(["NOVALUE"])

    env = jobs.runtime_env(tmp_path, {"K": "V"}, ["pkg==1"])
    assert env["working_dir"] == str(tmp_path.resolve())
    assert {".venv", "runs", ".git"} <= set(env["excludes"])
    assert env["env_vars"] == {"K": "V"} and env["pip"] == ["pkg==1"]
    assert jobs.runtime_env() == {}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        jobs.runtime_env(tmp_path / "missing")
    assert [jobs.exit_code(s) for s in ("SUCCEEDED", "FAILED", "STOPPED", "JobStatus.FAILED")] \
        == [0, 1, 130, 1]  # fmt: skip


def free_port() -> int:
    return local.free_port()


def test_cli_errors_are_one_line_and_fast():
    nowhere = f"http://127.0.0.1:{free_port()}"
    cases = [
        (["submit", "--address", nowhere, "--", "train", "--data", "d", "--out", "o"],
         "cannot reach the Ray cluster"),
        (["submit", "--address", nowhere, "--", "evaluate", "--bogus"], "not a valid command"),
        (["submit", "--env", "X", "--", "config"], "expected NAME=VALUE"),
        (["jobs", "list", "--address", nowhere], "cannot reach the Ray cluster"),
        (["jobs", "logs", "--address", nowhere], "needs a submission id"),
    ]  # fmt: skip
    for argv, message in cases:
        done = subprocess.run([SELFPOSE3D, *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (argv, done.stderr)
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"selfpose3d {argv[0]}: error:") and message in last, last


def test_local_cluster_refusals(tmp_path):
    with pytest.raises(local.ClusterError, match="no running Ray head"):
        local.add_node(tmp_path)
    with pytest.raises(local.ClusterError, match="auth mode"):
        local.start_head(tmp_path, auth_mode="none")
    with pytest.raises(local.ClusterError, match="no service 'ray-node-7'"):
        local.stop(tmp_path, ["ray-node-7"])
    assert local.stop(tmp_path) == [] and local.client_env(tmp_path) == {}


def test_local_stop_stops_only_its_own_process_group(tmp_path):
    """`down` signals the recorded process group, not every Ray process of the machine."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 start_new_session=True)  # fmt: skip
    try:
        service = local._launch(tmp_path, "sleeper", [sys.executable, "-c",
                                "import subprocess, sys, time; subprocess.Popen([sys.executable, "
                                "'-c', 'import time; time.sleep(60)']); time.sleep(60)"],
                                {}, {})  # fmt: skip
        assert local.load(tmp_path, "sleeper").pid == service.pid
        assert local.stop(tmp_path, timeout=5) == ["sleeper"]
        assert not service.alive() and local.load(tmp_path, "sleeper") is None
        out = subprocess.run(["pgrep", "-g", str(service.pid)], capture_output=True, text=True)
        assert out.stdout.strip() == ""  # its child went with it
        assert bystander.poll() is None  # the other process lives
    finally:
        bystander.kill()
        bystander.wait()


UNSAFE = [
    (re.compile(r"\bpickle\.loads?\("), "pickle.load"),
    (re.compile(r"\bcloudpickle\.loads?\("), "cloudpickle.load"),
    (re.compile(r"\byaml\.load\((?![^)]*SafeLoader)"), "yaml.load without SafeLoader"),
    (re.compile(r"\bnp\.load\([^)]*allow_pickle=True"), "np.load(allow_pickle=True)"),
]


def test_nothing_is_loaded_with_unrestricted_pickle():
    """Checkpoints, configs and data files are read without executing code: torch.load always
    with weights_only=True, YAML with the safe loader, no pickle."""
    sources = [p for d in ("selfpose3d", "pipelines", "tune", "cluster", "benchmarks")
               for p in (REPO / d).rglob("*.py")]  # fmt: skip
    assert len(sources) > 20
    problems = []
    torch_loads = 0
    for path in sources:
        text = path.read_text()
        problems += [f"{path}: {what}" for pattern, what in UNSAFE if pattern.search(text)]
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"):  # fmt: skip
                torch_loads += 1
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                           and k.value.value is True for k in node.keywords)  # fmt: skip
                if not safe:
                    problems.append(f"{path}:{node.lineno}: torch.load without weights_only=True")
    assert torch_loads >= 1  # the scan does see the checkpoint loader
    assert problems == []
