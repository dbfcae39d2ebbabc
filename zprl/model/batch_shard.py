"""Per-sample random draws that do not depend on how a batch is split across processes.

Training draws randomness per sample (flow noise and timesteps, the VIB's reparameterisation, image
crop windows). In a data-parallel run each process holds one slice of the global batch; if it drew
only its own rows, an N-process run would see other noise than a 1-process run of the same global
batch (and processes seeded alike would give their different samples the same noise). Inside
``batch_shard(n, index)`` every process draws the rows of the whole global batch from its (equally
seeded, kept in step) generator and keeps its own slice, so sample k of the global batch gets the
same draw whatever the number of processes. Outside it (one process) the draws are exactly the
plain ``torch.randn`` / ``torch.randint`` calls they replace.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch

# (number of slices, this process's slice): rows [index * n, (index + 1) * n) of a global batch of num * n
_shard: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("zprl_batch_shard", default=None)


@contextlib.contextmanager
def batch_shard(num: int, index: int):
    if not 0 <= index < num:
        raise ValueError(f"slice {index} of {num}")
    token = _shard.set((num, index) if num > 1 else None)
    try:
        yield
    finally:
        _shard.reset(token)


def _rows(draw, n: int, rest: tuple, **kwargs) -> torch.Tensor:
    shard = _shard.get()
    if shard is None:
        return draw((n, *rest), **kwargs)
    num, index = shard
    return draw((num * n, *rest), **kwargs)[index * n:(index + 1) * n]


def randn_rows(shape, device=None, dtype=None) -> torch.Tensor:
    """``torch.randn(shape)`` whose first dimension is this process's samples."""
    shape = tuple(shape)
    return _rows(torch.randn, shape[0], shape[1:], device=device, dtype=dtype)


def randint_rows(high: int, n: int, device=None, low: int = 0) -> torch.Tensor:
    """``torch.randint(low, high, (n,))``, one value per sample of this process."""
    return _rows(lambda size, **kw: torch.randint(low, high, size, **kw), n, (), device=device)
