"""Shared fixtures. One Ray instance per pytest session, started only by tests that ask for it."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Ray reads its authentication mode once, when first imported, and every Ray the tests start
# or reach (the session's local instance, subprocesses, the cluster drill's head and nodes)
# must agree with it: token, Ray's default for a new local cluster, set before any import.
os.environ["RAY_AUTH_MODE"] = "token"

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
if not FIXTURES.is_dir():  # a clone elsewhere: allow pointing at the fixtures explicitly
    FIXTURES = Path(os.environ.get("SELFPOSE3D_FIXTURES", FIXTURES))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"real dataset fixtures not found at {FIXTURES} (set SELFPOSE3D_FIXTURES)")
    return FIXTURES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by every Ray-level test of the session."""
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray

    # More logical CPUs than cores: a Train run holds 1 per worker, its Ray Data reads need more,
    # and a sweep trial holds 1 besides (2 trials at once).
    # The dashboard (127.0.0.1, a free port) serves the State API that Ray Train's clean-up of
    # a run Tune stopped early queries; without it the next trial waits for resources.
    ray.init(num_cpus=6, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=free_port(), ignore_reinit_error=True, log_to_driver=False,
             configure_logging=False)  # fmt: skip
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """The smoke preset's synthetic dataset as Parquet: <dir>/train (24), <dir>/test (12)."""
    root = tmp_path_factory.mktemp("smoke")
    from pipelines.ingest import ingest
    from selfpose3d.config import load_config
    from selfpose3d.data.synthetic import generate

    cfg = load_config(REPO / "configs" / "smoke.yaml")
    generate(dataclasses.replace(cfg.synth, workers=1), root / "raw", progress=False)
    ingest(root / "raw", root / "parquet", cfg.data, engine="plain", progress=False)
    return root / "parquet"
