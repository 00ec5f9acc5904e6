"""Does a sweep's best trial beat the paper's defaults under other seeds?

    python benchmarks/sweep_seeds.py --sweep runs/sweep-cpu --data runs/cpu/parquet --seeds 1

A sweep's trials all train with the same ``train.seed`` (and so the same batches and random
draws): their differences are the searched settings', for that seed. This retrains the best
trial's config (``SWEEP/best.yaml``) and the paper's point of the same space exactly as a
trial does (the trial overrides, the sweep's stages from its shared backbone and root_net,
the validation sequences held out) with each of ``--seeds``, two processes at a time of one
thread each (as the sweep's trials ran), and scores every final model on the same
validation frames as the sweep. Plain PyTorch, no Ray.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from selfpose3d.config import Config, config_from_dict, config_to_dict, load_config
from selfpose3d.evaluation.report import format_metrics_table
from tune.space import apply_overrides

KEYS = ("ap50", "ap75", "ap100", "ap150", "mpjpe", "root_mpjpe")


def points(sweep: Path) -> dict[str, Config]:
    """The best trial's config and the paper's point applied to the same trial setting."""
    from tune.space import active_params, load_space, paper_point
    from tune.sweep import trial_config

    base = load_config(sweep / "base.yaml")
    best = load_config(sweep / "best.yaml")
    params = active_params(load_space(base.sweep.space, base), base)
    paper = paper_point(params)
    if paper is None:
        raise SystemExit(f"{base.sweep.space}: a key of the space has no paper value")
    return {"best": best, "paper": trial_config(base, paper)}


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a sweep trial's worker
    try:
        return _train_and_score(job)
    finally:
        torch.set_num_threads(threads)


def _train_and_score(job: dict[str, Any]) -> dict[str, Any]:
    from selfpose3d.training.evaluate import (
        evaluate_model,
        load_frames,
        load_trained_model,
        spread_frames,
    )
    from selfpose3d.training.run import train_frames

    cfg = config_from_dict(job["config"], job["name"])
    validation = set(job["validation"])
    frames = load_frames(job["data"], "train")
    train = [f for f in frames if f.sequence not in validation]
    held_out = spread_frames([f for f in frames if f.sequence in validation], job["frames"])
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        summary = train_frames(cfg, train, out, cfg.sweep.stages, progress=False,
                               init=job["init"])  # fmt: skip
        seconds = time.perf_counter() - t0
        model, _ = load_trained_model(summary["final"])
        scores = evaluate_model(model, held_out)
    return {"name": job["name"], "seed": job["seed"], "train_seconds": seconds, **scores}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", type=Path, required=True, help="a finished `selfpose3d tune` --out")
    p.add_argument("--data", type=Path, required=True, help="the sweep's dataset")
    p.add_argument("--seeds", default="1", help="train.seed values, comma-separated")
    p.add_argument("--jobs", type=int, default=2, help="trainings at a time (1 thread each)")
    args = p.parse_args(argv)

    state = json.loads((args.sweep / "sweep.json").read_text())
    configs = points(args.sweep)
    frames = configs["best"].train.eval_max_frames
    jobs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for name, cfg in configs.items():
            cfg = apply_overrides(cfg, {"train.seed": seed, "train.num_threads": 1}, "--seeds")
            jobs.append({"name": name, "seed": seed, "config": config_to_dict(cfg),
                         "data": str(args.data), "init": state["init"],
                         "validation": state["validation"], "frames": frames})  # fmt: skip
    print(f"{len(jobs)} trainings, {args.jobs} at a time; validation: {frames} frames "
          f"spread over {', '.join(state['validation'])}", flush=True)
    if args.jobs == 1:
        results = [run_one(job) for job in jobs]
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(run_one, jobs))
    rows = {f"{r['name']}, seed {r['seed']}": r for r in results}
    print(format_metrics_table(rows, [(k, k) for k in KEYS], name_header="config"))
    for seed in sorted({r["seed"] for r in results}):
        by = {r["name"]: r for r in results if r["seed"] == seed}
        print(f"seed {seed}: best - paper = {by['best']['mpjpe'] - by['paper']['mpjpe']:+.1f} mm "
              f"MPJPE, {by['best']['ap100'] - by['paper']['ap100']:+.1f} AP100")
    print(json.dumps([{k: r[k] for k in ("name", "seed", "train_seconds", *KEYS)}
                      for r in results]))  # fmt: skip
    return results


if __name__ == "__main__":
    main()
