"""A CPU training step before and after the two CPU changes: zprl's Mish form and fused AdamW.

    python benchmarks/bench_cpu_train.py [--reps 7] [--batch 128]

Two copies of the same low-dim lift policy (equal weights): "before" with torch's ``nn.Mish`` and
AdamW's per-tensor loop (``fused=False``), "after" with zprl's Mish (zprl/model/mish.py) and AdamW
``fused=True`` (the offline config's optimizer). Each times, interleaved: a whole training step
(compute_loss with both flow paths, backward, AdamW step), its parts (forward + backward; the
AdamW step alone, on the gradients of the last backward) and a 2-step action chunk
(predict_action) for 1 and 20 observations. Demo-size U-Net ([32, 64, 128], what ``make demo``
trains) and the paper's ([128, 256, 512]). Times are the process's CPU time (one torch thread): on a
shared machine the wall time of a single-threaded call mostly measures how often the scheduler let
it run.
"""

from __future__ import annotations

import copy
import time

import hydra
import torch
from builders import build_policy, random_obs
from omegaconf import OmegaConf
from timing import base_parser, interleaved, markdown_table, median, print_headline, setup, spread, time_calls

from zprl.model.mish import Mish


def with_torch_mish(policy):
    twin = copy.deepcopy(policy)
    for module in list(twin.modules()):
        for name, child in module.named_children():
            if isinstance(child, Mish):
                setattr(module, name, torch.nn.Mish())
    return twin


def cpu_time_calls(fn, n: int) -> float:
    return time_calls(fn, n, torch.device("cpu"), clock=time.process_time)


def variants(policy, cfg, fused: bool, batch: int, calls: int) -> dict:
    shape_meta = OmegaConf.to_container(cfg.shape_meta, resolve=True)
    gen = torch.Generator().manual_seed(0)
    horizon, action_dim = int(cfg.horizon), int(shape_meta["action"]["shape"][0])
    train_batch = {"obs": random_obs(shape_meta, batch, policy.n_obs_steps, "cpu", gen),
                   "action": torch.rand(batch, horizon, action_dim, generator=gen) * 2 - 1}
    obs = {n: random_obs(shape_meta, n, policy.n_obs_steps, "cpu", gen) for n in (1, 20)}
    optimizer = hydra.utils.instantiate(cfg.optimizer, params=policy.parameters(), fused=fused)

    def forward_backward():
        policy.zero_grad(set_to_none=True)
        loss, _ = policy.compute_loss(train_batch)
        loss.backward()

    def train_step():
        forward_backward()
        optimizer.step()

    def chunk(n):
        @torch.no_grad()
        def run():
            policy.predict_action(obs[n])
        return run

    forward_backward()  # gradients for the optimizer-only row
    return {"train step": lambda: cpu_time_calls(train_step, calls),
            "forward + backward": lambda: cpu_time_calls(forward_backward, calls),
            "AdamW step": lambda: cpu_time_calls(optimizer.step, 4 * calls),
            "chunk, 1 obs": lambda: cpu_time_calls(chunk(1), 4 * calls),
            "chunk, 20 obs": lambda: cpu_time_calls(chunk(20), calls)}


def main():
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128, help="training batch (the demo's)")
    args = p.parse_args()
    device = setup(args)
    if device.type != "cpu":
        raise SystemExit(f"--device {args.device}: this benchmark compares CPU code paths; run it with --device cpu")
    calls = 1 if args.quick else 3
    batch = 64 if args.quick else args.batch  # 64 still reaches zprl's Mish form (>= 16k elements)
    rows, headline = [], None
    for size, small in (("demo [32,64,128]", True), ("paper [128,256,512]", False)):
        if args.quick and not small:
            continue
        after, cfg = build_policy("lift_lowdim_abs", small=small)
        before = with_torch_mish(after)
        timed = interleaved({**{f"after|{k}": v for k, v in variants(after, cfg, True, batch, calls).items()},
                             **{f"before|{k}": v for k, v in variants(before, cfg, False, batch, calls).items()}},
                            args.reps)
        for what in [k.split("|")[1] for k in timed if k.startswith("after|")]:
            t_after, t_before = median(timed[f"after|{what}"]), median(timed[f"before|{what}"])
            rows.append([size, what, 1000 * t_before, spread(timed[f"before|{what}"]), 1000 * t_after,
                         spread(timed[f"after|{what}"]), t_before / t_after])
            if small and what == "train step":
                headline = t_before / t_after
    print(f"\nCPU ms per call (median of {args.reps} interleaved repetitions), training batch {batch}; "
          "speed-up = before / after")
    print(markdown_table(["U-Net", "call", "before ms", "spread", "after ms", "spread", "speed-up"], rows))
    print_headline("demo_train_step_speedup", headline)


if __name__ == "__main__":
    main()
