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
import warnings
from pathlib import Path

from selfpose3d.config import Config, ConfigError, dump_config, load_config

EPILOG = """examples:
  selfpose3d synth --config configs/smoke.yaml --out data/smoke
  selfpose3d ingest data/smoke --config configs/smoke.yaml --out data/smoke-parquet
  selfpose3d train --config configs/smoke.yaml --data data/smoke-parquet --out runs/smoke
  selfpose3d evaluate --checkpoint runs/smoke --data data/smoke-parquet
  selfpose3d predict --checkpoint runs/smoke --data data/smoke --out predictions/smoke
  selfpose3d visualize --predictions predictions/smoke --data data/smoke --out vis/smoke
  selfpose3d export --checkpoint runs/smoke --out exports/smoke
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


def _rig_problems(cameras: list) -> list[str]:
    """What suggests a wrong ``--unit`` or ``--up``: nothing is imported wrongly yet, but
    nothing would be found in 3D either (no floor position that two cameras see)."""
    from selfpose3d.data.capture_space import capture_space, up_axis_warning

    problems = [w for w in [up_axis_warning(cameras)] if w]
    try:
        capture_space(cameras)
    except ValueError as e:
        problems.append(str(e))
    return problems


def cmd_import_recording(args: argparse.Namespace) -> int:
    from pipelines.recordings import format_summary, import_recording, parse_offsets
    from selfpose3d.data.rigs import load_rig

    offsets = parse_offsets(args.offset)
    cameras = load_rig(args.rig, format=args.rig_format, unit=args.unit, up=args.up)
    for problem in _rig_problems(cameras):
        print(f"warning: {args.rig}: {problem}", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        summary = import_recording(
            cameras, args.input, args.out, args.sequence, offsets=offsets, start=args.start,
            stop=args.stop, every=args.every, jpeg_quality=args.jpeg_quality,
            rescale=args.rescale, overwrite=args.overwrite, engine=args.engine,
            num_cpus=args.num_cpus, address=args.address, progress=not args.quiet,
        )  # fmt: skip
    for w in caught:  # e.g. cameras of unequal length: a user message, not a source line
        print(f"warning: {w.message}", file=sys.stderr)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    from pipelines.pseudo_labels import format_summary, pseudo_label

    summary = pseudo_label(
        args.root, sequences=args.sequences, detector=args.detector, weights=args.weights,
        random_init=args.random_init, coco=args.coco, coco_images=args.coco_images,
        coco_pattern=args.coco_pattern, batch_size=args.batch_size, actors=args.actors,
        use_gpu=args.use_gpu, score_threshold=args.score_threshold, min_size=args.min_size,
        max_size=args.max_size, engine=args.engine, address=args.address,
        overwrite=args.overwrite, progress=not args.quiet,
    )  # fmt: skip
    print(format_summary(summary))
    print(f"wrote {len(summary)} pseudo-label file(s): "
          + ", ".join(s["file"] for s in summary.values()))  # fmt: skip
    return 0


def _scorable_split(data: Path, split: str) -> bool:
    """Whether ``data/split`` holds frames, all with 3D GT to score them against."""
    if not split or not (data / split).is_dir():
        return False
    from selfpose3d.data.schema import read_dataset

    frames = list(read_dataset(data / split))
    return bool(frames) and all(f.gt_poses is not None for f in frames)


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines.session import ray_session
    from pipelines.train import train_on_ray
    from selfpose3d.evaluation.report import PANOPTIC_COLUMNS, ROOT_COLUMNS, format_metrics_table
    from selfpose3d.tracking import Tracker, ui_command
    from selfpose3d.training.evaluate import evaluate

    cfg = _config(args)
    if not (args.data / "train").is_dir():
        raise FileNotFoundError(f"{args.data}: no train split (expected the output of "
                                f"`selfpose3d ingest`)")  # fmt: skip
    has_test = _scorable_split(args.data, args.eval_split)
    if args.eval_split and not has_test:
        print(f"note: {args.data / args.eval_split} holds no frames with 3D ground truth (a "
              f"recording has none): the run is not scored", file=sys.stderr)  # fmt: skip
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
    from selfpose3d.training.evaluate import evaluate

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


def cmd_predict(args: argparse.Namespace) -> int:
    from selfpose3d.inference import run_predict
    from selfpose3d.tracks import TrackerConfig

    if args.checkpoint is not None and (args.config is not None or args.overrides):
        raise ValueError("--config and --set go with --triangulate; a checkpoint carries its "
                         "own config")  # fmt: skip
    config = None if args.checkpoint is not None else _config(args)
    limits = {k: v for k, v in (("max_gap", args.max_gap), ("max_distance", args.max_distance))
              if v is not None}  # fmt: skip
    tracker = None if args.no_track else TrackerConfig(**limits)
    summary = run_predict(
        args.data, args.out, checkpoint=args.checkpoint, config=config, split=args.split,
        sequences=args.sequence, batch_size=args.batch_size, device=args.device,
        tracker_cfg=tracker, overwrite=args.overwrite, progress=not args.quiet,
    )  # fmt: skip
    tracks = "untracked" if args.no_track else f"{summary['tracks']} tracks"
    print(f"predicted {summary['frames']} frames: {summary['people']} people, {tracks}, "
          f"{summary['frames_per_second']:.1f} frames/s ({summary['mode']}, "
          f"{summary['device']}); wrote {args.out}")  # fmt: skip
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


def cmd_visualize(args: argparse.Namespace) -> int:
    from selfpose3d.render_predictions import parse_frame_span, visualize_predictions

    span = parse_frame_span(args.frames) if args.frames else None
    summary = visualize_predictions(
        args.predictions, args.data, args.out, sequence=args.sequence, frames=span,
        video=not args.no_video, fps=args.fps, every=args.every, max_frames=args.max_frames,
    )  # fmt: skip
    for seq, done in summary["sequences"].items():
        video = f", video {done['video']}" if done["video"] else ""
        print(f"{seq}: {done['frames']} frames, {len(done['overlays'])} overlays, "
              f"{len(done['scenes'])} 3D scenes{video}")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from selfpose3d.export import export_model

    out = export_model(args.checkpoint, args.out, format=args.format)
    print(f"exported {args.checkpoint} to {out} ({args.format}); load it with "
          f"selfpose3d.export.ExportedModel.load({str(out)!r})")  # fmt: skip
    return 0


def _yaml_list(values: list[float] | list[int]) -> str:
    """[4600.0, 4200.0] -> "[4600,4200]": shell-friendly ``--set`` values."""
    return "[" + ",".join(str(int(v)) if float(v).is_integer() else str(v) for v in values) + "]"


def cmd_rig(args: argparse.Namespace) -> int:
    import numpy as np

    from selfpose3d.data.capture_space import fit_space, up_axis_warning
    from selfpose3d.data.rigs import load_rig, save_rig

    cameras = load_rig(args.rig, format=args.format, unit=args.unit, up=args.up,
                       cameras=args.cameras)  # fmt: skip
    if args.rig_command == "convert":
        save_rig(args.out, cameras, args.to, unit=args.out_unit)
        unit = "" if args.to == "panoptic" else f", translations in {args.out_unit}"
        print(f"wrote {args.out}: {len(cameras)} cameras as {args.to} (z up{unit})")
        return 0
    preset = args.config or Path(__file__).resolve().parents[1] / "configs" / "cpu.yaml"
    if not preset.is_file() and args.config is None:
        raise FileNotFoundError(f"{preset}: the cpu preset is not there; pass --config PRESET")
    model = load_config(preset, args.overrides).model
    warning = up_axis_warning(cameras)
    try:
        fitted = fit_space(model, cameras, floor_z=args.floor_z, height=args.height,
                           min_views=args.min_views, margin=args.margin)  # fmt: skip
    except ValueError as e:
        raise ValueError(f"{args.rig}: {e}" + (f"; {warning}" if warning else "")) from e
    center = np.asarray(fitted.space_center)
    print(f"{args.rig}: {len(cameras)} cameras (world mm, z up)")
    print(f"{'camera':<12} {'size':>10} {'fx':>8} {'fy':>8} {'centre x, y, z (mm)':>26} "
          f"{'to space centre (mm)':>21}")  # fmt: skip
    for c in cameras:
        x, y, z = c.center
        print(f"{c.name:<12} {f'{c.width}x{c.height}':>10} {c.K[0, 0]:8.1f} {c.K[1, 1]:8.1f} "
              f"{x:8.0f} {y:8.0f} {z:8.0f} {np.linalg.norm(c.center - center):21.0f}")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    voxel = [s / (b - 1) for s, b in zip(model.space_size, model.root_bins, strict=True)]
    print(f"\ncapture space (floor seen by >= {args.min_views} cameras at z = {args.floor_z:g} "
          f"and {args.floor_z + args.height / 2:g} mm): centre {_yaml_list(fitted.space_center)}"
          f" mm, size {_yaml_list(fitted.space_size)} mm")  # fmt: skip
    label = args.config or "configs/cpu.yaml"
    print(f"for {label} (root voxels <= {' x '.join(f'{v:.0f}' for v in voxel)} mm), pass:")
    print(f"  --set model.space_center={_yaml_list(fitted.space_center)} "
          f"--set model.space_size={_yaml_list(fitted.space_size)} "
          f"--set model.root_bins={_yaml_list(fitted.root_bins)}")  # fmt: skip
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
        "import-recording",
        help="turn per-camera image folders or videos + a rig into a Panoptic-layout sequence",
        description="Write a recording (INPUT/<camera>/ folders of images, or INPUT/<camera>.mp4"
        "|.avi|.mov|.mkv videos, synchronised by frame index) of a calibrated rig as sequence "
        "NAME of the Panoptic-layout root OUT: OUT/NAME/calibration_NAME.json, OUT/NAME/hdImgs/"
        "<camera>/<camera>_<frame:08d>.jpg (frames keep their recording index) and NAME in the "
        "train split of OUT/manifest.json. Then run `selfpose3d pseudo-label` and `selfpose3d "
        "ingest`.",
    )
    p.add_argument("--rig", type=Path, required=True,
                   help="the rig's calibration: Panoptic calibration_*.json, anipose "
                   "calibration.toml or OpenCV YAML/JSON")  # fmt: skip
    p.add_argument("--rig-format", default="auto",
                   help="auto (default), panoptic, anipose or opencv")  # fmt: skip
    p.add_argument("--unit", default="mm",
                   help="length unit of the rig's translations: mm (default), cm, m")
    p.add_argument("--up", default="z", help="the rig's world up axis: z (default), y, -y")
    p.add_argument("--input", type=Path, required=True,
                   help="directory with one image folder or one video per camera, named "
                   "after the rig's cameras")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="Panoptic-layout root to write into")
    p.add_argument("--sequence", required=True, help="name of the new sequence")
    p.add_argument("--offset", action="append", default=[], metavar="CAM=N",
                   help="recording frame i is frame i+N of camera CAM (N >= 0; repeatable)")
    p.add_argument("--start", type=int, default=0, help="first recording frame kept")
    p.add_argument("--stop", type=int, help="recording frame to stop before (default: the end)")
    p.add_argument("--every", type=int, default=1, help="keep every N-th frame")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--rescale", action="store_true",
                   help="scale a rig calibrated at another resolution of the same aspect "
                   "ratio to the recording's image size")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing sequence NAME")
    p.add_argument("--engine", choices=["ray", "plain"], default="ray",
                   help="ray: a Ray Data job (default); plain: one process")  # fmt: skip
    p.add_argument("--num-cpus", type=int, help="CPUs for the Ray job (default: all)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import_recording)

    p = sub.add_parser(
        "pseudo-label",
        help="pseudo 2D poses for a Panoptic-layout root: a detector on Ray, or a COCO import",
        description="Write ROOT/<seq>/pseudo2d_<seq>.json (Panoptic-15, px of the image files) "
        "for every view of every frame: run Keypoint R-CNN as a Ray Data job (one GPU per "
        "actor where the cluster has GPUs, else CPU actors), or import the COCO keypoints "
        "output of any detector with --coco. Weights are never downloaded: pass --weights, or "
        "put torchvision's keypointrcnn_resnet50_fpn_coco-fc266e95.pth in "
        "~/.cache/torch/hub/checkpoints/ (or $TORCH_HOME/hub/checkpoints/).",
    )
    p.add_argument("root", type=Path, help="Panoptic-layout root")
    p.add_argument("--sequences", nargs="+", metavar="S",
                   help="sequences to label (default: all of the root, or those the COCO "
                   "file names)")  # fmt: skip
    source = p.add_mutually_exclusive_group()
    source.add_argument("--coco", type=Path, metavar="FILE",
                        help="import this COCO keypoints file (a results list with "
                        "--coco-images, or a dataset file with annotations) instead of "
                        "running a detector")  # fmt: skip
    source.add_argument("--weights", type=Path, metavar="PATH",
                        help="detector state dict file (default: torchvision's cache file)")
    source.add_argument("--random-init", action="store_true",
                        help="random detector weights (tests the plumbing only)")  # fmt: skip
    p.add_argument("--coco-images", type=Path, metavar="FILE",
                   help="the COCO dataset file whose images a --coco results list refers to")
    p.add_argument("--coco-pattern", metavar="REGEX",
                   help="regex with named groups camera and frame (optionally sequence) "
                   "searched in each image's file_name (default: the Panoptic layout)")  # fmt: skip
    p.add_argument("--detector", choices=["keypointrcnn"], default="keypointrcnn")
    p.add_argument("--batch-size", type=int, default=4, help="images per detector call")
    p.add_argument("--actors", type=int,
                   help="detector replicas (default: one per GPU, else one per CPU)")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="use_gpu", action="store_const", const=True,
                     help="require GPUs (default: use them where the cluster has some)")
    gpu.add_argument("--cpu", dest="use_gpu", action="store_const", const=False,
                     help="run on CPUs even where GPUs exist")  # fmt: skip
    p.add_argument("--score-threshold", type=float, default=0.7,
                   help="drop people whose detector score is below this (0..1)")  # fmt: skip
    p.add_argument("--min-size", type=int, default=800,
                   help="short image side inside the detector, px")  # fmt: skip
    p.add_argument("--max-size", type=int, default=1333,
                   help="long image side inside the detector at most, px")  # fmt: skip
    p.add_argument("--engine", choices=["ray", "plain"], default="ray",
                   help="ray: a Ray Data job (default); plain: one process, for debugging")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    p.add_argument("--overwrite", action="store_true", help="replace existing label files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pseudo_label)

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
        "predict",
        help="3D poses with person track ids for every frame of a recording",
        description="Predict the 3D poses in every frame of a Panoptic-layout root (e.g. a "
        "recording after `import-recording` and `pseudo-label`) or of an ingested Parquet "
        "dataset, with a trained model (--checkpoint) or by triangulating the pseudo 2D "
        "labels (--triangulate, no model), and track each person over time. OUT gets "
        "predictions.jsonl (one frame per line), predictions.parquet (one person per row) "
        "and summary.json; joints in world mm, z up, Panoptic-15 order.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint", type=Path, help="a run directory, its final/ directory or a checkpoint file"
    )
    source.add_argument("--triangulate", action="store_true",
                        help="triangulate the pseudo 2D labels instead of running a model; "
                        "--config gives the capture space and the image size")  # fmt: skip
    _add_config_args(p)
    p.add_argument("--data", type=Path, required=True,
                   help="a Panoptic-layout root or an ingest output directory")  # fmt: skip
    p.add_argument("--split", choices=["train", "test"],
                   help="only the sequences of this split (default: all)")  # fmt: skip
    p.add_argument("--sequence", nargs="+", action="extend", metavar="S",
                   help="only these sequences (repeatable)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--batch-size", type=int, default=4, help="frames per model call")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: the GPU when there is one (--checkpoint only)")  # fmt: skip
    p.add_argument("--no-track", action="store_true", help="no tracking: every track_id is -1")
    p.add_argument("--max-gap", type=int,
                   help="frames a person may be missed and keep their id (default 5)")  # fmt: skip
    p.add_argument("--max-distance", type=float, metavar="MM",
                   help="largest root motion between a track's prediction and a detection "
                   "(default 500 mm)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace the predictions in an existing OUT")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

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

    p = sub.add_parser(
        "visualize",
        help="render predictions over their recording: overlays, 3D scenes, an MP4 mosaic",
        description="Draw the 3D poses of `selfpose3d predict` (PREDICTIONS/predictions.jsonl) "
        "over the images of every view of the Panoptic-layout root DATA they came from, in "
        "one colour per track. OUT gets overlays/<seq>_<frame>.jpg (a mosaic of all views) and "
        "scene_<seq>_<frame>.png (cameras and skeletons in 3D) for a few frames per "
        "sequence, and <seq>.mp4, the mosaic video of every rendered frame.",
    )
    p.add_argument("--predictions", type=Path, required=True,
                   help="a `selfpose3d predict` output directory")  # fmt: skip
    p.add_argument("--data", type=Path, required=True,
                   help="the Panoptic-layout root the predictions came from")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--sequence", help="only this sequence (default: all)")
    p.add_argument("--frames", metavar="A:B",
                   help="only frames A <= frame < B (either side may be empty)")  # fmt: skip
    p.add_argument("--every", type=int, default=1, help="render every N-th frame")
    p.add_argument("--max-frames", type=int, help="at most N frames per sequence")
    p.add_argument("--fps", type=float, default=10.0, help="video frame rate (default 10)")
    p.add_argument("--no-video", action="store_true", help="only the overlays and 3D scenes")
    p.set_defaults(func=cmd_visualize)

    p = sub.add_parser(
        "export",
        help="export a trained model for inference without the training code",
        description="Write the networks of a trained model (root_net's and pose_net's V2V, "
        "and in `images` mode the 2D heatmap network) as TorchScript (default) or "
        "torch.export programs, plus geometry.json with the settings the geometry between "
        "them needs. Load the result with selfpose3d.export.ExportedModel.load(DIR).",
    )
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a run directory, its final/ directory or a checkpoint file")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="export directory")
    p.add_argument("--format", choices=["torchscript", "torch_export"], default="torchscript",
                   help="torchscript: <net>.pt via torch.jit.trace (default); torch_export: "
                   "<net>.pt2 via torch.export")  # fmt: skip
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "rig",
        help="inspect or convert a camera calibration (Panoptic, anipose, OpenCV)",
        description="`rig info RIG`: the cameras of a calibration file and the capture space "
        "they see, as --set overrides of a preset. `rig convert RIG --to FORMAT --out FILE`: "
        "write it in another format. Formats: panoptic (calibration_<seq>.json, cm, y down), "
        "anipose (calibration.toml), opencv (cv2.FileStorage YAML, or JSON).",
    )
    rig_sub = p.add_subparsers(dest="rig_command", required=True, metavar="ACTION")
    info = rig_sub.add_parser("info", help="print the cameras and the derived capture space")
    convert = rig_sub.add_parser("convert", help="write the calibration in another format")
    for q in (info, convert):
        q.add_argument("rig", type=Path, help="calibration file")
        q.add_argument("--format", choices=["auto", "panoptic", "anipose", "opencv"],
                       default="auto", help="default: from the extension and content")  # fmt: skip
        q.add_argument("--unit", choices=["mm", "cm", "m"], default="mm",
                       help="length unit of the file's translations (its calibration board's "
                       "unit; default mm); Panoptic files are always cm")  # fmt: skip
        q.add_argument("--up", choices=["z", "y", "-y"], default="z",
                       help="world axis pointing up in the file (default z); Panoptic files "
                       "are always y down")  # fmt: skip
        q.add_argument("--cameras", nargs="+", metavar="NAME",
                       help="use only these cameras, in this order")  # fmt: skip
        q.set_defaults(func=cmd_rig)
    _add_config_args(info)
    info.add_argument("--floor-z", type=float, default=0.0, help="floor height, mm (default 0)")
    info.add_argument("--height", type=float, default=2000.0,
                      help="height of the capture space, mm (default 2000)")  # fmt: skip
    info.add_argument("--min-views", type=int, default=2,
                      help="cameras that must see a floor position (default 2)")  # fmt: skip
    info.add_argument("--margin", type=float, default=0.0,
                      help="also search this far outside the cameras' footprint (their "
                      "centres, mirrored through where they aim), mm (default 0)")  # fmt: skip
    convert.add_argument("--to", choices=["panoptic", "anipose", "opencv"], required=True)
    convert.add_argument("--out", type=Path, required=True,
                         help="output file (opencv: .yaml, or .json for JSON)")  # fmt: skip
    convert.add_argument("--out-unit", choices=["mm", "cm", "m"], default="mm",
                         help="length unit of the written translations (default mm)")  # fmt: skip
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
