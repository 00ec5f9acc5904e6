"""The ``selfpose3d`` command.

Each sub-command parses its arguments, resolves the config (YAML + ``--set`` overrides) and
calls one library function; heavy imports (torch, Ray) happen inside the sub-command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from selfpose3d.config import Config, ConfigError, dump_config, load_config

EPILOG = """examples:
  selfpose3d synth --config configs/smoke.yaml --out data/smoke
  selfpose3d ingest data/smoke --config configs/smoke.yaml --out data/smoke-parquet
  selfpose3d train --config configs/smoke.yaml --data data/smoke-parquet --out runs/smoke
  selfpose3d evaluate --checkpoint runs/smoke --data data/smoke-parquet
  selfpose3d config --config configs/cpu.yaml --set model.pose_bins=[48,48,48]
  selfpose3d submit --address http://127.0.0.1:8265 --working-dir . -- \\
      train --config configs/cpu.yaml --data /shared/cpu-parquet --out /shared/runs/cpu
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help="YAML preset (configs/smoke.yaml, cpu.yaml, "
        "paper.yaml); defaults apply to anything it leaves out",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value by its dotted path, e.g. "
        "--set synth.frames_per_sequence=50 (repeatable; wins over the YAML)",
    )


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address",
                   help="Ray cluster address (default: $RAY_ADDRESS, else local)")  # fmt: skip
    p.add_argument("--tracking-uri",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a SQLite "
                   "store mlflow.db in the working directory)")  # fmt: skip


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def cmd_config(args: argparse.Namespace) -> int:
    print(dump_config(_config(args)), end="")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from selfpose3d.data.synthetic import generate

    cfg = _config(args)
    if args.workers is not None:
        cfg.synth.workers = args.workers
    manifest = generate(cfg.synth, args.out, overwrite=args.overwrite, progress=not args.quiet)
    counts = manifest.get("counts", {})
    print(f"wrote {args.out}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    stats = manifest.get("pseudo_label_stats", {})
    if stats:
        print(
            "pseudo labels: "
            + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()
            )
        )
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipelines.ingest import format_summary, ingest

    cfg = _config(args)
    summary = ingest(
        args.src,
        args.out,
        cfg.data,
        engine=args.engine,
        num_cpus=args.num_cpus,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if not args.json:
        print(f"wrote {args.out} (summary.json, train/, test/)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines.session import ray_session
    from pipelines.train import train_on_ray
    from selfpose3d.evaluation.report import PANOPTIC_COLUMNS, ROOT_COLUMNS, format_metrics_table
    from selfpose3d.tracking import Tracker, ui_command
    from selfpose3d.training.run import evaluate, load_frames

    cfg = _config(args)
    if not (args.data / "train").is_dir():
        raise FileNotFoundError(f"{args.data}: no train split (expected the output of "
                                f"`selfpose3d ingest`)")  # fmt: skip
    has_test = (args.data / args.eval_split).is_dir() if args.eval_split else False
    if has_test and any(f.gt_poses is None for f in load_frames(args.data, args.eval_split)):
        has_test = False  # a recording without 3D GT cannot be scored
    # Ray Data reads the shards while every Train worker holds its CPUs: leave it one more.
    local_cpus = max(os.cpu_count() or 1, math.ceil(args.workers * args.cpus_per_worker) + 1)
    with ray_session(args.address, num_cpus=local_cpus, dashboard=True):
        summary = train_on_ray(
            cfg, args.data, args.out, args.stages, workers=args.workers,
            cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
            use_gpu=args.use_gpu, resume=args.resume, tracking_uri=args.tracking_uri,
            eval_split=args.eval_split if has_test else None, progress=not args.quiet,
            placement_strategy=args.placement_strategy,
        )  # fmt: skip
    print(f"trained {', '.join(summary['stages'])} in {summary['wall_seconds'] / 60:.1f} min "
          f"on {summary['workers']} worker(s); final model: {summary['final']}")  # fmt: skip
    if summary.get("resumed_from"):
        at = summary["resumed_from"]
        print(f"resumed from the checkpoint at stage {at['stage']}, epoch {at['epoch']}, "
              f"step {at['step']}")  # fmt: skip
    tracker = Tracker(args.out, tracking_uri=args.tracking_uri)
    if has_test:
        metrics = evaluate(args.out, args.data, args.eval_split, progress=not args.quiet)
        tracker.start({})
        tracker.log_metrics({f"test_{k}": v for k, v in metrics.items()}, 0)
        tracker.finish()
        print(f"\n{args.eval_split} split:")
        print(format_metrics_table({args.out.name: metrics}, PANOPTIC_COLUMNS, name_header="Run"))
        print(format_metrics_table({args.out.name: metrics}, ROOT_COLUMNS, name_header="Run"))
    print(f"\nMLflow: {tracker.tracking_uri} (run {summary.get('mlflow_run_id')}); "
          f"open the UI with:\n  {ui_command(tracker.tracking_uri)}")  # fmt: skip
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from pipelines.session import ray_session
    from selfpose3d.tracking import resolve_tracking_uri, ui_command
    from tune.sweep import format_trials, run_sweep

    overrides = list(args.overrides)
    for flag, key in ((args.num_samples, "num_samples"), (args.max_concurrent, "max_concurrent"),
                      (args.space, "space")):  # fmt: skip
        if flag is not None:
            overrides.append(f"sweep.{key}={flag}")
    cfg = load_config(args.config, overrides)
    if not (args.data / "train").is_dir():
        raise FileNotFoundError(f"{args.data}: no train split (expected the output of "
                                f"`selfpose3d ingest`)")  # fmt: skip
    if (args.out / "base.yaml").exists() != args.resume:
        raise (FileNotFoundError(f"{args.out}: no sweep to resume here") if args.resume else
               FileExistsError(f"{args.out} already holds a sweep; pass --resume to continue "
                               f"it, or choose another --out"))  # fmt: skip
    # A trial holds one CPU and keeps one free for its data tasks while its worker trains:
    # on a local machine Ray gets three logical CPUs per core, so that each concurrent
    # trial's worker has a core.
    with ray_session(args.address, num_cpus=3 * (os.cpu_count() or 1), dashboard=True):
        result = run_sweep(cfg, args.data, args.out, init=args.init, resume=args.resume,
                           tracking_uri=args.tracking_uri, progress=not args.quiet)  # fmt: skip
    if result.interrupted:
        print(f"selfpose3d tune: interrupted after {len(result.trials)} trial(s) started; "
              f"continue with --resume", file=sys.stderr)  # fmt: skip
        return 130
    print(f"\n{len(result.trials)} trials in {result.wall_seconds / 60:.1f} min; validation: "
          f"{', '.join(result.validation)} (held out of the train split)")  # fmt: skip
    print(format_trials(result.trials, result.params, result.best))
    if result.best is None:
        print("no trial finished an evaluation; no best config")
        return 1
    print(f"\nbest trial {result.best.trial_id}: "
          + ", ".join(f"{k}={v}" for k, v in result.best.params.items()))
    print(f"best config: {args.out / 'best.yaml'}; all trials: {args.out / 'trials.csv'}")
    uri = resolve_tracking_uri(args.tracking_uri)
    print(f"MLflow: {uri} (sweep run {result.mlflow_run_id}); open the UI with:\n"
          f"  {ui_command(uri)}")  # fmt: skip
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from selfpose3d.evaluation.report import PANOPTIC_COLUMNS, ROOT_COLUMNS, format_metrics_table
    from selfpose3d.training.run import evaluate

    metrics = evaluate(args.checkpoint, args.data, args.split, batch_size=args.batch_size,
                       progress=not args.quiet and not args.json)  # fmt: skip
    if args.json:
        print(json.dumps(metrics))
        return 0
    name = {args.checkpoint.name or str(args.checkpoint): metrics}
    print(f"{args.data}/{args.split}: {int(metrics['num_gt'])} GT people, "
          f"{int(metrics['num_pred'])} predictions (AP and recall in %, MPJPE in mm)")  # fmt: skip
    print(format_metrics_table(name, PANOPTIC_COLUMNS, name_header="Checkpoint"))
    print(format_metrics_table(name, ROOT_COLUMNS, name_header="Checkpoint"))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from cluster import jobs

    command = args.job_command[1:] if args.job_command[:1] == ["--"] else args.job_command
    job_id = jobs.submit(
        command, address=args.address, working_dir=args.working_dir,
        env_vars=jobs.parse_env(args.env), pip=args.pip, submission_id=args.submission_id,
        entrypoint_num_cpus=args.entrypoint_num_cpus,
        entrypoint_num_gpus=args.entrypoint_num_gpus,
    )  # fmt: skip
    print(f"submitted job {job_id} to {jobs.job_server_address(args.address)}", file=sys.stderr)
    if args.no_wait:
        print(job_id)
        return 0
    try:
        status = jobs.follow(job_id, address=args.address)
    except KeyboardInterrupt:
        print(f"\nstopped following job {job_id}; it keeps running. Stop it with: "
              f"selfpose3d jobs stop {job_id}", file=sys.stderr)  # fmt: skip
        return 130
    print(f"job {job_id}: {status}", file=sys.stderr)
    return jobs.exit_code(status)


def cmd_jobs(args: argparse.Namespace) -> int:
    from cluster import jobs

    if args.action == "list":
        print(jobs.format_jobs(jobs.list_jobs(args.address)))
        return 0
    if args.job_id is None:
        raise ValueError(f"`jobs {args.action}` needs a submission id (see `selfpose3d jobs "
                         f"list`)")  # fmt: skip
    if args.action == "logs":
        if args.follow:
            status = jobs.follow(args.job_id, address=args.address)
            return jobs.exit_code(status)
        print(jobs.logs(args.job_id, args.address), end="")
        return 0
    stopped = jobs.stop(args.job_id, args.address)
    print(f"job {args.job_id}: " + ("stop requested" if stopped else "had already ended"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfpose3d",
        description="Self-supervised multi-person multi-view 3D pose estimation (SelfPose3d).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print the resolved config (defaults < YAML < --set)")
    _add_config_args(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "synth",
        help="generate a synthetic dataset in the CMU Panoptic layout",
        description="Generate synthetic multi-view recordings of several people "
        "(images, calibration, GT 3D poses, simulated pseudo 2D labels) in the "
        "exact CMU Panoptic layout, from the config's `synth` section.",
    )
    _add_config_args(p)
    p.add_argument("--out", type=Path, required=True, help="output root directory")
    p.add_argument("--workers", type=int, help="generation processes (default: one per core)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing dataset generated from another config",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "ingest",
        help="convert a Panoptic-layout root to sharded Parquet",
        description="Read a Panoptic-layout root (real or synthetic) and write "
        "one Parquet row per multi-view frame to OUT/train and OUT/test, plus "
        "OUT/summary.json; the config's `data` section selects cameras, "
        "sequences, frame interval and image size.",
    )
    p.add_argument("src", type=Path, help="Panoptic-layout root directory")
    _add_config_args(p)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--engine",
        choices=["ray", "plain"],
        default="ray",
        help="ray: a Ray Data job (default); plain: one process, for debugging",
    )
    p.add_argument("--num-cpus", type=int, help="CPUs for the Ray job (default: all)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an output directory that holds another dataset",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "train",
        help="train the stages on Ray Train (local Ray or a cluster), tracked in MLflow",
        description="Train the model on an ingested dataset with Ray Train: the "
        "self-supervised stages by default (root, pose, finetune; backbone first in "
        "`images` mode), or the `supervised` baseline. OUT gets the resolved config.yaml, "
        "Ray Train's checkpoints (OUT/ray_train) and the final model (OUT/final). Running "
        "the same command again with --resume continues from the latest checkpoint.",
    )
    _add_config_args(p)
    p.add_argument("--data", type=Path, required=True, help="an ingest output directory")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--stages", nargs="+", metavar="STAGE",
                   help="stages in order (backbone root pose finetune supervised); default: "
                   "the self-supervised schedule of the config's input mode")  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP processes)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs each worker reserves; torch uses as many threads")  # fmt: skip
    p.add_argument("--gpus-per-worker", type=float, default=1.0,
                   help="GPUs per worker when GPUs are used")  # fmt: skip
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="use_gpu", action="store_const", const=True,
                     help="require GPUs (default: use them when there are enough)")  # fmt: skip
    gpu.add_argument("--cpu", dest="use_gpu", action="store_const", const=False,
                     help="train on CPUs even where GPUs exist")  # fmt: skip
    p.add_argument("--placement-strategy", choices=["PACK", "SPREAD"], default="PACK",
                   help="PACK: workers on as few nodes as possible (default); SPREAD: one per "
                   "node where possible")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue the run already in --out from its latest checkpoint")  # fmt: skip
    _add_cluster_args(p)
    p.add_argument("--eval-split", default="test",
                   help="split evaluated after every epoch and at the end ('' = none)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "tune",
        help="search hyperparameters with Ray Tune + Optuna (each trial a Ray Train run)",
        description="Sweep the config's `sweep` section: Optuna (TPE, seeded, the paper's "
        "values first) proposes overrides from the search space, every trial trains the "
        "sweep's stages (pose, finetune) from shared backbone/root weights on Ray Train and "
        "is scored after each epoch on validation sequences held out of the train split; "
        "ASHA stops weak trials early. SWEEP gets the trials' runs, trials.csv and best.yaml "
        "(a config for `selfpose3d train`); MLflow gets a parent run with one child per trial.",
    )
    _add_config_args(p)
    p.add_argument("--data", type=Path, required=True, help="an ingest output directory")
    p.add_argument("--out", type=Path, required=True, help="sweep directory")
    p.add_argument("--num-samples", type=int, help="trials in all (sweep.num_samples)")
    p.add_argument("--max-concurrent", type=int,
                   help="trials at once (sweep.max_concurrent; default: what the cluster fits)")
    p.add_argument("--space",
                   help="search space: a YAML file or a name in tune/spaces (default: paper)")
    p.add_argument("--init", type=Path,
                   help="a `train` output whose backbone and root_net every trial starts from "
                   "(default: train those stages once first)")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out: finished trials are kept")  # fmt: skip
    _add_cluster_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "evaluate",
        help="score a trained model with the Panoptic protocol",
        description="Predict every frame of a split with a trained model and print "
        "AP25..AP150, recall@500 and MPJPE, for poses and for roots alone.",
    )
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a run directory, its final/ directory or a checkpoint file")  # fmt: skip
    p.add_argument("--data", type=Path, required=True, help="an ingest output directory")
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (ap25 ... mpjpe, root_*), no table")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "submit",
        help="run a selfpose3d command as a job on a Ray cluster, streaming its logs",
        description="Submit `selfpose3d COMMAND ...` to a Ray cluster's job server (Ray Job "
        "Submission), stream its logs until it ends and exit with its status (0 succeeded, "
        "1 failed, 130 stopped). Paths in the command are the cluster's: with --working-dir "
        "the folder is uploaded and becomes the job's working directory; data and runs "
        "belong on storage every node reaches. Ctrl-C stops following, not the job.",
    )
    p.add_argument("--address",
                   help="job server, http://HEAD:8265 (default: $RAY_ADDRESS, else "
                   "http://127.0.0.1:8265)")  # fmt: skip
    p.add_argument("--working-dir", type=Path,
                   help="folder to upload as the job's working directory (.git, .venv, runs "
                   "and what .gitignore lists are left out)")  # fmt: skip
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment variable of the job, e.g. MLFLOW_TRACKING_URI=http://"
                   "mlflow:5000 (repeatable)")  # fmt: skip
    p.add_argument("--pip", action="append", default=[], metavar="PACKAGE",
                   help="extra pip package installed for the job (repeatable)")  # fmt: skip
    p.add_argument("--submission-id", help="the job's id (default: generated)")
    p.add_argument("--entrypoint-num-cpus", type=float,
                   help="CPUs reserved for the job's driver (default: none)")  # fmt: skip
    p.add_argument("--entrypoint-num-gpus", type=float,
                   help="GPUs reserved for the job's driver (default: none)")  # fmt: skip
    p.add_argument("--no-wait", action="store_true",
                   help="print the submission id and return at once")  # fmt: skip
    p.add_argument("job_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the selfpose3d command to run, e.g. -- train --config ...")  # fmt: skip
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "jobs",
        help="list the cluster's jobs, print a job's logs, stop a job",
        description="Inspect the jobs of a Ray cluster's job server: `list`, `logs ID "
        "[--follow]`, `stop ID` (SIGTERM to the job's driver; a stopped `train` continues "
        "with `train --resume` and the same --out).",
    )
    p.add_argument("action", choices=["list", "logs", "stop"])
    p.add_argument("job_id", nargs="?", help="submission id (logs, stop)")
    p.add_argument("--follow", action="store_true", help="logs: stream until the job ends")
    p.add_argument("--address",
                   help="job server (default: $RAY_ADDRESS, else http://127.0.0.1:8265)")
    p.set_defaults(func=cmd_jobs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(os.environ.get("SELFPOSE3D_DEBUG"))  # whole tracebacks, for bug reports
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, ConnectionError) as e:
        if debug:
            raise
        print(f"selfpose3d {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if debug or args.command not in ("submit", "jobs"):
            raise
        # The job server's refusals (an unknown job id, a duplicate submission id).
        print(f"selfpose3d {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"selfpose3d {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
