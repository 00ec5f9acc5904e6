"""Accuracy benchmark: self-supervised vs the supervised baseline vs triangulation.

    python benchmarks/accuracy.py --config configs/cpu.yaml [--out DIR] [--data DIR] [--set k=v ...]

On the preset's synthetic dataset (generated and ingested into ``DIR`` unless it is already
there, or an ingested dataset given by ``--data``) it

1. triangulates the pseudo 2D labels of the test split (the classical baseline);
2. trains the self-supervised stages (the preset's schedule; no 3D GT is ever read);
3. trains the supervised VoxelPose baseline on the train split's 3D GT with the same number
   of optimiser steps as the self-supervised stages together (``--supervised-steps`` to
   change it);

and evaluates all three on the test sequences, which no training stage sees. It prints the
metrics table, the learning curves (``train.eval_max_frames`` test frames spread over the split,
scored after every epoch; 0 = none), a table of training steps and wall time per stage, the peak
resident memory of the process, and as its last line one JSON object
``{"selfsup": {...}, "supervised": {...}, "triangulation": {...}}`` whose entries hold the
``evaluate`` keys (ap25 ... ap150, recall500, mpjpe in mm; the models also root_*) and, for
the trained methods, ``train_seconds``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from selfpose3d.baselines.triangulation import TriangulationConfig, evaluate_triangulation
from selfpose3d.config import Config, load_config
from selfpose3d.evaluation.report import PANOPTIC_COLUMNS, ROOT_COLUMNS, format_metrics_table
from selfpose3d.training.evaluate import evaluate_model, load_frames, load_trained_model
from selfpose3d.training.run import default_stages, train

KEYS = ("ap25", "ap50", "ap75", "ap100", "ap125", "ap150", "recall500", "mpjpe")


def prepare_data(cfg: Config, work: Path) -> Path:
    """The ingested dataset under ``work/parquet``, generated and ingested if missing."""
    from pipelines.ingest import ingest
    from selfpose3d.data.synthetic import generate

    data = work / "parquet"
    if (data / "summary.json").is_file():
        return data
    synth = work / "synthetic"
    if not (synth / "manifest.json").is_file():
        generate(cfg.synth, synth, overwrite=True, progress=True)
    ingest(synth, data, cfg.data, engine="plain", overwrite=True, progress=True)
    return data


def stage_steps(cfg: Config, stage: str, num_frames: int) -> int:
    """Optimiser steps of ``stage`` under ``cfg`` on a train split of ``num_frames``."""
    stage_cfg = cfg.train.stage(stage)
    per_epoch = math.ceil(num_frames / stage_cfg.batch_size)
    if cfg.train.max_steps_per_epoch:
        per_epoch = min(per_epoch, cfg.train.max_steps_per_epoch)
    return stage_cfg.epochs * per_epoch


def supervised_overrides(cfg: Config, steps: int, num_frames: int) -> list[str]:
    """Overrides of the supervised stage's epochs (and lr drops) for about ``steps`` steps."""
    per_epoch = stage_steps(cfg, "supervised", num_frames) // max(cfg.train.supervised.epochs, 1)
    epochs = max(1, round(steps / max(per_epoch, 1)))
    lr_steps = [e for e in cfg.train.supervised.lr_steps if e < epochs]
    if not lr_steps and epochs > 1:
        lr_steps = [max(1, round(epochs * 0.8))]  # one decay late in training, as VoxelPose
    return [f"train.supervised.epochs={epochs}", f"train.supervised.lr_steps={lr_steps}"]


def train_and_evaluate(
    cfg: Config, data: Path, out: Path, stages: list[str], test_frames: list, curve: list
) -> tuple[dict[str, float], dict[str, float]]:
    """Train ``stages`` into a fresh ``out``; returns (test metrics, wall seconds per stage).

    With ``train.eval_max_frames`` > 0, that many test frames are scored after every epoch
    and appended to ``curve`` (the learning curve; its time counts as training time)."""
    shutil.rmtree(out, ignore_errors=True)

    def report(m: dict) -> None:
        if "eval_mpjpe" in m:
            curve.append({"stage": m["stage"], "epoch": int(m["epoch"]) + 1,
                          **{k[5:]: m[k] for k in m if k.startswith("eval_")}})  # fmt: skip

    eval_split = "test" if cfg.train.eval_max_frames else None
    summary = train(cfg, data, out, stages=stages, report=report, resume=False, progress=True,
                    eval_split=eval_split)  # fmt: skip
    model, _ = load_trained_model(summary["final"])
    t0 = time.perf_counter()
    metrics = evaluate_model(model, test_frames, progress=True)
    seconds = dict(summary["stage_seconds"])
    seconds["evaluate"] = time.perf_counter() - t0
    metrics["train_seconds"] = sum(v for k, v in seconds.items() if k != "evaluate")
    return metrics, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=Path("configs/cpu.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override (repeatable)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="working directory (default: a temp dir, "
                        "deleted afterwards); the dataset there is reused")  # fmt: skip
    parser.add_argument("--data", type=Path, help="an ingested dataset to use instead")
    parser.add_argument("--supervised-steps", type=int, default=0,
                        help="optimiser steps of the supervised baseline (default: as many as "
                        "the self-supervised stages together)")  # fmt: skip
    parser.add_argument("--methods", default="triangulation,selfsup,supervised",
                        help="comma list of the methods to run")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    cfg = load_config(args.config, args.overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - {"triangulation", "selfsup", "supervised"}
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}")
    work = args.out or Path(tempfile.mkdtemp(prefix="selfpose3d-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    data = args.data or prepare_data(cfg, work)
    num_train = len(load_frames(data, "train"))
    test_frames = load_frames(data, "test")

    results: dict[str, dict[str, float]] = {}
    curves: dict[str, list[dict]] = {"selfsup": [], "supervised": []}
    steps: dict[str, dict[str, int]] = {}
    seconds: dict[str, dict[str, float]] = {}
    selfsup_stages = default_stages(cfg)
    selfsup_steps = {s: stage_steps(cfg, s, num_train) for s in selfsup_stages}
    if "triangulation" in methods:
        tri = evaluate_triangulation(data, "test", TriangulationConfig.from_model_config(cfg.model))
        results["triangulation"] = tri
        seconds["triangulation"] = {"evaluate": tri["seconds"]}
    if "selfsup" in methods:
        results["selfsup"], seconds["selfsup"] = train_and_evaluate(
            cfg, data, work / "selfsup", selfsup_stages, test_frames, curves["selfsup"]
        )
        steps["selfsup"] = selfsup_steps
    if "supervised" in methods:
        budget = args.supervised_steps or sum(selfsup_steps.values())
        sup_cfg = load_config(
            args.config, [*args.overrides, *supervised_overrides(cfg, budget, num_train)]
        )
        results["supervised"], seconds["supervised"] = train_and_evaluate(
            sup_cfg, data, work / "supervised", ["supervised"], test_frames, curves["supervised"]
        )
        steps["supervised"] = {"supervised": stage_steps(sup_cfg, "supervised", num_train)}

    print(f"\nconfig {args.config} {' '.join(args.overrides)}; data {data}: {num_train} train "
          f"frames, {len(test_frames)} test frames; {os.cpu_count()} cores")  # fmt: skip
    print("\nTest split (AP and recall in %, MPJPE in mm):")
    print(format_metrics_table(results, PANOPTIC_COLUMNS))
    trained = {k: v for k, v in results.items() if k != "triangulation"}
    if trained:
        print("\nRoots alone:")
        print(format_metrics_table(trained, ROOT_COLUMNS))
    for method, curve in curves.items():
        if curve:
            print(f"\nLearning curve of {method} ({cfg.train.eval_max_frames} test frames "
                  f"spread over the split, after every epoch):")  # fmt: skip
            print(format_metrics_table({f"{c['stage']} epoch {c['epoch']}": c for c in curve},
                                       (*PANOPTIC_COLUMNS, ("root_mpjpe", "Root MPJPE")),
                                       name_header="Stage"))  # fmt: skip
    print("\nWall time (training includes the per-epoch evaluations):")
    for method, per_stage in seconds.items():
        parts = [f"{stage} {steps.get(method, {}).get(stage, '-')} steps {s / 60:.1f} min"
                 if stage in steps.get(method, {}) else f"{stage} {s / 60:.1f} min"
                 for stage, s in per_stage.items()]  # fmt: skip
        print(f"  {method}: " + ", ".join(parts))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
    print(f"\nPeak resident memory of this process: {peak_gb:.2f} GB")
    if "selfsup" in results and "supervised" in results:
        ratio = results["selfsup"]["mpjpe"] / results["supervised"]["mpjpe"]
        print(f"MPJPE self-supervised / supervised: {ratio:.2f}")
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)
    extra = ("train_seconds", *(f"root_{k}" for k in KEYS))
    print(json.dumps({m: {k: round(float(r[k]), 3) for k in (*KEYS, *extra) if k in r}
                      for m, r in results.items()}))  # fmt: skip


if __name__ == "__main__":
    main()
