"""MLflow logging behind one small interface: :class:`Tracker`.

Contract
--------
Where. :func:`resolve_tracking_uri`: an explicit ``tracking_uri`` argument, else the
``MLFLOW_TRACKING_URI`` environment variable, else an SQLite store ``mlflow.db`` in the working
directory, always as an absolute path (``sqlite:////abs/cwd/mlflow.db``): Tune trials and Train
workers change directory, so a relative store would split the runs. Relative ``sqlite:///``
URIs are made absolute the same way. :func:`ui_command` says how to open the UI.

What. One *parent* run per ``selfpose3d train`` invocation, holding the resolved config as
params (:func:`flatten_params`: dotted keys, lists as JSON, values clipped to MLflow's length
limit). One *child* run per training stage, nested under the parent with the
``mlflow.parentRunId`` tag. Metrics are any ``{name: float}`` with an integer step; they go to
the open stage's child run (or the parent when no stage is open, or with
:meth:`Tracker.log_parent_metrics`). Artifacts are files uploaded at once (not buffered) to the
same run as metrics.

Who. Rank 0 only: ``enabled=False`` makes every method a no-op that writes nothing and never
imports MLflow.

Run directory. ``RUN/metrics.jsonl`` gets every flushed metric record, one JSON object a line
(``{"stage": str | null, "step": int, "time": unix s, "metrics": {name: float | null}}``,
``stage`` null = parent), whether or not MLflow works: the run directory is self-contained.
``RUN/mlflow.json`` (written atomically) holds the tracking URI, experiment, parent run id and
the child run id of every stage.

Flush and resume. :meth:`Tracker.log_metrics` only buffers; :meth:`Tracker.flush` appends the
buffer to metrics.jsonl and then sends it to MLflow. The trainer flushes next to every checkpoint
save and at the end, so what was written is what the checkpoint covers; after a crash the
unflushed records are lost and the resumed run produces them again. A new Tracker on a run
directory whose mlflow.json names the same tracking URI and experiment reopens the same parent
run and, in :meth:`Tracker.start_stage`, the same child run (status back to RUNNING; a killed
process leaves its runs RUNNING). Two rules keep the MLflow history free of gaps and
duplicates even when a crash falls between a flush and a checkpoint save:

1. a value whose step is at or below the last flushed step of the same (stage, metric) is
   dropped (a resumed run re-producing steps it already wrote); so flushing *just before* each
   checkpoint save can never leave a gap, flushing just after leaves a window of a few
   microseconds (between the checkpoint's rename and the flush) in which a kill loses steps;
2. when a run is opened, the records of metrics.jsonl that MLflow lacks (step above MLflow's last
   step of that metric) are sent first, so an MLflow outage or a kill between the two writes of a
   flush is repaired on the next start.

Failures. If MLflow raises anywhere (unreachable server, locked database, missing package), one
``RuntimeWarning`` names the URI and the error, and training and metrics.jsonl carry on without
MLflow. At most every ``_RETRY_EVERY_S`` seconds a flush (and the final :meth:`Tracker.finish`)
tries MLflow again; once it answers, the runs are opened again (or created, for stages that
started during the outage), the records of metrics.jsonl it lacks are sent (rule 2), the stages
that ended meanwhile get their status, and one warning says so. A server that is still away at
the end leaves the records in metrics.jsonl; the next Tracker on the run directory (``train
--resume``, the test-metrics logging of ``train``) sends them. For http(s) URIs the server's
``/health`` is probed with a 2 s timeout before the first call, and MLflow's HTTP retry settings
are shortened for this process unless already set (``_HTTP_ENV_DEFAULTS``), so a dead server
costs seconds, not minutes.

Non-finite values (NaN, inf) are not sent to MLflow (inf would be stored as 1.8e308 and flatten
every chart); metrics.jsonl stores them as null; a warning is logged once per metric name.

Mistakes in the calling code (a non-numeric value, a metric name MLflow would reject, a missing
artifact file, a call out of order) raise ValueError / FileNotFoundError / RuntimeError.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import operator
import os
import posixpath
import re
import shlex
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from selfpose3d.io import atomic_write_json

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
STATE_FILE = "mlflow.json"
MAX_PARAM_VALUE_LENGTH = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
_MAX_METRICS_PER_BATCH = 1000  # mlflow.utils.validation.MAX_METRICS_PER_BATCH
_MAX_PARAMS_PER_BATCH = 100  # mlflow.utils.validation.MAX_PARAMS_TAGS_PER_BATCH
_STATUSES = ("FINISHED", "FAILED", "KILLED")
_METRIC_NAME = re.compile(r"[\w\-. /:]+")  # MLflow's allowed characters
_PROBE_TIMEOUT_S = 2.0
_RETRY_EVERY_S = 10.0  # after a failure, how often a flush tries MLflow again
# MLflow's defaults (7 retries with backoff factor 2, 120 s timeout) retry a dead server for
# minutes. A connection refused now costs 1 + 2 + 4 s; a hung server 4 x 30 s.
_HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def resolve_tracking_uri(uri: str | None = None, cwd: Path | str | None = None) -> str:
    """The tracking URI: ``uri`` > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///<abs cwd>/mlflow.db``.

    A relative SQLite path (``sqlite:///mlflow.db``) is made absolute against ``cwd`` (default:
    the working directory); other URIs are returned unchanged.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri is not None and not uri.startswith("sqlite:///"):
        return uri
    base = Path(cwd).absolute() if cwd is not None else Path.cwd()
    if uri is None:
        return f"sqlite:///{base / 'mlflow.db'}"
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        rest = uri[len(prefix) :]
        if rest and not rest.startswith(("/", ":memory:")):
            return f"{prefix}{base}/{rest}"
    return uri


def ui_command(uri: str, port: int = 5000) -> str:
    """How to look at the runs: the ``mlflow ui`` command for a local store, or the server's
    URL (to open in a browser) for an http(s) tracking server."""
    if uri.startswith(("http://", "https://")):
        return uri
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)} --host 127.0.0.1 --port {port}"


def flatten_params(d: Mapping[str, Any] | Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings (or dataclass instances) -> ``{"train.pose.lr": "0.0001", ...}``.

    Strings stay as they are; every other value is written as JSON (``true``, ``null``, lists
    as ``[1, 2]``), or ``str()`` when it has no JSON form. Values longer than MLflow's limit
    (:data:`MAX_PARAM_VALUE_LENGTH`) are clipped and end with ``...``. An empty mapping is
    kept as ``{}``.
    """
    if dataclasses.is_dataclass(d) and not isinstance(d, type):
        d = dataclasses.asdict(d)
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name))
            continue
        if isinstance(value, str):
            text = value
        else:
            try:
                text = json.dumps(value if not isinstance(value, Mapping) else dict(value))
            except (TypeError, ValueError):
                text = str(value)
        if len(text) > MAX_PARAM_VALUE_LENGTH:
            text = text[: MAX_PARAM_VALUE_LENGTH - 3] + "..."
        out[name] = text
    return out


class Tracker:
    """MLflow runs of one training invocation plus ``RUN/metrics.jsonl``; see the module doc.

    run_dir: the training run directory (metrics.jsonl and mlflow.json go here).
    tracking_uri: see :func:`resolve_tracking_uri`. run_name: the parent run's name (default:
    the run directory's name). enabled: False on every rank but 0. tags: extra tags of the
    parent run when it is created (``mlflow.parentRunId`` nests it under another run).
    """

    def __init__(
        self,
        run_dir: Path | str,
        *,
        tracking_uri: str | None = None,
        experiment: str = "selfpose3d",
        run_name: str | None = None,
        enabled: bool = True,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.metrics_path = self.run_dir / METRICS_FILE
        self.state_path = self.run_dir / STATE_FILE
        self.experiment = experiment
        self.run_name = run_name or self.run_dir.name
        self.enabled = enabled
        self.tags = dict(tags or {})
        self._uri = resolve_tracking_uri(tracking_uri)
        self._client: Any = None  # an MlflowClient while MLflow works
        self._mlflow_ok = enabled
        self._experiment_id: str | None = None
        self._parent_id: str | None = None
        self._stage_ids: dict[str, str] = {}
        self._stage: str | None = None
        self._buffer: list[dict[str, Any]] = []
        self._last_step: dict[tuple[str | None, str], int] = {}  # flushed, per (stage, name)
        self._nonfinite_warned: set[str] = set()
        self._state = "new"  # new -> started -> finished
        self._params: dict[str, str] = {}
        self._failed_at: float | None = None  # monotonic time of the last MLflow failure
        self._ended: dict[str, str] = {}  # stage -> status, of the stages ended by this Tracker

    @property
    def tracking_uri(self) -> str:
        return self._uri

    @property
    def parent_run_id(self) -> str | None:
        """The parent run's id; None when disabled or MLflow failed before creating it."""
        return self._parent_id

    @property
    def stage_run_ids(self) -> dict[str, str]:
        """Child run id per stage (stages of earlier, interrupted invocations included)."""
        return dict(self._stage_ids)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, params: Mapping[str, Any]) -> None:
        """Open the parent run (reopened when mlflow.json names one) and log ``params``
        flattened. Params already on a reopened run keep their first value (MLflow params are
        immutable); a changed value is logged as a warning."""
        if not self.enabled:
            return
        if self._state != "new":
            raise RuntimeError("Tracker.start() may be called once")
        self._state = "started"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._last_step = _scan_flushed(self.metrics_path)
        self._params = flatten_params(params)
        self._call(lambda: self._open_parent(self._params))

    def start_stage(self, stage: str) -> None:
        """Open the child run of ``stage`` (the same run again on resume)."""
        if not self.enabled:
            return
        self._require_started()
        if self._stage is not None:
            raise RuntimeError(f"stage {self._stage!r} is still open; call end_stage() first")
        self._stage = stage
        self._call(lambda: self._open_stage(stage))

    def end_stage(self, status: str = "FINISHED") -> None:
        """Flush and close the open stage's child run with ``status``."""
        _check_status(status)
        if not self.enabled or self._stage is None:
            return
        self.flush()
        run_id = self._stage_ids.get(self._stage)
        self._ended[self._stage] = status
        self._stage = None
        if run_id is not None:
            self._call(lambda: self._client.set_terminated(run_id, status))

    def finish(self, status: str = "FINISHED") -> None:
        """Flush, close the open stage (if any) and the parent run with ``status``."""
        _check_status(status)
        if not self.enabled or self._state != "started":
            return
        self._reconnect(force=True)
        self.end_stage(status)
        self.flush()
        self._state = "finished"
        if self._parent_id is not None:
            self._call(lambda: self._client.set_terminated(self._parent_id, status))

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        else:
            self.finish("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")

    # -- logging ---------------------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer ``metrics`` at ``step`` for the open stage (the parent if none is open)."""
        self._buffer_record(self._stage, metrics, step)

    def log_parent_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer ``metrics`` for the parent run (e.g. the final evaluation)."""
        self._buffer_record(None, metrics, step)

    def flush(self) -> None:
        """Append the buffered records to metrics.jsonl, then send them to MLflow."""
        if not self.enabled or not self._buffer:
            return
        self._reconnect()  # before the append: what it sends from the file is then older
        records, dropped = [], 0
        for rec in self._buffer:
            kept = {}
            for name, value in rec["metrics"].items():
                key = (rec["stage"], name)
                last = self._last_step.get(key)
                if last is not None and rec["step"] <= last:
                    dropped += 1
                    continue
                self._last_step[key] = rec["step"]
                kept[name] = value
            if kept:
                records.append({**rec, "metrics": kept})
        if dropped:
            log.info("dropped %d metric values at steps already flushed (a resumed run "
                     "re-producing them)", dropped)  # fmt: skip
        if records:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            lines = "".join(json.dumps(_jsonable(rec)) + "\n" for rec in records)
            with open(self.metrics_path, "a", encoding="utf-8") as f:  # one write per flush
                f.write(lines)
        self._buffer.clear()
        if records:
            self._call(lambda: self._send(records))

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Upload a file (or a directory's files) now, to the open stage's run or the parent."""
        if not self.enabled:
            return
        self._require_started()
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: artifact to log does not exist")
        run_id = self._current_run_id()
        if run_id is None:
            return
        if path.is_dir():
            self._call(lambda: self._client.log_artifacts(run_id, str(path), artifact_path))
        else:
            self._call(lambda: self._client.log_artifact(run_id, str(path), artifact_path))

    # -- internals -------------------------------------------------------------------------

    def _require_started(self) -> None:
        if self._state != "started":
            raise RuntimeError(f"Tracker is {self._state}: call start() first (once)")

    def _buffer_record(self, stage: str | None, metrics: Mapping[str, float], step: int) -> None:
        if not self.enabled:
            return
        self._require_started()
        try:
            step = operator.index(step)
        except TypeError:
            raise ValueError(f"metric step must be an integer, got {step!r}") from None
        values: dict[str, float] = {}
        for name, value in metrics.items():
            _check_metric_name(name)
            try:
                values[name] = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"metric {name!r} at step {step}: {value!r} is not a "
                                 f"number") from None  # fmt: skip
            if not math.isfinite(values[name]) and name not in self._nonfinite_warned:
                self._nonfinite_warned.add(name)
                log.warning("metric %r is %s at step %d: not sent to MLflow, stored as null in "
                            "%s (warned once per metric)", name, value, step,
                            self.metrics_path)  # fmt: skip
        self._buffer.append({"stage": stage, "step": step, "time": time.time(),
                             "metrics": values})  # fmt: skip

    def _current_run_id(self) -> str | None:
        return self._parent_id if self._stage is None else self._stage_ids.get(self._stage)

    def _call(self, fn: Callable[[], object]) -> None:
        """Run an MLflow action; on any error warn once and stop using MLflow."""
        if not self._mlflow_ok:
            return
        try:
            fn()
        except Exception as e:  # tracking must never stop training
            self._mlflow_ok = False
            self._client = None
            self._failed_at = time.monotonic()
            error = f"{type(e).__name__}: {e}"
            if len(error) > 500:
                error = error[:500] + "..."
            warnings.warn(f"MLflow tracking at {self._uri} failed ({error}); training goes on, "
                          f"metrics are written to {self.metrics_path} and sent to MLflow when "
                          f"it answers again (tried every {_RETRY_EVERY_S:.0f} s)",
                          RuntimeWarning, stacklevel=3)  # fmt: skip

    def _reconnect(self, force: bool = False) -> None:
        """After a failure, try MLflow again (at most every ``_RETRY_EVERY_S`` unless
        ``force``): reopen the parent, open or create every stage's run, send what they lack
        from metrics.jsonl, and close the stages that ended meanwhile."""
        if self._mlflow_ok or self._failed_at is None or self._state != "started":
            return
        if not force and time.monotonic() - self._failed_at < _RETRY_EVERY_S:
            return
        self._failed_at = time.monotonic()
        try:
            self._open_parent(self._params)
            stages = {r["stage"] for r in _read_records(self.metrics_path) if r["stage"]}
            stages |= set(self._stage_ids) | {self._stage} - {None}
            for stage in sorted(stages):
                self._open_stage(stage, running=stage == self._stage)
            for stage, status in self._ended.items():
                if stage != self._stage and stage in self._stage_ids:
                    self._client.set_terminated(self._stage_ids[stage], status)
        except Exception as e:  # still away: the next attempt comes later
            self._client = None
            log.info("MLflow at %s still fails (%s: %s)", self._uri, type(e).__name__, e)
            return
        self._mlflow_ok = True
        warnings.warn(f"MLflow tracking at {self._uri} answers again; the metrics it missed "
                      f"were sent from {self.metrics_path}", RuntimeWarning,
                      stacklevel=3)  # fmt: skip

    def _open_parent(self, params: dict[str, str]) -> None:
        if self._uri.startswith(("http://", "https://")):
            for name, value in _HTTP_ENV_DEFAULTS.items():
                os.environ.setdefault(name, value)
            _probe(self._uri)
        from mlflow import MlflowClient
        from mlflow.entities import Param

        client = MlflowClient(tracking_uri=self._uri)
        self._experiment_id = self._get_experiment(client)
        state = self._read_state()
        parent = self._reopen(client, state.get("parent_run_id"))
        reopened = parent is not None
        if parent is None:
            tags = {**self.tags, "selfpose3d.run_dir": str(self.run_dir)}
            run = client.create_run(self._experiment_id, run_name=self.run_name, tags=tags)
            parent, state = run.info.run_id, {}  # children of another parent do not apply
        self._client, self._parent_id = client, parent
        self._stage_ids = {str(k): str(v) for k, v in state.get("stages", {}).items()}
        self._write_state()

        logged = client.get_run(parent).data.params if reopened else {}
        changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
        if changed:
            log.warning("params changed since MLflow run %s started; MLflow keeps the first "
                        "values of: %s", parent, ", ".join(changed))  # fmt: skip
        new = [Param(k, v) for k, v in params.items() if k not in logged]
        for i in range(0, len(new), _MAX_PARAMS_PER_BATCH):
            client.log_batch(parent, params=new[i : i + _MAX_PARAMS_PER_BATCH])
        self._sync(parent, None, reopened)

    def _open_stage(self, stage: str, running: bool = True) -> None:
        """Reopen (status RUNNING unless not ``running``) or create the stage's child run and
        send it the records it lacks."""
        client = self._client
        run_id = self._reopen(client, self._stage_ids.get(stage), running)
        reopened = run_id is not None
        if run_id is None:
            tags = {"mlflow.parentRunId": self._parent_id, "selfpose3d.stage": stage}
            run_id = client.create_run(self._experiment_id, run_name=stage, tags=tags).info.run_id
            self._stage_ids[stage] = run_id
            self._write_state()
        self._sync(run_id, stage, reopened)

    def _get_experiment(self, client: Any) -> str:
        from mlflow.exceptions import MlflowException

        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            location = None
            if self._uri.startswith("sqlite:///"):  # artifacts next to the database
                db = Path(self._uri[len("sqlite:///") :].split("?")[0])
                location = (db.parent / "mlartifacts").as_uri()
            try:
                return client.create_experiment(self.experiment, artifact_location=location)
            except MlflowException:  # created concurrently (another trial)
                exp = client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
        if exp.lifecycle_stage != "active":
            raise ValueError(f"MLflow experiment {self.experiment!r} is deleted; restore it or "
                             f"choose another experiment name")  # fmt: skip
        return exp.experiment_id

    def _reopen(self, client: Any, run_id: str | None, running: bool = True) -> str | None:
        """Set an existing run back to RUNNING (if ``running``); None if there is no usable
        run by that id."""
        from mlflow.exceptions import MlflowException

        if not run_id:
            return None
        try:
            run = client.get_run(run_id)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        if run.info.lifecycle_stage != "active" or run.info.experiment_id != self._experiment_id:
            return None
        if running:
            client.update_run(run_id, status="RUNNING")
        return run_id

    def _send(self, records: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        by_run: dict[str, list[Any]] = {}
        for rec in records:
            run_id = self._parent_id if rec["stage"] is None else self._stage_ids[rec["stage"]]
            ms = int(rec["time"] * 1000)
            by_run.setdefault(run_id, []).extend(
                Metric(name, value, ms, rec["step"])
                for name, value in rec["metrics"].items()
                if value is not None and math.isfinite(value)
            )
        for run_id, metrics in by_run.items():
            for i in range(0, len(metrics), _MAX_METRICS_PER_BATCH):
                self._client.log_batch(run_id, metrics=metrics[i : i + _MAX_METRICS_PER_BATCH])

    def _sync(self, run_id: str, stage: str | None, reopened: bool) -> None:
        """Send the metrics.jsonl records of ``stage`` that the run lacks."""
        records = [r for r in _read_records(self.metrics_path) if r.get("stage") == stage]
        if not records:
            return
        have: dict[str, int] = {}  # MLflow's last step per metric
        if reopened:
            for name in self._client.get_run(run_id).data.metrics:
                history = self._client.get_metric_history(run_id, name)
                if history:
                    have[name] = max(m.step for m in history)
        missing = []
        for rec in records:
            kept = {k: v for k, v in rec["metrics"].items()
                    if k not in have or rec["step"] > have[k]}  # fmt: skip
            if kept:
                missing.append({**rec, "metrics": kept})
        if missing:
            log.info("sending %d records of %s missing from MLflow run %s", len(missing),
                     self.metrics_path, run_id)  # fmt: skip
            self._send(missing)

    def _read_state(self) -> dict[str, Any]:
        """mlflow.json if it belongs to this tracking URI and experiment, else {}."""
        if not self.state_path.is_file():
            return {}
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as e:
            log.warning("%s is unreadable (%s); starting new MLflow runs", self.state_path, e)
            return {}
        if not isinstance(state, dict):
            return {}
        if state.get("tracking_uri") != self._uri or state.get("experiment") != self.experiment:
            log.info("%s names another tracking URI or experiment; starting new MLflow runs",
                     self.state_path)  # fmt: skip
            return {}
        return state

    def _write_state(self) -> None:
        atomic_write_json(self.state_path, {
            "tracking_uri": self._uri, "experiment": self.experiment,
            "experiment_id": self._experiment_id, "parent_run_id": self._parent_id,
            "stages": self._stage_ids,
        })  # fmt: skip


def _check_status(status: str) -> None:
    if status not in _STATUSES:
        raise ValueError(f"run status must be one of {_STATUSES}, got {status!r}")


def _check_metric_name(name: object) -> None:
    if (not isinstance(name, str) or not _METRIC_NAME.fullmatch(name) or name.startswith("/")
            or posixpath.normpath(name) != name or name.startswith("..")):  # fmt: skip
        raise ValueError(f"metric name {name!r} is not valid for MLflow (letters, digits and "
                         f"_ - . / : space; not a path like '/a', 'a//b' or '..')")  # fmt: skip


def _jsonable(rec: dict[str, Any]) -> dict[str, Any]:
    """A record with non-finite values as null (strict JSON)."""
    metrics = {k: (v if math.isfinite(v) else None) for k, v in rec["metrics"].items()}
    return {**rec, "metrics": metrics}


def _probe(uri: str) -> None:
    """Raise unless an HTTP server answers at ``uri`` (any status counts as an answer)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=_PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        pass  # it answered (e.g. 401 behind auth, or no /health route)


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl; unparseable lines are skipped with a warning."""
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                rec = {"stage": rec["stage"], "step": int(rec["step"]),
                       "time": float(rec["time"]), "metrics": dict(rec["metrics"])}  # fmt: skip
                out.append(rec)
            except (ValueError, KeyError, TypeError) as e:
                log.warning("%s:%d: skipping a malformed metrics record (%s)", path, n, e)
    return out


def _scan_flushed(path: Path) -> dict[tuple[str | None, str], int]:
    """Last flushed step per (stage, metric) in metrics.jsonl, after cutting a torn last line
    (a process killed mid-append) so that the next append starts on a fresh line."""
    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            log.warning("%s: removing an incomplete last line (%d bytes)", path, len(data) - cut)
            with open(path, "r+b") as f:
                f.truncate(cut)
    last: dict[tuple[str | None, str], int] = {}
    for rec in _read_records(path):
        for name in rec["metrics"]:
            key = (rec["stage"], name)
            last[key] = max(last.get(key, rec["step"]), rec["step"])
    return last
