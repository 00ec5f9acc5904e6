"""V2V forward + backward speed on CPU at the cpu preset's pose-net sizes.

Prints one row per (width, proposals, memory layout): milliseconds per forward + backward of
all proposals in one batched call, the convolution FLOPs counted by
``torch.utils.flop_counter.FlopCounterMode``, and the achieved GFLOP/s next to this machine's
float32 matmul peak measured in the same run.

    python benchmarks/v2v_speed.py [--bins 32] [--joints 15] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from selfpose3d.models.v2v import V2VNet


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best float32 GFLOP/s of an n x n matmul over ``repeats`` runs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def step_flops(net: V2VNet, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        net(x).sum().backward()
    return counter.get_total_flops()


def time_steps(nets: list[V2VNet], x: torch.Tensor, repeats: int) -> list[float]:
    """Best wall time (s) of one forward + backward for each net.

    The nets are timed in alternation, so that load from other processes on a shared machine
    hits all of them alike; the minimum over repeats is the least disturbed run.
    """
    best = [float("inf")] * len(nets)
    for net in nets:
        net(x).sum().backward()  # warm-up (allocations, kernel selection)
    for _ in range(repeats):
        for i, net in enumerate(nets):
            net.zero_grad(set_to_none=True)
            start = time.perf_counter()
            net(x).sum().backward()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=32, help="pose cube side, voxels")
    parser.add_argument("--joints", type=int, default=15)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--proposals", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    peaks = [matmul_peak_gflops()]
    rows = []
    for width in args.widths:
        for m in args.proposals:
            x = torch.rand(m, args.joints, args.bins, args.bins, args.bins)
            nets = [
                V2VNet(args.joints, args.joints, width=width, channels_last=cl)
                for cl in (False, True)
            ]
            flops = step_flops(nets[0], x)
            for net, seconds in zip(nets, time_steps(nets, x, args.repeats), strict=True):
                rows.append((width, m, net.channels_last, seconds, flops))
    peaks.append(matmul_peak_gflops())
    # Other processes can only slow a measurement down: the best one is the machine's.
    peak = max(peaks)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 matmul "
        f"(2048^2) {peak:.1f} GFLOP/s (runs: {', '.join(f'{p:.0f}' for p in peaks)})"
    )
    print(f"V2V forward + backward, cube {args.bins}^3, {args.joints} channels in and out")
    names = ("width", "M", "layout", "ms/step", "GFLOP", "GFLOP/s", "%peak")
    header = "{:>5} {:>3} {:>14} {:>9} {:>7} {:>8} {:>6}".format(*names)
    print(header)
    print("-" * len(header))
    for width, m, channels_last, seconds, flops in rows:
        rate = flops / seconds / 1e9
        layout = "channels_last" if channels_last else "contiguous"
        print(
            f"{width:>5} {m:>3} {layout:>14} {seconds * 1e3:>9.0f} {flops / 1e9:>7.1f} "
            f"{rate:>8.1f} {100 * rate / peak:>5.0f}%"
        )


if __name__ == "__main__":
    main()
