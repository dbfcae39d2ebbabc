"""Data-parallel offline training with HF accelerate (DDP underneath); one process is today's run.

``accelerate launch --multi_gpu --num_processes N train.py --config-name=...`` starts N copies of
train.py. They agree on one run directory (the main process's), shard every global batch of
``dataloader.batch_size x N`` samples, and only the main process writes (logs, rollouts, checkpoints);
the others wait for it. Launched as ``python train.py`` the same code runs in one process with the
device ``training.device`` names, exactly as before accelerate was added.
"""

from __future__ import annotations

import datetime
import logging
import os
import random

import numpy as np
import torch

from zprl.common.errors import UserInputError
from zprl.workspace.launch import launched_world

log = logging.getLogger("zprl")

MIXED_PRECISION = ("no", "fp16", "bf16")
# Non-main processes wait at a barrier while the main one validates, rolls out and checkpoints; NCCL's
# default 10 minutes is shorter than a paper-size rollout phase can be.
BARRIER_TIMEOUT = datetime.timedelta(hours=2)


def mixed_precision_of(cfg) -> str:
    value = cfg.training.get("mixed_precision", "no")
    value = "no" if value is False or value is None else str(value).lower()  # YAML reads a bare no as false
    if value not in MIXED_PRECISION:
        raise UserInputError(f"training.mixed_precision={value}: use one of {', '.join(MIXED_PRECISION)}")
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launcher not in ("no", value):
        raise UserInputError(f"accelerate launch --mixed_precision {launcher} but training.mixed_precision={value}: "
                             f"zprl reads training.mixed_precision; pass training.mixed_precision={launcher}")
    return value


def make_accelerator(cfg, device: torch.device):
    """The run's Accelerator. ``device`` (training.device, checked) decides CPU (gloo) or GPU (NCCL);
    with several processes each takes ``accelerator.device`` (``cuda:<local rank>`` or cpu)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import InitProcessGroupKwargs

    mixed_precision = mixed_precision_of(cfg)
    if mixed_precision == "fp16" and device.type != "cuda":
        raise UserInputError(f"training.mixed_precision=fp16 needs a CUDA device, not training.device={device}; "
                             "use bf16 or no")
    if launched_world()[1] <= 1:
        # accelerate's state is one per process and refuses other settings once made; a process that
        # builds several workspaces in turn (the tests) starts each from a clean state. Nothing
        # distributed exists in one process, so nothing is lost.
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=device.type == "cpu", mixed_precision=mixed_precision, device_placement=False,
                       kwargs_handlers=[InitProcessGroupKwargs(timeout=BARRIER_TIMEOUT)])


def broadcast_object(accelerator, obj):
    """The main process's ``obj`` on every process."""
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj])[0]


def sync_rng_from_main(accelerator) -> None:
    """Give every process the main process's RNG states.

    Processes start alike (same seed) and draw alike while training (``zprl.model.batch_shard``);
    only the main process validates and rolls out, which draws too. One process running everything
    draws in this order, so copying the main process's states after its own work keeps an N-process
    run on the 1-process run's random stream (and resume equal on every process)."""
    if accelerator.num_processes == 1:
        return
    device = accelerator.device
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    states = broadcast_object(accelerator, states)
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


class RankSlice(torch.utils.data.Sampler):
    """This process's rows of each global batch: rows [r * b, (r + 1) * b) of every batch the global
    batch sampler yields (b = its size / N).

    Every process iterates the same global batch sampler (its shuffle seeded from the torch RNG, which
    the processes keep equal), so the N slices of a step make up exactly the batch a 1-process run
    with N times the batch size would draw. A last batch that does not split evenly loses its last
    (fewer than N) rows, so every process holds the same number of samples and DDP's mean of means
    is the global mean."""

    def __init__(self, batch_sampler, num: int, index: int):
        self.batch_sampler, self.num, self.index = batch_sampler, num, index

    def __iter__(self):
        for batch in self.batch_sampler:
            per = len(batch) // self.num
            if per:
                yield batch[self.index * per:(self.index + 1) * per]

    def __len__(self) -> int:
        n = len(self.batch_sampler)
        sampler = self.batch_sampler
        last = len(sampler.sampler) % sampler.batch_size
        return n - 1 if (not sampler.drop_last and 0 < last < self.num) else n


def train_loader(dataset, loader_cfg, accelerator):
    """The training DataLoader. One process: ``DataLoader(dataset, **dataloader)`` as always. N processes:
    ``dataloader.batch_size`` is per process (accelerate's convention), the global batch N times it."""
    kwargs = dict(loader_cfg)
    if accelerator.num_processes == 1:
        return torch.utils.data.DataLoader(dataset, **kwargs)
    n, per = accelerator.num_processes, int(kwargs.pop("batch_size"))
    shuffle, drop_last = bool(kwargs.pop("shuffle", False)), bool(kwargs.pop("drop_last", False))
    # the very sampler classes DataLoader(shuffle=..., batch_size=N * per) builds, so the draws match its
    base = torch.utils.data.RandomSampler(dataset) if shuffle else torch.utils.data.SequentialSampler(dataset)
    global_batches = torch.utils.data.BatchSampler(base, per * n, drop_last)
    return torch.utils.data.DataLoader(dataset, batch_sampler=RankSlice(global_batches, n, accelerator.process_index),
                                       **kwargs)


class LossModule(torch.nn.Module):
    """What DDP wraps: a forward that is the policy's training loss (DDP syncs gradients of what runs
    through its forward). Holds the policy itself, so checkpoints save the unwrapped policy unchanged."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, batch):
        return self.policy.compute_loss(batch)
