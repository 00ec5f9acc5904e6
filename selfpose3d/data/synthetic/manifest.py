"""The dataset manifest (``<out>/manifest.json``): what was generated, and the reuse check.

A dataset is identified by its generator config (``workers`` aside: it does not change the
data). ``check_existing`` decides whether an output directory can be reused, replaced or must
be left alone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from selfpose3d.data.synthetic.config import SynthConfig
from selfpose3d.data.synthetic.detector import REFERENCE_WIDTH, Stats
from selfpose3d.data.synthetic.rigs import Rig
from selfpose3d.data.synthetic.scene import Scene

GENERATOR = "selfpose3d-synthetic"
VERSION = 1
MANIFEST = "manifest.json"
_IGNORED = ("workers",)  # config fields that do not change the data


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of a synthetic dataset at ``root``, or None if there is none."""
    try:
        manifest = json.loads((Path(root) / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    ok = isinstance(manifest, dict) and manifest.get("generator") == GENERATOR
    return manifest if ok and isinstance(manifest.get("config"), dict) else None


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif k not in _IGNORED or prefix:
            out[f"{prefix}{k}"] = v
    return out


def check_existing(out: Path, cfg: SynthConfig, overwrite: bool) -> dict[str, Any] | None:
    """The existing manifest if ``out`` already holds this dataset; None if it may be
    (re)generated; ValueError if ``out`` holds something that must not be replaced."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    if not any(out.iterdir()):
        return None
    manifest = read_manifest(out)
    if manifest is None:
        raise ValueError(f"{out}: not empty and not a synthetic dataset (no valid {MANIFEST}); "
                         "refusing to replace it: choose an empty or new directory")  # fmt: skip
    old, new = _flat(manifest["config"]), _flat(dataclasses.asdict(cfg))
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if not diff and manifest.get("complete") and not overwrite:
        return manifest
    if diff and not overwrite:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
        raise ValueError(f"{out}: holds a synthetic dataset made with a different config "
                         f"({shown}{', ...' if len(diff) > 5 else ''}); "
                         "pass overwrite=True (--overwrite) to replace it")  # fmt: skip
    return None


def summarize(stats: Stats, image_width: int) -> dict[str, Any]:
    """Pseudo-label error statistics (pixels of the written image unless stated)."""
    err = np.concatenate(stats.errors) if stats.errors else np.zeros(0)
    vis = np.concatenate(stats.conf_visible) if stats.conf_visible else np.zeros(0)
    occ = np.concatenate(stats.conf_occluded) if stats.conf_occluded else np.zeros(0)
    real = stats.detections - stats.false_positives

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b else None

    median = float(np.median(err)) if err.size else None
    return {
        "median_error_px": None if median is None else round(median, 3),
        "median_error_px_at_1920": None if median is None
        else round(median * REFERENCE_WIDTH / image_width, 3),
        "mean_conf_visible": round(float(vis.mean()), 4) if vis.size else None,
        "mean_conf_occluded": round(float(occ.mean()), 4) if occ.size else None,
        "occluded_joint_share": ratio(stats.joints_occluded, stats.joints_in_image),
        "truncated_joint_share": ratio(stats.joints_truncated,
                                       stats.joints_in_image + stats.joints_truncated),
        "false_positive_rate": ratio(stats.false_positives, stats.detections),
        "outside_detection_rate": ratio(stats.outside, stats.detections),
        "miss_rate": ratio(stats.missed, stats.present),
        "swap_rate": ratio(stats.swapped, real),
        "detections": stats.detections,
    }  # fmt: skip


def build_manifest(cfg: SynthConfig, rig: Rig, scenes: list[Scene], stats: Stats,
                   gt_bodies: int, seconds: float) -> dict[str, Any]:  # fmt: skip
    frames = len(scenes) * cfg.frames_per_sequence
    people = [p for s in scenes for p in s.people_info()]
    return {
        "generator": GENERATOR, "version": VERSION, "complete": True, "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "splits": {split: [s.name for s in scenes if s.split == split]
                   for split in ("train", "test")},
        "cameras": rig.names, "image_size": [cfg.rig.image_width, cfg.rig.image_height],
        "space_center": [float(v) for v in rig.space_center],
        "space_size": [float(v) for v in rig.space_size],
        "counts": {
            "sequences": len(scenes), "frames": frames, "images": frames * len(rig.cameras),
            "people": sum(p["role"] != "bystander" for p in people),
            "outside_people": sum(p["role"] == "bystander" for p in people),
            "gt_bodies": gt_bodies,
        },
        "sequences": [{"name": s.name, "split": s.split, "frames": cfg.frames_per_sequence,
                       "people": s.people_info()} for s in scenes],
        "pseudo_labels": summarize(stats, cfg.rig.image_width),
        "wall_time_s": round(seconds, 2),
        "frames_per_s": round(frames / max(seconds, 1e-9), 2),
    }  # fmt: skip


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    from selfpose3d.io import atomic_write_json

    atomic_write_json(Path(root) / MANIFEST, manifest)
