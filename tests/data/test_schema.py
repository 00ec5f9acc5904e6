"""The Parquet row schema of a multi-view frame: exact round trips, plain types, versioning."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selfpose3d.data.panoptic import MultiViewFrame
from selfpose3d.data.schema import (
    ARROW_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    frame_to_row,
    frames_to_table,
    read_dataset,
    row_to_frame,
)
from selfpose3d.geometry.camera import Camera


def random_camera(rng: np.random.Generator, name: str) -> Camera:
    R = cv2.Rodrigues(rng.normal(size=3))[0]
    K = [[rng.uniform(500, 1500), 0, rng.uniform(300, 700)],
         [0, rng.uniform(500, 1500), rng.uniform(200, 500)], [0, 0, 1]]  # fmt: skip
    return Camera(name=name, K=K, dist=rng.normal(0, 0.05, 5), R=R, t=rng.normal(0, 3000, 3),
                  width=1000, height=700, extra={"type": "hd", "panel": 0, "node": 3})


def random_frame(seed: int = 0, *, views: int = 3, gt: bool = True, images: bool = True,
                 pseudo: bool = True) -> MultiViewFrame:  # fmt: skip
    rng = np.random.default_rng(seed)
    n_people = [2, 0, 3][:views] + [1] * max(0, views - 3)  # a view without detections
    return MultiViewFrame(
        sequence=f"seq{seed}", frame=int(rng.integers(0, 10**6)),
        cameras=[random_camera(rng, f"00_{v:02d}") for v in range(views)],
        images=[rng.bytes(int(rng.integers(10, 500))) for _ in range(views)] if images else None,
        image_paths=[f"/data/seq/hdImgs/00_{v:02d}/x.jpg" for v in range(views)],
        pseudo_poses=[rng.normal(500, 200, (p, 15, 3)).astype(np.float32) for p in n_people]
        if pseudo else None,
        gt_poses=rng.normal(0, 1000, (2, 15, 4)).astype(np.float32) if gt else None,
        gt_ids=np.array([4, 11]) if gt else None,
    )  # fmt: skip


def assert_frames_equal(a: MultiViewFrame, b: MultiViewFrame) -> None:
    assert (a.sequence, a.frame, a.image_paths) == (b.sequence, b.frame, b.image_paths)
    assert len(a.cameras) == len(b.cameras)
    for ca, cb in zip(a.cameras, b.cameras, strict=True):
        assert (ca.name, ca.width, ca.height, ca.extra) == (cb.name, cb.width, cb.height, cb.extra)
        for key in ("K", "dist", "R", "t"):
            assert getattr(cb, key).dtype == np.float64
            np.testing.assert_array_equal(getattr(ca, key), getattr(cb, key))
    assert a.images == b.images
    for name in ("gt_poses", "gt_ids"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
    assert (a.pseudo_poses is None) == (b.pseudo_poses is None)
    for pa_, pb in zip(a.pseudo_poses or [], b.pseudo_poses or [], strict=True):
        assert pa_.shape == pb.shape and pb.dtype == np.float32
        np.testing.assert_array_equal(pa_, pb)


@pytest.mark.parametrize("kind", ["full", "no_gt", "nothing_optional"])
def test_round_trip_through_a_row(kind):
    frame = random_frame(1, gt=kind == "full", images=kind != "nothing_optional",
                         pseudo=kind != "nothing_optional")  # fmt: skip
    assert_frames_equal(frame, row_to_frame(frame_to_row(frame)))


def test_round_trip_through_parquet(tmp_path):
    frames = [random_frame(s, views=v) for s, v in ((0, 3), (1, 5), (2, 1))]
    frames.append(random_frame(3, gt=False, pseudo=False, images=False))
    pq.write_table(frames_to_table(frames[:2]), tmp_path / "a.parquet")
    pq.write_table(frames_to_table(frames[2:]), tmp_path / "b.parquet")
    back = list(read_dataset(tmp_path, batch_size=1))
    assert len(back) == 4
    for a, b in zip(frames, back, strict=True):
        assert_frames_equal(a, b)
    assert back[1].pseudo_poses[1].shape == (0, 15, 3)  # a view without detections
    assert_frames_equal(frames[0], next(read_dataset([tmp_path / "a.parquet"])))


def _extension_types(t: pa.DataType) -> list[pa.DataType]:
    found = [t] if isinstance(t, pa.ExtensionType) else []
    for i in range(t.num_fields):
        found += _extension_types(t.field(i).type)
    return found


def test_parquet_holds_plain_types_and_the_version(tmp_path):
    pq.write_table(frames_to_table([random_frame(0)]), tmp_path / "a.parquet")
    schema = pq.read_schema(tmp_path / "a.parquet")
    assert schema.metadata[SCHEMA_VERSION_KEY] == str(SCHEMA_VERSION).encode()
    assert not [t for f in schema for t in _extension_types(f.type)]
    assert schema.field("images").type == pa.list_(pa.large_binary())
    assert schema.field("gt_poses").type == pa.list_(pa.list_(pa.list_(pa.float32())))
    assert schema.field("cameras").type.value_type.field("K").type == pa.list_(pa.float64())
    assert schema.remove_metadata().equals(ARROW_SCHEMA.remove_metadata())
    # Readable without this package: plain lists and bytes.
    row = pq.read_table(tmp_path / "a.parquet").to_pylist()[0]
    assert isinstance(row["images"][0], bytes) and len(row["cameras"][0]["K"]) == 9


def test_refuses_another_schema_version(tmp_path):
    table = frames_to_table([random_frame(0)])
    pq.write_table(table.replace_schema_metadata({SCHEMA_VERSION_KEY: b"2"}),
                   tmp_path / "new.parquet")  # fmt: skip
    with pytest.raises(ValueError, match=r"new\.parquet: frame schema version 2, this code "
                                         r"reads version 1"):  # fmt: skip
        next(read_dataset(tmp_path))
    pq.write_table(pa.table({"x": [1]}), tmp_path / "new.parquet")
    with pytest.raises(ValueError, match=r"new\.parquet: not a selfpose3d frame shard"):
        next(read_dataset(tmp_path / "new.parquet"))


def test_bad_frames_are_refused():
    frame = random_frame(0)
    frame.images = frame.images[:2]
    with pytest.raises(ValueError, match="images has 2 entries for 3 cameras"):
        frame_to_row(frame)
    frame = random_frame(0)
    frame.gt_ids = np.array([1, 2, 3])
    with pytest.raises(ValueError, match="2 GT poses, 3 GT ids"):
        frame_to_row(frame)


def test_missing_source():
    with pytest.raises(FileNotFoundError, match="no such Parquet file or directory"):
        next(read_dataset("/nonexistent/shards"))
