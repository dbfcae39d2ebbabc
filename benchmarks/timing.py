"""Side-by-side timing helpers shared by the benchmark scripts.

Every script compares variants measured in the same run, with repetitions interleaved (and the
order rotated each round) so that load from other processes on the machine hits all variants
alike. Reported numbers are medians over repetitions; ratios are taken between medians.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1: on a busy 2-core machine more threads spin-wait on each other)")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions per variant")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test); the numbers mean little")
    return p


def setup(args) -> torch.device:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  host cpus={os.cpu_count()}  "
          f"torch={torch.__version__} threads={torch.get_num_threads()} device={device}  "
          f"load avg={' '.join(f'{x:.1f}' for x in os.getloadavg())}  python={platform.python_version()}")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], n: int, device: torch.device,
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per call of ``fn`` over ``n`` back-to-back calls, by ``clock`` (wall time by default;
    ``time.process_time`` counts this process's CPU time, for single-threaded work on a shared machine)."""
    synchronize(device)
    t0 = clock()
    for _ in range(n):
        fn()
    synchronize(device)
    return (clock() - t0) / n


def interleaved(variants: dict[str, Callable[[], float]], reps: int, warmup: bool = True) -> dict[str, list[float]]:
    """Run each variant once per round, ``reps`` rounds, rotating the order every round.

    Each callable performs one repetition and returns its own measurement (seconds per unit).
    With ``warmup`` every variant runs once first, unrecorded (allocator, caches, lazy init).
    """
    names = list(variants)
    if warmup:
        for name in names:
            variants[name]()
    results = {name: [] for name in names}
    for r in range(reps):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(variants[name]())
    return results


def median(values) -> float:
    return float(statistics.median(values))


def spread(values) -> str:
    """Relative half-range of the repetitions, to show how noisy a number is."""
    m = median(values)
    if len(values) < 2 or m == 0:
        return "-"
    return f"±{100 * (max(values) - min(values)) / (2 * m):.0f}%"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def print_headline(name: str, ratio: float) -> None:
    """The last line of every script; tests and docs read it."""
    print(f"headline: {name}={ratio:.3f}", flush=True)
