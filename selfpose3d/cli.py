"""The ``selfpose3d`` command.

Each sub-command parses its arguments, resolves the config (YAML + ``--set`` overrides) and
calls one library function; heavy imports (torch, Ray) happen inside the sub-command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selfpose3d.config import Config, ConfigError, dump_config, load_config

EPILOG = """examples:
  selfpose3d synth --config configs/smoke.yaml --out data/smoke
  selfpose3d ingest data/smoke --config configs/smoke.yaml --out data/smoke-parquet
  selfpose3d config --config configs/cpu.yaml --set model.pose_bins=[48,48,48]
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"selfpose3d {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"selfpose3d {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
