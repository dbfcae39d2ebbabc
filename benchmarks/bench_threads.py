"""Torch threads and OpenMP's wait policy for the demo's offline training step, side by side.

    python benchmarks/bench_threads.py [--reps 3] [--steps 10]

`make demo` trains its base alone on the machine, so its thread count is a free choice; this measures it.
Each variant runs in its own process (OpenMP reads its environment once, at start-up), with the demo's
kernel pins (scripts/cpu_runs/isa_env.sh, where the CPU has AVX2), and times the wall clock of whole
training steps (the demo's U-Net [32, 64, 128], batch 128, both flow paths, backward, AdamW) after warm-up:
- 1 thread;
- 2 threads, OMP_WAIT_POLICY=PASSIVE (idle threads sleep at once: cheap on a busy machine, but every
  parallel region then pays a wake-up);
- 2 threads, OpenMP's default policy (spin a while, then sleep);
- 2 threads, OMP_WAIT_POLICY=ACTIVE (idle threads spin).
Variants are interleaved and rotated each round. Run it on idle cores for the demo's case: two threads
need both cores, and a busy neighbour makes spinning ones wait (docs/performance.md, "torch threads").
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo, for zprl

VARIANTS = {  # name -> (threads, OMP_WAIT_POLICY or None for OpenMP's default)
    "1 thread": (1, None),
    "2 threads, PASSIVE": (2, "PASSIVE"),
    "2 threads, default": (2, None),
    "2 threads, ACTIVE": (2, "ACTIVE"),
}


def child(threads: int, steps: int) -> None:
    import hydra
    import torch
    from builders import build_policy, random_obs
    from omegaconf import OmegaConf

    torch.set_num_threads(threads)
    policy, cfg = build_policy("lift_lowdim_abs", small=True)
    shape_meta = OmegaConf.to_container(cfg.shape_meta, resolve=True)
    gen = torch.Generator().manual_seed(0)
    batch = {"obs": random_obs(shape_meta, 128, policy.n_obs_steps, "cpu", gen),
             "action": torch.rand(128, int(cfg.horizon), int(shape_meta["action"]["shape"][0]), generator=gen) * 2 - 1}
    optimizer = hydra.utils.instantiate(cfg.optimizer, params=policy.parameters())

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss, _ = policy.compute_loss(batch)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    print((time.perf_counter() - t0) / steps)


def measure(name: str, steps: int) -> float:
    from zprl.demo import kernel_pins

    threads, policy = VARIANTS[name]

    env = {**os.environ, **kernel_pins(), "OMP_NUM_THREADS": str(threads)}
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(threads), str(steps)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    from timing import base_parser, interleaved, markdown_table, median, print_headline, spread

    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed training steps per process")
    args = p.parse_args()
    print(f"# {os.path.basename(sys.executable)} {' '.join(sys.argv)}")
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')}  host cpus={os.cpu_count()}  "
          f"load avg={' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    steps = 2 if args.quick else args.steps
    timed = interleaved({name: (lambda n=name: measure(n, steps)) for name in VARIANTS},
                        1 if args.quick else args.reps, warmup=False)
    one = median(timed["1 thread"])
    rows = [[name, 1000 * median(t), spread(t), one / median(t)] for name, t in timed.items()]
    print(f"\nwall ms per training step (median of {len(timed['1 thread'])} interleaved processes x {steps} steps); "
          "speed-up = 1 thread / variant")
    print(markdown_table(["variant", "ms per step", "spread", "speed-up"], rows))
    print_headline("two_passive_over_one_thread", one / median(timed["2 threads, PASSIVE"]))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
