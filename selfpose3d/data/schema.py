"""The multi-view frame as one Parquet row (DESIGN §3.2), in plain Arrow types.

Every column is a primitive, a string, a binary or a (nested) list/struct of those, so any
Parquet reader (pyarrow, pandas, DuckDB, Spark) can read the shards; no Ray tensor extension
types. Units and frames are those of :class:`~selfpose3d.data.panoptic.MultiViewFrame`:
cameras world->camera in mm (z-up world), pixels of the stored image.

Columns (V views, P_v pseudo people in view v, P GT people, J = 15 joints):
- ``sequence`` string, ``frame`` int64
- ``camera_names`` list<string> (V)
- ``cameras`` list<struct<name, K (9, row-major), dist (5), R (9, row-major), t (3, mm),
  width, height (int32 px), extra (JSON string, e.g. Panoptic panel/node)>> (V)
- ``image_paths`` list<string> (V): the source files
- ``images`` list<large_binary> (V) encoded JPEGs, null when ingested without images.
  large_binary (64-bit offsets; stored in Parquet as the same BYTE_ARRAY as binary) because a
  row group of full-HD views can exceed the 2 GiB that 32-bit offsets address.
- ``pseudo_poses`` list<list<list<list<float32>>>> (V, P_v, J, 3: x px, y px, conf), nullable
- ``gt_poses`` list<list<list<float32>>> (P, J, 4: x, y, z mm, visibility 0/1), nullable
- ``gt_ids`` list<int64> (P), nullable

The schema version is stored in the Parquet schema metadata under ``selfpose3d.schema_version``;
readers refuse shards of another version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from selfpose3d.data.panoptic import MultiViewFrame
from selfpose3d.geometry.camera import Camera
from selfpose3d.skeleton import NUM_JOINTS

SCHEMA_VERSION = 1
SCHEMA_VERSION_KEY = b"selfpose3d.schema_version"

_F64_LIST = pa.list_(pa.float64())
CAMERA_TYPE = pa.struct([
    ("name", pa.string()), ("K", _F64_LIST), ("dist", _F64_LIST), ("R", _F64_LIST),
    ("t", _F64_LIST), ("width", pa.int32()), ("height", pa.int32()), ("extra", pa.string()),
])  # fmt: skip

ARROW_SCHEMA = pa.schema(
    [
        pa.field("sequence", pa.string(), nullable=False),
        pa.field("frame", pa.int64(), nullable=False),
        pa.field("camera_names", pa.list_(pa.string()), nullable=False),
        pa.field("cameras", pa.list_(CAMERA_TYPE), nullable=False),
        pa.field("image_paths", pa.list_(pa.string())),
        pa.field("images", pa.list_(pa.large_binary())),
        pa.field("pseudo_poses", pa.list_(pa.list_(pa.list_(pa.list_(pa.float32()))))),
        pa.field("gt_poses", pa.list_(pa.list_(pa.list_(pa.float32())))),
        pa.field("gt_ids", pa.list_(pa.int64())),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)


def _camera_to_struct(cam: Camera) -> dict[str, Any]:
    return {
        "name": cam.name, "K": cam.K.reshape(-1).tolist(), "dist": cam.dist.tolist(),
        "R": cam.R.reshape(-1).tolist(), "t": cam.t.tolist(), "width": cam.width,
        "height": cam.height, "extra": json.dumps(cam.extra, sort_keys=True),
    }  # fmt: skip


def _camera_from_struct(d: dict[str, Any]) -> Camera:
    return Camera(name=d["name"], K=d["K"], dist=d["dist"], R=d["R"], t=d["t"],
                  width=d["width"], height=d["height"],
                  extra=json.loads(d["extra"]) if d.get("extra") else {})  # fmt: skip


def frame_to_row(frame: MultiViewFrame) -> dict[str, Any]:
    """A MultiViewFrame -> a dict of plain Python values matching ARROW_SCHEMA."""
    V = len(frame.cameras)
    for name, per_view in (("image_paths", frame.image_paths), ("images", frame.images),
                           ("pseudo_poses", frame.pseudo_poses)):  # fmt: skip
        if per_view is not None and len(per_view) != V:
            raise ValueError(f"{frame.sequence}/{frame.frame}: {name} has {len(per_view)} "
                             f"entries for {V} cameras")  # fmt: skip
    pseudo = None
    if frame.pseudo_poses is not None:
        pseudo = [np.asarray(p, dtype=np.float32).reshape(-1, NUM_JOINTS, 3).tolist()
                  for p in frame.pseudo_poses]  # fmt: skip
    gt_poses = gt_ids = None
    if frame.gt_poses is not None:
        gt = np.asarray(frame.gt_poses, dtype=np.float32).reshape(-1, NUM_JOINTS, 4)
        ids = np.asarray(frame.gt_ids if frame.gt_ids is not None else np.arange(len(gt)))
        if ids.shape != (len(gt),):
            raise ValueError(f"{frame.sequence}/{frame.frame}: {len(gt)} GT poses, "
                             f"{ids.size} GT ids")  # fmt: skip
        gt_poses, gt_ids = gt.tolist(), ids.astype(np.int64).tolist()
    return {
        "sequence": frame.sequence, "frame": int(frame.frame),
        "camera_names": [c.name for c in frame.cameras],
        "cameras": [_camera_to_struct(c) for c in frame.cameras],
        "image_paths": [str(p) for p in frame.image_paths],
        "images": None if frame.images is None else [bytes(b) for b in frame.images],
        "pseudo_poses": pseudo, "gt_poses": gt_poses, "gt_ids": gt_ids,
    }  # fmt: skip


def row_to_frame(row: dict[str, Any]) -> MultiViewFrame:
    """Inverse of :func:`frame_to_row` (also accepts a row read back by pyarrow)."""
    pseudo = row.get("pseudo_poses")
    gt = row.get("gt_poses")
    return MultiViewFrame(
        sequence=row["sequence"], frame=int(row["frame"]),
        cameras=[_camera_from_struct(c) for c in row["cameras"]],
        images=None if row.get("images") is None else [bytes(b) for b in row["images"]],
        image_paths=list(row.get("image_paths") or []),
        pseudo_poses=None if pseudo is None else [
            np.asarray(p, dtype=np.float32).reshape(-1, NUM_JOINTS, 3) for p in pseudo],
        gt_poses=None if gt is None else np.asarray(gt, np.float32).reshape(-1, NUM_JOINTS, 4),
        gt_ids=None if row.get("gt_ids") is None else np.asarray(row["gt_ids"], dtype=np.int64),
    )  # fmt: skip


def frames_to_table(frames: Iterable[MultiViewFrame]) -> pa.Table:
    """Frames -> a pyarrow Table with ARROW_SCHEMA (version metadata included)."""
    return pa.Table.from_pylist([frame_to_row(f) for f in frames], schema=ARROW_SCHEMA)


def check_schema_version(schema: pa.Schema, source: Path | str) -> None:
    """Raise ValueError naming ``source`` unless ``schema`` carries this code's version."""
    found = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    if found is None:
        raise ValueError(f"{source}: not a selfpose3d frame shard (no "
                         f"{SCHEMA_VERSION_KEY.decode()} in the Parquet schema metadata)")
    if found != str(SCHEMA_VERSION).encode():
        raise ValueError(f"{source}: frame schema version {found.decode()}, this code reads "
                         f"version {SCHEMA_VERSION}; re-run the ingest to rewrite the shards")


def list_shards(source: Path | str | Sequence[Path | str]) -> list[Path]:
    """Parquet files of a directory (recursively, hidden ones excluded) or a list of files."""
    if isinstance(source, str | Path):
        source = Path(source)
        if source.is_dir():
            return sorted(p for p in source.rglob("*.parquet")
                          if not any(part.startswith(".") for part in p.relative_to(source).parts))
        if not source.is_file():
            raise FileNotFoundError(f"{source}: no such Parquet file or directory")
        return [source]
    return [Path(p) for p in source]


def read_dataset(source: Path | str | Sequence[Path | str], *, batch_size: int = 16
                 ) -> Iterator[MultiViewFrame]:  # fmt: skip
    """Stream MultiViewFrames from Parquet shards with plain pyarrow (no Ray).

    Every shard's schema version is checked before its first row is read.
    """
    for path in list_shards(source):
        shard = pq.ParquetFile(path)
        check_schema_version(shard.schema_arrow, path)
        for batch in shard.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield row_to_frame(row)
