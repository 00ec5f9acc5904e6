"""Configuration of the dataset: which Panoptic-layout data to read and how to ingest it."""

from __future__ import annotations

from dataclasses import dataclass, field

# The 5 HD cameras of panel 0 used in the literature (nodes 3, 6, 12, 13, 23).
PANOPTIC_5_VIEWS = ["00_03", "00_06", "00_12", "00_13", "00_23"]
PANOPTIC_TRAIN = [
    "160422_ultimatum1", "160224_haggling1", "160226_haggling1", "161202_haggling1",
    "160906_ian1", "160906_ian2", "160906_ian3", "160906_band1", "160906_band2",
]  # fmt: skip
PANOPTIC_TEST = ["160906_pizza1", "160422_haggling1", "160906_ian5", "160906_band4"]


@dataclass(kw_only=True)
class DataConfig:
    # Cameras by name ("00_03") or by panel and node ("0_3", "0:3"). Empty = the cameras listed
    # in the root's manifest.json (the synthetic generator writes one), else every camera of
    # the sequence's calibration, in file order.
    cameras: list[str] = field(default_factory=list)
    # Sequences by split. Empty lists = use the split recorded by the synthetic generator's
    # manifest.json (a real Panoptic root needs explicit lists, e.g. the paper preset's).
    train_sequences: list[str] = field(default_factory=list)
    test_sequences: list[str] = field(default_factory=list)
    frame_interval: int = 1  # keep every n-th annotated frame
    test_frame_interval: int = 1
    # Resize images on ingest to this size (px; 0 = keep). Cameras are rescaled to match.
    image_width: int = 0
    image_height: int = 0
    jpeg_quality: int = 90  # used only when images are re-encoded (resized)
    rows_per_shard: int = 256  # Parquet rows (multi-view frames) per file
    min_gt_root_conf: float = 0.1  # a GT body counts when its mid-hip confidence exceeds this
    # Directory holding pseudo2d_<sequence>.json files; empty = next to each sequence's data
    # (<root>/<sequence>/pseudo2d_<sequence>.json, where a missing file means "no labels").
    pseudo_label_dir: str = ""

    def __post_init__(self) -> None:
        if self.frame_interval < 1 or self.test_frame_interval < 1:
            raise ValueError("data.frame_interval and data.test_frame_interval must be >= 1")
        if (self.image_width == 0) != (self.image_height == 0):
            raise ValueError("data.image_width and data.image_height: set both or neither")
        if self.image_width < 0 or self.image_height < 0:
            raise ValueError("data.image_width/image_height must be >= 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"data.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.rows_per_shard < 1:
            raise ValueError("data.rows_per_shard must be >= 1")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"data.cameras lists a camera twice: {self.cameras}")
        overlap = set(self.train_sequences) & set(self.test_sequences)
        if overlap:
            raise ValueError(f"data: sequences in both train and test: {sorted(overlap)}")
