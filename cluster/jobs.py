"""Ray Job Submission for ``selfpose3d submit`` and ``selfpose3d jobs``.

A job is one ``selfpose3d`` command run by the cluster's head node as a Ray job: its driver
connects to the cluster (``RAY_ADDRESS`` is set for it by Ray), so ``selfpose3d train`` in a job
uses every node of the cluster. Paths in the command are paths on the cluster: with
``working_dir`` the local folder is uploaded and becomes the job's working directory (relative
``--config configs/cpu.yaml`` then works), while data and run directories belong on storage
every node reaches, given as absolute paths.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 130}
# Never uploaded with --working-dir, besides what .gitignore already excludes.
DEFAULT_EXCLUDES = [".git", ".venv", "runs", "mlruns", "mlartifacts", "*.db", "*.egg-info",
                    "__pycache__"]  # fmt: skip


def job_server_address(address: str | None = None) -> str:
    """The job server's URL: ``address``, else ``$RAY_API_SERVER_ADDRESS`` / ``$RAY_ADDRESS``,
    else :data:`DEFAULT_ADDRESS`; ``host:port`` gets ``http://``."""
    address = (address or os.environ.get("RAY_API_SERVER_ADDRESS")
               or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS)  # fmt: skip
    if address.startswith("ray://"):
        raise ValueError(f"{address}: jobs are submitted to the dashboard's job server, e.g. "
                         f"http://<head>:8265, not to a Ray client address")  # fmt: skip
    if "://" not in address:
        address = f"http://{address}"
    return address.rstrip("/")


def client(address: str | None = None) -> Any:
    """A ``JobSubmissionClient`` for the job server at ``address`` (see
    :func:`job_server_address`); ConnectionError in seconds when nothing answers there."""
    from pipelines.session import check_reachable

    url = job_server_address(address)
    check_reachable(url)
    # The client prefers these variables to its argument: make them agree with it.
    os.environ["RAY_API_SERVER_ADDRESS"] = url
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(url)


def entrypoint(command: Sequence[str]) -> str:
    """The job's shell command: ``selfpose3d`` followed by ``command`` (whose leading
    ``selfpose3d``, if any, is dropped), each word quoted. The command is checked against the
    local ``selfpose3d`` parser first, so a typo fails here and not on the cluster."""
    from selfpose3d.cli import build_parser

    words = list(command)
    if words and words[0] == "selfpose3d":
        words = words[1:]
    if not words:
        raise ValueError("no command to submit: give it after `--`, e.g. "
                         "`selfpose3d submit -- train --config ...`")  # fmt: skip
    if words[0] in ("submit", "jobs"):
        raise ValueError(f"`selfpose3d {words[0]}` runs on this machine, not as a job")
    try:
        build_parser().parse_args(words)
    except SystemExit as e:  # argparse printed why
        if e.code:
            raise ValueError(f"`selfpose3d {shlex.join(words)}` is not a valid command "
                             f"(see the message above)") from None  # fmt: skip
        raise  # --help
    return shlex.join(["selfpose3d", *words])


def runtime_env(
    working_dir: str | Path | None = None,
    env_vars: Mapping[str, str] | None = None,
    pip: Sequence[str] = (),
    excludes: Sequence[str] = (),
) -> dict[str, Any]:
    """A Ray runtime environment: ``working_dir`` uploaded (minus :data:`DEFAULT_EXCLUDES`
    and ``excludes``), environment variables for the job, extra pip packages."""
    env: dict[str, Any] = {}
    if working_dir is not None:
        folder = Path(working_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: working directory to upload does not exist")
        env["working_dir"] = str(folder.resolve())
        env["excludes"] = [*DEFAULT_EXCLUDES, *excludes]
    if env_vars:
        env["env_vars"] = dict(env_vars)
    if pip:
        env["pip"] = list(pip)
    return env


def parse_env(pairs: Sequence[str], option: str = "--env") -> dict[str, str]:
    """``["K=V", ...]`` -> ``{"K": "V"}`` (later pairs win); ValueError naming ``option``
    and the malformed pair."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} {pair!r}: expected NAME=VALUE")
        out[key] = value
    return out


def submit(
    command: Sequence[str],
    *,
    address: str | None = None,
    working_dir: str | Path | None = None,
    env_vars: Mapping[str, str] | None = None,
    pip: Sequence[str] = (),
    submission_id: str | None = None,
    entrypoint_num_cpus: float | None = None,
    entrypoint_num_gpus: float | None = None,
) -> str:
    """Submit the ``selfpose3d`` ``command`` as a Ray job; returns its submission id."""
    words = entrypoint(command)
    env = runtime_env(working_dir, env_vars, pip)
    return client(address).submit_job(
        entrypoint=words, runtime_env=env or None, submission_id=submission_id,
        entrypoint_num_cpus=entrypoint_num_cpus, entrypoint_num_gpus=entrypoint_num_gpus,
    )  # fmt: skip


def follow(job_id: str, *, address: str | None = None, out: TextIO = sys.stdout,
           poll_s: float = 1.0) -> str:  # fmt: skip
    """Stream the job's logs to ``out`` until it ends; returns its final status."""
    jobs = client(address)

    async def stream() -> None:
        async for lines in jobs.tail_job_logs(job_id):
            out.write(lines)
            out.flush()

    asyncio.run(stream())
    # The log stream closes when the driver exits; the status may lag a moment behind.
    while (status := str(jobs.get_job_status(job_id))) not in TERMINAL:
        time.sleep(poll_s)
    return status


def exit_code(status: str) -> int:
    """A shell exit code for a final job status: 0 succeeded, 1 failed, 130 stopped."""
    return EXIT_CODES.get(status.rsplit(".", 1)[-1], 1)


def list_jobs(address: str | None = None) -> list[dict[str, Any]]:
    """Every job of the cluster, newest first: submission id, status, start/end (unix s),
    entrypoint, message."""
    rows = []
    for job in client(address).list_jobs():
        if job.submission_id is None:  # a driver started by hand, not a submitted job
            continue
        rows.append({
            "submission_id": job.submission_id, "status": str(job.status).rsplit(".", 1)[-1],
            "start": (job.start_time or 0) / 1000, "end": (job.end_time or 0) / 1000 or None,
            "entrypoint": job.entrypoint, "message": job.message or "",
        })  # fmt: skip
    return sorted(rows, key=lambda r: r["start"], reverse=True)


def format_jobs(rows: Sequence[Mapping[str, Any]], width: int = 60) -> str:
    """The jobs as a fixed-width table."""
    if not rows:
        return "no jobs"
    lines = [f"{'SUBMISSION ID':<28} {'STATUS':<10} {'STARTED':<19} {'MIN':>6}  ENTRYPOINT"]
    for r in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["start"]))
        minutes = ((r["end"] or time.time()) - r["start"]) / 60
        command = r["entrypoint"] if len(r["entrypoint"]) <= width else (
            r["entrypoint"][: width - 3] + "...")  # fmt: skip
        lines.append(f"{r['submission_id']:<28} {r['status']:<10} {started:<19} "
                     f"{minutes:6.1f}  {command}")  # fmt: skip
    return "\n".join(lines)


def logs(job_id: str, address: str | None = None) -> str:
    """Everything the job has logged so far."""
    return client(address).get_job_logs(job_id)


def stop(job_id: str, address: str | None = None) -> bool:
    """Ask the job to stop (SIGTERM to its driver, SIGKILL later); False if it had ended."""
    return bool(client(address).stop_job(job_id))
