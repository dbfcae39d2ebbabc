"""Offline training step through the real DataLoader vs the same step on a batch already in memory.

    python benchmarks/bench_offline.py [--device cuda:0] [--lowdim-batch 256] [--image-batch 16]

Both variants run the policy's compute_loss + backward + AdamW step (the config's optimizer) of
the same model; the loader variant also takes each batch from RobomimicReplayDataset (zarr cache)
through torch's DataLoader with the workspace's settings (config `dataloader`: 4 workers,
shuffle, pin_memory, no persistent workers, so workers restart every epoch) and moves it to the
device as the workspace does. Each repetition starts a fresh iterator, like an epoch: the wait for
its first batch is the per-epoch start-up, reported apart and amortized over a real epoch's length.
Data: a low-dim lift file (data_local's, copied) and a small generated two-camera 84x84 lift file.
"""

from __future__ import annotations

import time

import hydra
import torch
from builders import build_policy, ensure_image_dataset, ensure_lowdim_dataset, n_params
from omegaconf import OmegaConf
from timing import base_parser, interleaved, markdown_table, median, print_headline, setup, spread, synchronize

from zprl.workspace.offline import to_device


def train_step(policy, optimizer, batch):
    loss, _ = policy.compute_loss(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def build(task: str, dataset_path: str, batch_size: int, small: bool, device, workers: int | None):
    policy, cfg = build_policy(task, small=small, overrides=(f"task.dataset_path={dataset_path}",), device=device)
    dataset = hydra.utils.instantiate(cfg.task.dataset)
    policy.set_normalizer(dataset.get_normalizer())
    policy.to(device).train()
    optimizer = hydra.utils.instantiate(cfg.optimizer, params=policy.parameters())
    loader_kw = OmegaConf.to_container(cfg.dataloader, resolve=True)
    loader_kw["batch_size"] = batch_size
    if workers is not None:
        loader_kw["num_workers"] = workers
    if device.type != "cuda":
        loader_kw["pin_memory"] = False  # pinning is for host->GPU copies (torch warns otherwise)
    loader = torch.utils.data.DataLoader(dataset, **loader_kw)
    fixed = to_device(next(iter(torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True))), device)
    return policy, optimizer, loader, fixed, loader_kw, list(cfg.policy.down_dims)


def variants_for(policy, optimizer, loader, fixed, steps: int, device, startups: list):
    def memory():
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(policy, optimizer, fixed)
        synchronize(device)
        return (time.perf_counter() - t0) / steps

    def through_loader():
        t0 = time.perf_counter()
        it = iter(loader)
        batch = next(it)
        startups.append(time.perf_counter() - t0)
        synchronize(device)
        t0 = time.perf_counter()
        for i in range(steps):
            train_step(policy, optimizer, to_device(batch, device))
            if i + 1 < steps:
                batch = next(it)
        synchronize(device)
        del it  # shuts the workers down, as the end of an epoch does
        return (time.perf_counter() - t0) / steps

    return {"in memory": memory, "DataLoader": through_loader}


def main():
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="training steps per repetition (0: one whole epoch)")
    p.add_argument("--only", choices=["low-dim", "image"], default=None, help="run one of the two cases")
    p.add_argument("--lowdim-batch", type=int, default=256)
    p.add_argument("--image-batch", type=int, default=None, help="default: 256 on cuda, 16 on cpu")
    p.add_argument("--workers", type=int, default=None, help="override dataloader.num_workers (default: config's)")
    p.add_argument("--small", action="store_true", help="small U-Net instead of the paper's [128,256,512]")
    args = p.parse_args()
    device = setup(args)
    reps, steps = (1, 2) if args.quick else (args.reps, args.steps)
    image_batch = args.image_batch or (256 if device.type == "cuda" else 16)
    cases = [("low-dim", "lift_lowdim_abs", ensure_lowdim_dataset, 32 if args.quick else args.lowdim_batch)]
    if not args.quick:
        cases.append(("image", "lift_image_abs", ensure_image_dataset, image_batch))

    if args.only:
        cases = [c for c in cases if c[0] == args.only]
    rows, worst = [], 0.0
    for label, task, make_data, batch_size in cases:
        path = make_data()
        policy, optimizer, loader, fixed, loader_kw, unet = build(task, path, batch_size, args.small or args.quick,
                                                            device, 0 if args.quick else args.workers)
        startups = []
        case_steps = steps or len(loader)
        res = interleaved(variants_for(policy, optimizer, loader, fixed, case_steps, device, startups), reps)
        mem, dl = median(res["in memory"]), median(res["DataLoader"])
        startup = median(startups[1:] or startups)  # the first (warm-up) start also opens the zarr cache
        epoch_steps = len(loader)
        epoch_ratio = (startup + epoch_steps * dl) / (epoch_steps * mem)
        worst = max(worst, epoch_ratio)
        rows.append([label, f"{n_params(policy) / 1e6:.1f}M", batch_size, loader_kw["num_workers"], epoch_steps,
                     f"{1e3 * mem:.0f} {spread(res['in memory'])}", f"{1e3 * dl:.0f} {spread(res['DataLoader'])}",
                     f"{1e3 * startup:.0f}", f"{dl / mem:.3f}", f"{epoch_ratio:.3f}"])
        print(f"# {label}: {path}, {len(loader.dataset)} samples, U-Net down_dims={unet}, "
              f"reps={reps} steps/rep={case_steps}", flush=True)

    print("\nms per training step (median of interleaved repetitions, ± half-range)")
    print(markdown_table(["obs", "params", "batch", "workers", "steps/epoch", "in memory", "DataLoader",
                          "epoch start-up ms", "steady ratio", "epoch ratio"], rows))
    print("epoch ratio = (start-up + steps/epoch x DataLoader step) / (steps/epoch x in-memory step)")
    print_headline("loader_over_memory_worst", worst)


if __name__ == "__main__":
    main()
