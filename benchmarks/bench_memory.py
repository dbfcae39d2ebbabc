"""Replay memory: bytes per stored transition and the resident memory of a filled buffer.

    python benchmarks/bench_memory.py [--capacity 100000] [--check-capacity 1000000]

Bytes per transition come from EmbeddingReplayBuffer.nbytes_per_transition() with the RL state of
latent steering (obs embedding of the task config's obs encoder + VIB latent) and dz as action,
for every task, image and low-dim, float32 and float16 storage. Latent size 16 (32 for transport,
the paper's values). Then lift buffers of ``--capacity`` rows are filled with batches of 20 rows
(one per training env) and the growth of this process's resident set (VmRSS) is compared with
capacity x bytes per transition; the 1M-row figure is that growth x (1M / capacity).
``--check-capacity`` also fills one buffer of that size (image, float32) to check the extrapolation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import hydra
import torch
from builders import OFFLINE_CONFIG, compose
from timing import base_parser, markdown_table, print_headline, setup

from zprl.rl.replay import EmbeddingReplayBuffer

TASKS = ("lift", "can", "square", "transport")
LATENT = {"transport": 32}


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def state_dims(task: str, obs: str) -> tuple[int, int]:
    cfg = compose(OFFLINE_CONFIG, [f"task={task}_{obs}_abs"])
    encoder = hydra.utils.instantiate(cfg.task.obs_encoder)
    latent = LATENT.get(task, int(cfg.policy.vib_latent_dim))
    return encoder.output_dim() + latent, latent


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def save_peak(buf: EmbeddingReplayBuffer) -> int:
    """Extra resident memory while the buffer is written as a checkpoint would write it."""
    import os
    import tempfile

    before = rss_bytes()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (the peak) to the current RSS
    with tempfile.TemporaryDirectory() as tmp:
        buf.save(os.path.join(tmp, "replay.pt"))
    return peak_rss_bytes() - before


def fill(capacity: int, state_dim: int, action_dim: int, dtype: str, rows_filled: int | None = None) -> dict:
    """Runs in a fresh process (see ``measure``): memory freed earlier in a process stays resident
    and gets reused, which would hide part of the growth."""
    # first use of torch's kernels allocates a few MB of its own; do it before the baseline
    warm = EmbeddingReplayBuffer(64, state_dim, action_dim, storage_dtype=getattr(torch, dtype))
    warm.add(torch.zeros(20, state_dim), torch.zeros(20, action_dim), torch.zeros(20), torch.zeros(20, state_dim),
             torch.zeros(20))
    warm.sample(256)
    before = rss_bytes()
    buf = EmbeddingReplayBuffer(capacity, state_dim, action_dim, storage_dtype=getattr(torch, dtype))
    g = torch.Generator().manual_seed(0)
    rows = 20
    s, a = torch.randn(rows, state_dim, generator=g), torch.rand(rows, action_dim, generator=g)
    r, term = torch.zeros(rows), torch.zeros(rows)
    for _ in range(-(-(rows_filled or capacity) // rows)):
        buf.add(s, a, r, s, term)
    buf.sample(256)
    out = {"growth": rss_bytes() - before, "nbytes": buf.nbytes_per_transition()}
    out["save_peak"] = save_peak(buf)
    return out


def measure(capacity: int, state_dim: int, action_dim: int, dtype: str, rows_filled: int | None = None) -> dict:
    """growth (RSS), nbytes (per transition), save_peak (extra RSS while saving) from a child process."""
    spec = f"{capacity},{state_dim},{action_dim},{dtype},{rows_filled or capacity}"
    out = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--capacity", type=int, default=100_000)
    p.add_argument("--check-capacity", type=int, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        capacity, state_dim, action_dim, dtype, rows_filled = args.child.split(",")
        print(json.dumps(fill(int(capacity), int(state_dim), int(action_dim), dtype, int(rows_filled))))
        return
    setup(args)
    capacity = 2_000 if args.quick else args.capacity
    dtypes = {"float32": torch.float32, "float16": torch.float16}

    rows, dims = [], {}
    for task in (["lift"] if args.quick else TASKS):
        for obs in ("image", "lowdim"):
            dims[(task, obs)] = state_dim, action_dim = state_dims(task, obs)
            per = {k: EmbeddingReplayBuffer(1, state_dim, action_dim, storage_dtype=d).nbytes_per_transition()
                   for k, d in dtypes.items()}
            rows.append([task, obs, state_dim, action_dim, per["float32"], per["float16"],
                         f"{per['float32'] * 1e6 / 2**30:.2f}", f"{per['float16'] * 1e6 / 2**30:.2f}"])
    print("\nbytes per stored transition (state, action, reward, next_state, terminal)")
    print(markdown_table(["task", "obs", "state dim", "action dim", "B float32", "B float16",
                          "1M rows GiB float32", "1M rows GiB float16"], rows))

    measured, headline = [], None
    for obs in ("image", "lowdim"):
        for name in dtypes:
            state_dim, action_dim = dims[("lift", obs)]
            m = measure(capacity, state_dim, action_dim, name)
            growth, predicted = m["growth"], capacity * m["nbytes"]
            measured.append([f"lift {obs}", name, f"{capacity:,}", f"{predicted / 2**20:.1f}",
                             f"{growth / 2**20:.1f}", f"{growth / predicted:.3f}",
                             f"{growth * 1e6 / capacity / 2**30:.2f}", f"{m['save_peak'] / 2**20:.1f}"])
            if headline is None:
                headline = growth / predicted
    print(f"\nresident memory growth of a buffer filled with {capacity:,} rows (VmRSS after - before)")
    print(markdown_table(["buffer", "storage", "rows", "predicted MiB", "measured MiB", "measured / predicted",
                          "extrapolated 1M rows GiB", "extra MiB while saving (full)"], measured))
    state_dim, action_dim = dims[("lift", "image")]
    half = measure(capacity, state_dim, action_dim, "float32", rows_filled=capacity // 2)
    filled = capacity // 2 * half["nbytes"]
    print(f"\nsaving a half-full lift image float32 buffer ({capacity // 2:,} of {capacity:,} rows, "
          f"{filled / 2**20:.1f} MiB filled): extra resident memory while saving {half['save_peak'] / 2**20:.1f} MiB "
          f"({half['save_peak'] / filled:.2f} x the filled rows)")

    if args.check_capacity:
        state_dim, action_dim = dims[("lift", "image")]
        m = measure(args.check_capacity, state_dim, action_dim, "float32")
        growth, predicted = m["growth"], args.check_capacity * m["nbytes"]
        print(f"\ncheck: lift image float32 with {args.check_capacity:,} rows: measured {growth / 2**30:.2f} GiB, "
              f"predicted {predicted / 2**30:.2f} GiB, ratio {growth / predicted:.3f}")
    print_headline("rss_over_predicted_image_f32", headline)


if __name__ == "__main__":
    main()
