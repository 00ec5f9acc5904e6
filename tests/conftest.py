"""Shared fixtures. One Ray instance per pytest session, started only by tests that ask for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
if not FIXTURES.is_dir():  # a clone elsewhere: allow pointing at the fixtures explicitly
    FIXTURES = Path(os.environ.get("SELFPOSE3D_FIXTURES", FIXTURES))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"real dataset fixtures not found at {FIXTURES} (set SELFPOSE3D_FIXTURES)")
    return FIXTURES


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by every Ray-level test of the session."""
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True,
             log_to_driver=False, configure_logging=False)  # fmt: skip
    try:
        yield ray
    finally:
        ray.shutdown()
