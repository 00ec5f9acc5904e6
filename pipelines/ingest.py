"""Ingest a Panoptic-layout root into sharded Parquet datasets of multi-view frames.

Output (``out/``): ``train/*.parquet`` and ``test/*.parquet`` (split by sequence; one row = one
multi-view frame, schema in ``selfpose3d/data/schema.py``) and ``summary.json`` (frames read,
written and rejected with the reason for each rejection, sizes, throughput, source, config).

Two engines produce the same files: ``ray`` runs a Ray Data job over shards (each task reads
and encodes one shard's frames and writes that shard's Parquet file, so image bytes never
cross the object store); ``plain`` runs the same shard function in one process, for debugging.
A frame that cannot be read is reported in the summary and never written, and never stops
the job; a problem with a whole sequence (calibration, camera selection) stops it before
anything is written. The output appears atomically: everything is written into a staging
directory next to ``out`` and renamed into place at the end.

CLI: ``selfpose3d ingest SRC --out OUT [--config cfg.yaml] [--set data.key=value] ...``
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Literal, TypedDict

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.session import map_tasks
from selfpose3d.data.config import DataConfig
from selfpose3d.data.panoptic import MultiViewFrame, PanopticReader, Split
from selfpose3d.data.schema import SCHEMA_VERSION, frames_to_table
from selfpose3d.io import atomic_write_json

SPLITS: tuple[Split, ...] = ("train", "test")
Plan = dict[Split, list[tuple[str, int]]]  # split -> [(sequence, frame)]


# -- reading (shared by both engines; runs inside Ray tasks for the ray engine) -------------


@functools.lru_cache(maxsize=4)
def _cached_reader(root: str, cfg_json: str, run_id: str) -> PanopticReader:
    # Ray reuses worker processes across tasks, so a sequence's calibration and pseudo-label
    # file are parsed once per worker, not once per batch. ``run_id`` keeps a later run from
    # seeing files cached by an earlier one.
    return PanopticReader(root, DataConfig(**json.loads(cfg_json)), images=True)


def read_items(root: str, cfg_json: str, run_id: str, sequences: list[str], frames: list[int]
               ) -> tuple[pa.Table, list[dict[str, Any]]]:  # fmt: skip
    """Read (sequence, frame) work items -> (table of good rows, rejection records)."""
    reader = _cached_reader(root, cfg_json, run_id)
    good: list[MultiViewFrame] = []
    rejected = []
    for sequence, frame in zip(sequences, frames, strict=True):
        result = reader.read_or_reject(sequence, int(frame))
        if isinstance(result, MultiViewFrame):
            good.append(result)
        else:
            rejected.append(result.to_dict())
    return frames_to_table(good), rejected


class Shard(TypedDict):
    """One output file's worth of work: consecutive (sequence, frame) items of one split."""

    split: str
    index: int
    sequences: list[str]
    frames: list[int]


def make_shards(plan: Plan, rows_per_shard: int) -> list[Shard]:
    return [
        Shard(split=split, index=i // rows_per_shard,
              sequences=[s for s, _ in items[i : i + rows_per_shard]],
              frames=[f for _, f in items[i : i + rows_per_shard]])
        for split, items in plan.items()
        for i in range(0, len(items), rows_per_shard)
    ]  # fmt: skip


def ingest_shard(shard: Shard, *, root: str, cfg_json: str, stage: str) -> dict[str, Any]:
    """Read one shard's frames and write its Parquet file; returns its counts and rejections.

    The file name depends only on the shard, and it is written atomically, so a retried task
    rewrites the same file and both engines produce identical outputs. Rejections travel
    back in the (small) result, never through a side channel that a retry could duplicate.
    """
    table, rejected = read_items(root, cfg_json, stage, shard["sequences"], shard["frames"])
    if table.num_rows:
        path = Path(stage) / shard["split"] / f"part-{shard['index']:05d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
    return {"split": shard["split"], "index": shard["index"], "rows": table.num_rows,
            "rejected": json.dumps(rejected)}  # fmt: skip


# -- engines --------------------------------------------------------------------------------


def _run_plain(src: Path, stage: Path, cfg_json: str, shards: list[Shard], progress: bool
               ) -> list[dict[str, Any]]:  # fmt: skip
    from tqdm import tqdm

    return [ingest_shard(shard, root=str(src), cfg_json=cfg_json, stage=str(stage))
            for shard in tqdm(shards, desc="ingest", unit="shard", disable=not progress)]


# -- the job --------------------------------------------------------------------------------


def _identity(src: Path, cfg: DataConfig) -> dict[str, Any]:
    """What makes two ingests the same dataset (the engine and CPU count do not)."""
    return {"source": str(src), "data_config": dataclasses.asdict(cfg),
            "schema_version": SCHEMA_VERSION}  # fmt: skip


def _check_output(out: Path, src: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Refuse to replace something that is not an identical earlier run of this ingest."""
    if src == out or out in src.parents:
        raise ValueError(f"{out}: the output directory contains the source {src}")
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out}: output path exists and is not a directory")
    if overwrite or not any(out.iterdir()):
        return
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        raise ValueError(f"{out}: output directory is not empty and holds no ingest "
                         f"summary.json; pass overwrite=True (--overwrite) to replace it")
    try:
        previous = json.loads(summary_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{summary_path}: unreadable summary ({e}); pass overwrite=True "
                         f"(--overwrite) to replace the directory") from e
    before = {k: previous.get(k) for k in identity}
    if before != identity:
        differs = sorted(k for k in identity if before[k] != identity[k])
        raise ValueError(f"{out}: output directory already holds a different dataset "
                         f"({', '.join(differs)} differ: {before['source']!r} vs "
                         f"{identity['source']!r}); pass overwrite=True (--overwrite) to "
                         f"replace it")


def make_plan(reader: PanopticReader) -> tuple[Plan, dict[Split, list[str]]]:
    """Every (sequence, frame) to read, by split. Opening each sequence here makes a bad
    calibration or camera selection fail the job before any work starts."""
    plan: Plan = {}
    sequences: dict[Split, list[str]] = {}
    for split in SPLITS:
        sequences[split] = reader.sequences(split)
        plan[split] = [(s, f) for s in sequences[split] for f in reader.frames(s, split)]
    both = set(sequences["train"]) & set(sequences["test"])
    if both:
        raise ValueError(f"{reader.root}: sequences in both train and test: {sorted(both)}")
    return plan, sequences


def _split_stats(stage: Path, split: Split) -> dict[str, Any]:
    files = sorted((stage / split).glob("*.parquet"))
    return {
        "files": [f.name for f in files],
        "frames_written": sum(pq.read_metadata(f).num_rows for f in files),
        "bytes": sum(f.stat().st_size for f in files),
    }


def ingest(src: Path, out: Path, cfg: DataConfig, *, engine: Literal["ray", "plain"] = "ray",
           num_cpus: int | None = None, overwrite: bool = False, progress: bool = True
           ) -> dict[str, Any]:  # fmt: skip
    """Ingest the Panoptic-layout root ``src`` into ``out``; returns the summary dict.

    ``num_cpus`` caps the parallel readers (and sizes a Ray instance started here; a running
    Ray instance is used as it is). Raises ValueError/FileNotFoundError naming the file on a
    bad sequence or an ``out`` that holds a different dataset (unless ``overwrite``).
    """
    t0 = time.perf_counter()
    src, out = Path(src).resolve(), Path(out).resolve()
    if engine not in ("ray", "plain"):
        raise ValueError(f"engine must be 'ray' or 'plain', got {engine!r}")
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source directory not found")
    identity = _identity(src, cfg)
    _check_output(out, src, identity, overwrite)
    plan, sequences = make_plan(PanopticReader(src, cfg, images=True))

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        for split in SPLITS:
            (stage / split).mkdir()
        shards = make_shards(plan, cfg.rows_per_shard)
        cfg_json = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
        if engine == "ray":
            # Each task reads its shard's frames and writes its own file: the image bytes never
            # cross the object store.
            results = map_tasks(shards, ingest_shard, {"root": str(src), "cfg_json": cfg_json,
                                "stage": str(stage)}, num_cpus=num_cpus, progress=progress)
        else:
            results = _run_plain(src, stage, cfg_json, shards, progress)
        rejected = [r for res in results for r in json.loads(res["rejected"])]
        rejected.sort(key=lambda r: (r["sequence"], r["frame"]))
        summary = _summarize(identity, engine, num_cpus, plan, sequences, stage, rejected, t0)
        atomic_write_json(stage / "summary.json", summary)
        _replace_dir(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return summary


def _summarize(identity: dict[str, Any], engine: str, num_cpus: int | None, plan: Plan,
               sequences: dict[Split, list[str]], stage: Path, rejected: list[dict[str, Any]],
               t0: float) -> dict[str, Any]:  # fmt: skip
    splits = {}
    for split in SPLITS:
        items = set(plan[split])
        n_rejected = sum(1 for r in rejected if (r["sequence"], r["frame"]) in items)
        stats = _split_stats(stage, split)
        per_sequence = Counter(seq for seq, _ in plan[split])
        splits[split] = {
            "sequences": sequences[split], "frames_read": len(plan[split]),
            "frames_read_per_sequence": {q: per_sequence[q] for q in sequences[split]},
            "frames_rejected": n_rejected, **stats,
        }  # fmt: skip
        if stats["frames_written"] + n_rejected != len(plan[split]):
            raise RuntimeError(f"ingest {split}: {len(plan[split])} frames read but "
                               f"{stats['frames_written']} written + {n_rejected} rejected")
    read = sum(len(items) for items in plan.values())
    written = sum(s["frames_written"] for s in splits.values())
    n_bytes = sum(s["bytes"] for s in splits.values())
    wall = time.perf_counter() - t0
    return {
        **identity, "engine": engine, "num_cpus": num_cpus,
        "frames_read": read, "frames_written": written, "frames_rejected": len(rejected),
        "rejected_by_reason": dict(Counter(r["kind"] for r in rejected)),
        "rejected": rejected, "splits": splits, "bytes_written": n_bytes,
        "bytes_per_frame": n_bytes / written if written else 0.0,
        "frames_per_second": read / wall if wall > 0 else 0.0, "wall_seconds": wall,
    }  # fmt: skip


def _replace_dir(stage: Path, out: Path) -> None:
    """Move the finished staging directory to ``out``, replacing an earlier run."""
    if not out.exists():
        stage.rename(out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    out.rename(old)
    try:
        stage.rename(out)
    except BaseException:
        old.rename(out)  # put the earlier run back rather than leave nothing at ``out``
        raise
    shutil.rmtree(old)


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable report of an ingest summary (the CLI prints it)."""
    lines = [
        f"ingest of {summary['source']} ({summary['engine']} engine)",
        f"  frames: {summary['frames_read']} read, {summary['frames_written']} written, "
        f"{summary['frames_rejected']} rejected",
    ]
    for split, s in summary["splits"].items():
        lines.append(f"  {split}: {len(s['sequences'])} sequences, {s['frames_written']} frames, "
                     f"{len(s['files'])} files, {s['bytes'] / 1e6:.1f} MB")
    for kind, n in summary["rejected_by_reason"].items():
        lines.append(f"  rejected ({kind}): {n}")
    for r in summary["rejected"][:5]:
        lines.append(f"    {r['sequence']} frame {r['frame']}: {r['reason']}")
    if summary["frames_rejected"] > 5:
        lines.append(f"    ... {summary['frames_rejected'] - 5} more in summary.json")
    lines.append(f"  {summary['bytes_per_frame'] / 1e3:.1f} kB per frame, "
                 f"{summary['frames_per_second']:.1f} frames/s, {summary['wall_seconds']:.1f} s")
    return "\n".join(lines)
