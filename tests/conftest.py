"""Shared fixtures. One Ray instance per pytest session, started only by tests that ask for it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

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

    # More logical CPUs than cores: a 2-worker Train run holds 2 and its Ray Data reads need more.
    ray.init(num_cpus=4, include_dashboard=False, ignore_reinit_error=True,
             log_to_driver=False, configure_logging=False)  # fmt: skip
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
