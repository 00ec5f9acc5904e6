"""Connecting to Ray: a running cluster by address, or a local instance for this process."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Raise ConnectionError naming ``address`` unless its host:port accepts a connection.

    ``ray.init`` retries an unreachable address for a long time before failing; a user who
    mistyped an address should hear about it in seconds.
    """
    if address in ("auto", "local") or not address:
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConnectionError(f"Ray address {address!r}: expected host:port, ray://host:port "
                              f"or 'auto'")  # fmt: skip
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address!r} ({e}); is the head "
                              f"node running (`ray start --head`) and the address right?") from e


@contextmanager
def ray_session(
    address: str | None = None,
    num_cpus: int | None = None,
    quiet_data: bool = True,
    dashboard: bool = False,
) -> Iterator[Any]:
    """Use the running Ray instance, connect to ``address`` (default: ``$RAY_ADDRESS``), or
    start a local instance (``num_cpus``; ``dashboard`` on 127.0.0.1, which Ray Train's
    clean-up of finished runs queries); only what this call started is shut down."""
    import ray
    import ray.data  # noqa: F401  (configures its loggers on import; adjust them after)

    if address:  # named explicitly: it must answer, even if this process has a Ray already
        check_reachable(address)
    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            check_reachable(address)
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            # "local": a new instance, even where `ray start` left a cluster address file.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard,
                     dashboard_host="127.0.0.1", logging_level=logging.WARNING)  # fmt: skip
    # Ray Data logs every operator's state at INFO; our summaries say what a user needs.
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    if quiet_data:
        data_logger.setLevel(logging.WARNING)
    try:
        yield ray
    finally:
        data_logger.setLevel(saved_level)
        if started:
            ray.shutdown()


@contextmanager
def data_progress_bars(enabled: bool) -> Iterator[None]:
    """Ray Data's progress bars on or off for the jobs run inside (the setting is global)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = ctx.enable_progress_bars
    ctx.enable_progress_bars = enabled
    try:
        yield
    finally:
        ctx.enable_progress_bars = saved


def map_tasks(items: list[dict[str, Any]], fn: Any, fn_kwargs: dict[str, Any], *,
              address: str | None = None, num_cpus: int | None = None,
              progress: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """``fn(item, **fn_kwargs)`` for every item as a Ray Data job, one task (1 CPU) per item,
    at most ``num_cpus`` (default: the cluster's CPUs) at a time; returns the results.

    Each task does its own reading and writing, so bulk data (images) never crosses the
    object store; only the items and the small results do."""
    with ray_session(address, num_cpus=num_cpus) as ray:
        from ray.data import TaskPoolStrategy

        workers = num_cpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
        with data_progress_bars(progress):
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map(fn, num_cpus=1, fn_kwargs=fn_kwargs,
                        compute=TaskPoolStrategy(size=min(workers, len(items))))  # fmt: skip
            return ds.take_all()
