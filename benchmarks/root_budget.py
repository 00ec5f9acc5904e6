"""How many root_net steps a short training needs: the root stage alone at several step budgets
and seeds, its proposals scored on test frames.

    python benchmarks/root_budget.py --config configs/cpu.yaml --data runs/cpu/parquet \
        --steps 125,250 --seeds 0,1

Each run trains ``root`` only (plain PyTorch loop, no Ray) for ``steps`` optimiser steps with
``train.seed`` = seed, then scores the root proposals on every ``--every``-th test frame (at
most ``--frames``). The quickstart's root budget comes from this table: the spread over seeds
shows how much a short budget leaves to chance.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from selfpose3d.config import load_config
from selfpose3d.evaluation.report import format_metrics_table
from selfpose3d.training.evaluate import evaluate_model, load_frames, load_trained_model
from selfpose3d.training.run import train


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/cpu.yaml")
    p.add_argument("--data", required=True, help="an ingested dataset (selfpose3d ingest)")
    p.add_argument("--steps", default="125,250", help="root step budgets, comma-separated")
    p.add_argument("--seeds", default="0,1", help="train.seed values, comma-separated")
    p.add_argument("--steps-per-epoch", type=int, default=125)
    p.add_argument("--every", type=int, default=7, help="score every n-th test frame")
    p.add_argument("--frames", type=int, default=100, help="at most this many test frames")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    test = load_frames(args.data, "test")[:: args.every][: args.frames]
    rows: dict[str, dict[str, float]] = {}
    results = []
    for steps in (int(s) for s in args.steps.split(",")):
        if steps % args.steps_per_epoch:
            p.error(f"--steps {steps} is not a multiple of --steps-per-epoch")
        for seed in (int(s) for s in args.seeds.split(",")):
            cfg = load_config(args.config, [
                *args.overrides, f"train.max_steps_per_epoch={args.steps_per_epoch}",
                f"train.root.epochs={steps // args.steps_per_epoch}", f"train.seed={seed}",
                "train.eval_max_frames=0",
            ])  # fmt: skip
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                train(cfg, args.data, out, ["root"], progress=False, resume=False)
                seconds = time.perf_counter() - t0
                model, _ = load_trained_model(out)
                m = evaluate_model(model, test)
            result = {"steps": steps, "seed": seed, "train_seconds": round(seconds, 1),
                      **{k: round(m[f"root_{k}"], 1) for k in ("mpjpe", "ap50", "ap100",
                                                                "recall500")}}  # fmt: skip
            results.append(result)
            rows[f"{steps} steps, seed {seed}"] = {"train_seconds": seconds, **m}
            print(f"steps {steps}, seed {seed}: root MPJPE {m['root_mpjpe']:.1f} mm", flush=True)
    print(f"\nroot proposals on {len(test)} test frames of {args.data}:")
    columns = [("train_seconds", "Train s"), ("root_mpjpe", "Root MPJPE mm"),
               ("root_ap50", "Root AP50"), ("root_ap100", "Root AP100"),
               ("root_recall500", "Root recall@500")]  # fmt: skip
    print(format_metrics_table(rows, columns, name_header="Run"))
    print(json.dumps(results))
    return {"runs": results}


if __name__ == "__main__":
    main()
