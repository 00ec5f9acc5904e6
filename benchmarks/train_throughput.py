"""Ray Train throughput with 1 and 2 workers: training samples per second per stage.

    python benchmarks/train_throughput.py --config configs/cpu.yaml --data DIR [--workers 1,2]
        [--root-steps 150] [--pose-steps 40] [--set k=v ...]

For each worker count it trains, in a fresh run directory on a local Ray instance, a short
root stage (so that the pose stage has proposals to work on) and a short pose stage, with
``--root-steps`` / ``--pose-steps`` steps per worker, and prints the multi-view frames trained
per second of each stage (all workers together: steps x batch x workers / stage wall time,
Ray Train's start-up excluded) and the whole run's wall time (start-up included). On one
machine the workers share its cores: ``--cpus-per-worker`` and torch's threads per worker
(``train.num_threads``, default cores / workers) set how.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from selfpose3d.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=Path("configs/cpu.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="an ingested dataset")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--workers", default="1,2", help="comma list of worker counts")
    parser.add_argument("--root-steps", type=int, default=150)
    parser.add_argument("--pose-steps", type=int, default=40)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    from pipelines.session import ray_session
    from pipelines.train import train_on_ray

    cores = os.cpu_count() or 1
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        threads = max(1, cores // workers)
        overrides = [
            *args.overrides, "train.root.epochs=1", "train.pose.epochs=1",
            f"train.num_threads={threads}", "train.l1_from_epoch=0",
        ]  # fmt: skip
        cfg = {
            stage: load_config(args.config, [*overrides, f"train.max_steps_per_epoch={steps}"])
            for stage, steps in (("root", args.root_steps), ("pose", args.pose_steps))
        }
        work = Path(tempfile.mkdtemp(prefix="selfpose3d-throughput-"))
        try:
            with ray_session(num_cpus=max(cores, workers + 1)):
                t0 = time.perf_counter()
                per_stage = {}
                for stage in ("root", "pose"):
                    # The pose run continues the root run (its root stage is done).
                    stages = ["root"] if stage == "root" else ["root", "pose"]
                    summary = train_on_ray(
                        cfg[stage], args.data, work / "run", stages,
                        workers=workers, cpus_per_worker=args.cpus_per_worker, resume=True,
                        eval_split=None, tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                        progress=False,
                    )  # fmt: skip
                    steps = summary["metrics"][stage]["step"]
                    bs = cfg[stage].train.stage(stage).batch_size
                    per_stage[stage] = steps * bs * workers / summary["stage_seconds"][stage]
                wall = time.perf_counter() - t0
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append((workers, threads, per_stage["root"], per_stage["pose"], wall))

    print(f"\nconfig {args.config} {' '.join(args.overrides)}; data {args.data}; {cores} cores; "
          f"root {args.root_steps} + pose {args.pose_steps} steps per worker")  # fmt: skip
    print("workers  threads/worker  root frames/s  pose frames/s  wall s (incl. start-up)")
    for workers, threads, root, pose, wall in rows:
        print(f"{workers:7d}  {threads:14d}  {root:13.2f}  {pose:13.2f}  {wall:22.1f}")


if __name__ == "__main__":
    main()
