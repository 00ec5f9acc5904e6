"""Data pipeline benchmark: synthetic generation, ingest (plain loop, Ray with 1 and 2 CPUs).

    python benchmarks/data_pipeline.py --config configs/cpu.yaml [--out DIR] [--set k=v ...]

Prints one table: generation frames/s, ingest frames/s per engine, Parquet bytes per frame.
The dataset is generated once (or reused if DIR already holds it); every ingest run writes a
fresh output directory so that no run benefits from another's files.
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
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, help="working directory (default: a temp dir)")
    parser.add_argument(
        "--engines",
        default="plain,ray1,ray2",
        help="comma list of plain, ray1, ray2 (Ray with 1 / 2 CPUs)",
    )
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    from pipelines.ingest import ingest
    from selfpose3d.data.synthetic import generate

    cfg = load_config(args.config, args.overrides)
    work = args.out or Path(tempfile.mkdtemp(prefix="selfpose3d-bench-"))
    synth_dir = work / "synthetic"

    t0 = time.perf_counter()
    manifest = generate(cfg.synth, synth_dir, overwrite=True, progress=True)
    gen_s = time.perf_counter() - t0
    frames = manifest["counts"]["frames"]
    views = len(manifest["cameras"])
    rows = [
        (
            "generate",
            f"{cfg.synth.rig.image_width}x{cfg.synth.rig.image_height}",
            f"{frames}",
            f"{gen_s:.1f}",
            f"{frames / gen_s:.1f}",
            "-",
        )
    ]

    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        kind, cpus = ("plain", None) if engine == "plain" else ("ray", int(engine[3:]))
        out = work / f"parquet-{engine}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        summary = ingest(synth_dir, out, cfg.data, engine=kind, num_cpus=cpus, progress=False)
        wall = time.perf_counter() - t0
        written = summary["frames_written"]
        rows.append(
            (
                f"ingest {engine}",
                f"{views} views",
                f"{written}",
                f"{wall:.1f}",
                f"{written / wall:.1f}",
                f"{summary['bytes_per_frame'] / 1e3:.0f} kB",
            )
        )

    header = ("stage", "setting", "frames", "wall s", "frames/s", "parquet/frame")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    print(
        f"\nconfig {args.config} {' '.join(args.overrides)}; {os.cpu_count()} cores; "
        f"ingest wall time includes Ray start-up for ray engines"
    )
    print(line(header))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
