"""Tracking benchmark: CLEAR-MOT figures of the 3D person tracker against the GT person ids.

    python benchmarks/tracking.py --data runs/cpu/synthetic [--split test] [--config FILE]
        [--checkpoint RUN] [--max-frames N] [--frame-interval N] [--max-gap N]
        [--max-distance MM] [--velocity-weight W] [--batch-size N] [--threads N]

On a dataset with 3D GT (a Panoptic-layout root such as the synthetic ``runs/cpu/synthetic``,
or an ingested Parquet dataset) it predicts every frame of the split as ``selfpose3d predict``
does (:func:`selfpose3d.inference.predict_sequence`, the same batches and tracker): with
``--checkpoint`` a trained model (a run directory, its ``final/`` or a checkpoint file), else
the triangulation of the pseudo 2D labels in the capture space of ``--config`` (default
``configs/cpu.yaml``). ``--frame-interval N`` keeps every N-th frame of each sequence (the
tracker then sees a person move N times as far between frames), ``--max-frames`` the first
that many of those.

Per frame, predictions are matched one-to-one to the GT people whose root is annotated by
root distance, within 500 mm (:func:`selfpose3d.tracks.match_to_gt`). Per sequence and in
total it prints: GT people and person-frames, matched person-frames (recall), false positives
(predictions matched to no GT person), fragmentations (a GT person's run of matched frames
resuming after frames in which they went unmatched; matching ignores track ids, so this is the
same for every tracker), tracks created, CLEAR-MOT id switches, MOTA = 1 - (misses + false
positives + id switches) / GT person-frames, and MOTP (mean root distance of the matches, mm).
The same predictions are tracked again without the motion model (``velocity_weight`` 0: a
track is looked for where it was last seen), which changes only tracks, id switches and MOTA.
The last line is one JSON object ``{"data", "split", "mode", "checkpoint", "frames",
"seconds", "tracker": {max_gap, max_distance, velocity_weight}, "motion": {...},
"no_motion": {...}}`` whose two entries hold the totals (recall and MOTA as fractions).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfpose3d.config import load_config
from selfpose3d.data.panoptic import MultiViewFrame
from selfpose3d.evaluation.report import format_metrics_table
from selfpose3d.inference import Predictor, predict_sequence, read_frames
from selfpose3d.skeleton import ROOT_INDEX
from selfpose3d.tracks import (
    MATCH_DISTANCE_MM,
    UNTRACKED,
    TrackerConfig,
    count_id_switches,
    match_to_gt,
    track_poses,
)

REPO = Path(__file__).resolve().parents[1]
MIN_VISIBILITY = 0.1  # a GT joint is annotated above this (Panoptic's convention)
COUNT_COLUMNS = (
    ("frames", "Frames"), ("gt_people", "GT people"), ("gt_person_frames", "GT person-frames"),
    ("matched", "Matched"), ("false_positives", "FP"), ("fragmentations", "Frag"),
    ("tracks", "Tracks"), ("id_switches", "ID sw"),
    ("nm_tracks", "Tracks, no motion"), ("nm_id_switches", "ID sw, no motion"),
)  # fmt: skip
RATE_COLUMNS = (
    ("recall", "Recall %"), ("motp", "MOTP mm"), ("mota", "MOTA %"),
    ("nm_mota", "MOTA %, no motion"),
)  # fmt: skip
# Summed over sequences; the rates are recomputed from the sums.
SUMMED = ("frames", "gt_people", "gt_person_frames", "matched", "misses", "false_positives",
          "fragmentations", "tracks", "id_switches", "distance_sum")  # fmt: skip


@dataclass
class SequenceLog:
    """One sequence's predictions and GT, one entry per evaluated frame, in frame order."""

    frames: list[int] = field(default_factory=list)
    roots: list[np.ndarray] = field(default_factory=list)  # (P, 3) predicted roots, world mm
    scores: list[np.ndarray] = field(default_factory=list)  # (P,)
    track_ids: list[np.ndarray] = field(default_factory=list)  # (P,) int64, -1 untracked
    gt_roots: list[np.ndarray] = field(default_factory=list)  # (G, 3) mm, NaN: not annotated
    gt_ids: list[np.ndarray] = field(default_factory=list)  # (G,) int64


def select_frames(frames: Iterable[MultiViewFrame], every: int,
                  max_frames: int | None) -> Iterator[MultiViewFrame]:  # fmt: skip
    """Every ``every``-th frame of each sequence, at most ``max_frames`` of them per sequence."""
    sequence, seen, kept = None, 0, 0
    for frame in frames:
        if frame.sequence != sequence:
            sequence, seen, kept = frame.sequence, 0, 0
        seen += 1
        if (seen - 1) % every or (max_frames is not None and kept >= max_frames):
            continue
        kept += 1
        yield frame


def keep_gt(frames: Iterable[MultiViewFrame],
            gt: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]
            ) -> Iterator[MultiViewFrame]:  # fmt: skip
    """Pass ``frames`` through, noting each one's GT roots (G, 3) mm and ids (G,) in ``gt``:
    prediction is lazy, so the frames (with their images) need not be held."""
    for frame in frames:
        if frame.gt_poses is None or frame.gt_ids is None:
            raise ValueError(f"{frame.sequence}/{frame.frame}: no 3D GT; the tracking "
                             f"benchmark needs GT person ids")  # fmt: skip
        poses = np.asarray(frame.gt_poses, dtype=np.float64).reshape(-1, 15, 4)
        annotated = poses[:, ROOT_INDEX, 3] > MIN_VISIBILITY
        roots = np.where(annotated[:, None], poses[:, ROOT_INDEX, :3], np.nan)
        gt[(frame.sequence, frame.frame)] = roots, np.asarray(frame.gt_ids, dtype=np.int64)
        yield frame


def fragmentations(gt_ids: Sequence[np.ndarray], gt_roots: Sequence[np.ndarray],
                   matches: Sequence[np.ndarray]) -> int:  # fmt: skip
    """How often a GT person's matched run resumes after frames in which they were annotated
    but unmatched (frames where they are not in the GT do not interrupt the run)."""
    matched_before: set[int] = set()  # people matched in some earlier frame
    last_matched: dict[int, bool] = {}  # per person: matched in the last frame they were in
    count = 0
    for ids, roots, pairs in zip(gt_ids, gt_roots, matches, strict=True):
        hit = set(ids[pairs[:, 1]].tolist())
        for person in ids[np.isfinite(roots).all(1)].tolist():
            now = person in hit
            if now and person in matched_before and not last_matched[person]:
                count += 1
            last_matched[person] = now
            if now:
                matched_before.add(person)
    return count


def score_sequence(log: SequenceLog, track_ids: Sequence[np.ndarray]) -> dict[str, float]:
    """The counts of one sequence under ``track_ids`` (per frame (P,)) and its rates."""
    matches = match_to_gt(log.roots, log.gt_roots, MATCH_DISTANCE_MM)
    annotated = [np.isfinite(r).all(1) for r in log.gt_roots]
    gt_person_frames = sum(int(a.sum()) for a in annotated)
    matched = sum(len(m) for m in matches)
    distance_sum = sum(
        float(np.linalg.norm(p[m[:, 0]] - g[m[:, 1]], axis=1).sum())
        for p, g, m in zip(log.roots, log.gt_roots, matches, strict=True)
    )
    counts = {
        "frames": len(log.frames),
        "gt_people": len({int(i) for ids, a in zip(log.gt_ids, annotated, strict=True)
                          for i in ids[a]}),
        "gt_person_frames": gt_person_frames,
        "matched": matched,
        "misses": gt_person_frames - matched,
        "false_positives": sum(len(p) for p in log.roots) - matched,
        "fragmentations": fragmentations(log.gt_ids, log.gt_roots, matches),
        "tracks": len({int(t) for ids in track_ids for t in ids if t != UNTRACKED}),
        "id_switches": count_id_switches(track_ids, log.gt_ids, matches),
        "distance_sum": distance_sum,
    }  # fmt: skip
    return with_rates(counts)


def with_rates(counts: dict[str, float]) -> dict[str, float]:
    """``counts`` plus recall and MOTA (fractions; NaN without GT) and MOTP (mm)."""
    gt = counts["gt_person_frames"]
    errors = counts["misses"] + counts["false_positives"] + counts["id_switches"]
    matched = counts["matched"]
    return {**counts,
            "recall": matched / gt if gt else math.nan,
            "mota": 1.0 - errors / gt if gt else math.nan,
            "motp": counts["distance_sum"] / matched if matched else math.nan}  # fmt: skip


def total(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    rows = list(rows)
    return with_rates({k: sum(r[k] for r in rows) for k in SUMMED})


def table_rows(motion: dict[str, dict[str, float]],
               still: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per row name, the tracker's figures (rates in %) and the no-motion ones as ``nm_*``."""

    def percent(m: dict[str, float]) -> dict[str, float]:
        return {**m, "recall": 100 * m["recall"], "mota": 100 * m["mota"]}

    return {name: {**percent(motion[name]),
                   **{f"nm_{k}": v for k, v in percent(still[name]).items()}}
            for name in motion}  # fmt: skip


def json_totals(m: dict[str, float]) -> dict[str, float | int]:
    out: dict[str, float | int] = {k: int(m[k]) for k in SUMMED if k != "distance_sum"}
    out.update(recall=round(m["recall"], 4), mota=round(m["mota"], 4),
               motp_mm=round(m["motp"], 1))  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True,
                        help="a Panoptic-layout root or ingested dataset with 3D GT")  # fmt: skip
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--checkpoint", type=Path,
                        help="a trained run or checkpoint (default: triangulation)")  # fmt: skip
    parser.add_argument("--config", type=Path,
                        help="preset for triangulation's capture space and the image size "
                        "frames are read at (default: configs/cpu.yaml)")  # fmt: skip
    parser.add_argument("--max-frames", type=int, help="frames per sequence (default: all)")
    parser.add_argument("--frame-interval", type=int, default=1,
                        help="keep every n-th frame of each sequence")  # fmt: skip
    defaults = TrackerConfig()
    parser.add_argument("--max-gap", type=int, default=defaults.max_gap,
                        help="frames a track may miss (default: %(default)s)")  # fmt: skip
    parser.add_argument("--max-distance", type=float, default=defaults.max_distance,
                        help="mm from a track's prediction (default: %(default)s)")  # fmt: skip
    parser.add_argument("--velocity-weight", type=float, default=defaults.velocity_weight,
                        help="the motion model's smoothing (default: %(default)s)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=4, help="frames per model call")
    parser.add_argument("--threads", type=int,
                        help="torch intra-op threads for the model (default: torch's)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.checkpoint is not None and args.config is not None:
        parser.error("--config goes with triangulation; a checkpoint carries its own config")
    if args.frame_interval < 1 or (args.max_frames is not None and args.max_frames < 1):
        parser.error("--frame-interval and --max-frames must be >= 1")
    try:
        tracker = TrackerConfig(max_gap=args.max_gap, max_distance=args.max_distance,
                                velocity_weight=args.velocity_weight)  # fmt: skip
    except ValueError as e:
        parser.error(str(e))
    still = dataclasses.replace(tracker, velocity_weight=0.0)

    if args.checkpoint is not None:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        predictor = Predictor(args.checkpoint, mode="model")
    else:
        config = load_config(args.config or REPO / "configs" / "cpu.yaml")
        predictor = Predictor(mode="triangulation", config=config)
    frames, _ = read_frames(args.data, split=args.split, data_cfg=predictor.config.data,
                            images=predictor.needs_images,
                            require_pseudo_labels=predictor.needs_pseudo_labels)  # fmt: skip
    gt: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    selected = keep_gt(select_frames(frames, args.frame_interval, args.max_frames), gt)
    logs: dict[str, SequenceLog] = {}
    t0 = time.perf_counter()
    for result in predict_sequence(selected, predictor, tracker_cfg=tracker,
                                   batch_size=args.batch_size):  # fmt: skip
        log = logs.setdefault(result.sequence, SequenceLog())
        gt_roots, gt_ids = gt.pop((result.sequence, result.frame))
        log.frames.append(result.frame)
        log.roots.append(result.poses[:, ROOT_INDEX])
        log.scores.append(result.scores)
        log.track_ids.append(result.track_ids)
        log.gt_roots.append(gt_roots)
        log.gt_ids.append(gt_ids)
    seconds = time.perf_counter() - t0

    # The tracker as predict runs it, and the same detections tracked without the motion model.
    motion = {name: score_sequence(log, log.track_ids) for name, log in logs.items()}
    without = {name: score_sequence(log, track_poses(log.roots, log.scores, still, log.frames))
               for name, log in logs.items()}  # fmt: skip
    motion["total"], without["total"] = total(motion.values()), total(without.values())
    rows = table_rows(motion, without)

    n_frames = int(motion["total"]["frames"])
    source = (f"model {predictor.checkpoint}" if args.checkpoint is not None
              else "triangulation of the pseudo 2D labels")  # fmt: skip
    every = f" (1 in {args.frame_interval})" if args.frame_interval > 1 else ""
    first = f", first {args.max_frames} per sequence" if args.max_frames else ""
    print(f"\n{args.data} {args.split} split: {len(logs)} sequences, {n_frames} frames{every}"
          f"{first}; {source}, read and predicted in {seconds:.1f} s "
          f"({n_frames / seconds:.1f} frames/s)")  # fmt: skip
    print(f"Tracker: max_gap {tracker.max_gap} frames, max_distance {tracker.max_distance:g} mm, "
          f"velocity_weight {tracker.velocity_weight:g} ('no motion': 0). A prediction matches "
          f"a GT person within {MATCH_DISTANCE_MM:g} mm root distance.")  # fmt: skip
    print("\nCounts (person-frames; FP = predictions matched to no GT person; Frag = matched "
          "runs resumed after a miss):")  # fmt: skip
    print(format_metrics_table(rows, COUNT_COLUMNS, digits=0, name_header="Sequence"))
    print("\nRates (MOTA = 1 - (misses + FP + ID switches) / GT person-frames; MOTP = mean "
          "root distance of the matches):")  # fmt: skip
    print(format_metrics_table(rows, RATE_COLUMNS, digits=1, name_header="Sequence"))
    print(json.dumps({
        "data": str(args.data), "split": args.split, "mode": predictor.mode,
        "checkpoint": None if predictor.checkpoint is None else str(predictor.checkpoint),
        "frames": n_frames, "seconds": round(seconds, 2),
        "tracker": {"max_gap": tracker.max_gap, "max_distance": tracker.max_distance,
                    "velocity_weight": tracker.velocity_weight},
        "motion": json_totals(motion["total"]), "no_motion": json_totals(without["total"]),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
