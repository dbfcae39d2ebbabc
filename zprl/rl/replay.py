"""Replay buffer of RL states (embeddings), never images.

The online workspace encodes every next observation once with the frozen encoder (+ VIB) and
stores that embedding here; updates read embeddings only and never run the image encoder. At
ZPRL's sizes (state = obs_emb + z, a few hundred floats) a million transitions fit in a few GB,
and ``storage_dtype=torch.float16`` halves that.
"""

from __future__ import annotations

import torch

from zprl.common.checkpoint import atomic_save

_CORE = ("state", "action", "reward", "next_state", "terminal")


class EmbeddingReplayBuffer:
    """Ring buffer of (state, action, reward, next_state, terminal[, extras]) rows.

    ``terminal`` is the bootstrap mask (1 = do not bootstrap: success or time-out).
    ``extras`` declares additional fixed-shape fields, e.g. ``{"z": 16, "base_action": (16, 10)}``;
    every ``add`` must then pass them. ``device`` holds the storage; ``sample`` returns float32
    tensors on ``sample_device`` (default: ``device``).
    """

    def __init__(self, capacity: int, state_dim: int, action_dim: int, device="cpu",
                 storage_dtype: torch.dtype = torch.float32, extras: dict | None = None,
                 sample_device=None):
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity, self.state_dim, self.action_dim = int(capacity), int(state_dim), int(action_dim)
        self.device = torch.device(device)
        self.sample_device = self.device if sample_device is None else torch.device(sample_device)
        self.storage_dtype = storage_dtype
        extras = {k: (v,) if isinstance(v, int) else tuple(v) for k, v in (extras or {}).items()}
        clash = set(extras) & set(_CORE)
        if clash:
            raise ValueError(f"replay extras may not reuse the core field names {sorted(clash)}")
        # rewards and masks stay float32: they are tiny and sparse 0/1 sums must stay exact
        self.shapes = {"state": ((state_dim,), storage_dtype), "action": ((action_dim,), storage_dtype),
                       "reward": ((), torch.float32), "next_state": ((state_dim,), storage_dtype),
                       "terminal": ((), torch.float32)}
        self.shapes.update({k: (shape, storage_dtype) for k, shape in extras.items()})
        self.data = {k: torch.zeros((self.capacity, *shape), dtype=dtype, device=self.device)
                     for k, (shape, dtype) in self.shapes.items()}
        self.ptr = 0   # next row to write
        self.size = 0  # rows filled so far (== capacity once it has wrapped)

    def __len__(self) -> int:
        return self.size

    def nbytes_per_transition(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in self.data.values())

    def add(self, state, action, reward, next_state, terminal, **extras) -> None:
        """Append a batch of n rows (one per env), overwriting the oldest rows once full."""
        if set(extras) != set(self.shapes) - set(_CORE):
            raise ValueError(f"replay add() got extras {sorted(extras)}, "
                             f"the buffer was built with {sorted(set(self.shapes) - set(_CORE))}")
        rows = dict(state=state, action=action, reward=reward, next_state=next_state,
                    terminal=terminal, **extras)
        n = None
        for key, value in rows.items():
            shape, dtype = self.shapes[key]
            value = torch.as_tensor(value).to(device=self.device, dtype=dtype)
            n = value.shape[0] if n is None and value.ndim > 0 else n
            if value.ndim != len(shape) + 1 or tuple(value.shape) != (n, *shape):
                raise ValueError(f"replay add() field {key!r} has shape {tuple(value.shape)}, "
                                 f"expected {(n, *shape)} (one row per env)")
            rows[key] = value
        if n > self.capacity:
            raise ValueError(f"replay add() got {n} rows, more than the capacity {self.capacity}")
        idx = (self.ptr + torch.arange(n, device=self.device)) % self.capacity
        for key, value in rows.items():
            self.data[key][idx] = value
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        """Uniform sample with replacement; float32 tensors on ``sample_device``."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx_device = generator.device if generator is not None else self.device
        idx = torch.randint(0, self.size, (batch_size,), generator=generator, device=idx_device)
        idx = idx.to(self.device)
        return {k: v[idx].to(device=self.sample_device, dtype=torch.float32, non_blocking=True)
                for k, v in self.data.items()}

    # ---- persistence ------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The filled rows only, without copying them on CPU: each field is a tensor over the
        storage's first ``size`` rows (numpy view -> tensor, so torch.save writes those rows and
        not the empty tail), so saving a checkpoint does not double the buffer's memory."""
        def filled(t):
            if t.device.type == "cpu" and self.size == self.capacity:
                return t
            if t.device.type == "cpu" and t.dtype != torch.bfloat16:  # (numpy has no bfloat16)
                return torch.from_numpy(t.numpy()[: self.size])
            return t[: self.size].to("cpu", copy=True)
        return {"capacity": self.capacity, "ptr": self.ptr, "size": self.size,
                "shapes": {k: list(shape) for k, (shape, _) in self.shapes.items()},
                "data": {k: filled(v) for k, v in self.data.items()}}

    def load_state_dict(self, state: dict) -> None:
        mine = {k: list(shape) for k, (shape, _) in self.shapes.items()}
        if state["capacity"] != self.capacity or state["shapes"] != mine:
            raise ValueError(f"replay state has capacity {state['capacity']} and fields {state['shapes']}; "
                             f"this buffer has capacity {self.capacity} and fields {mine}")
        size = int(state["size"])
        for key, value in state["data"].items():
            self.data[key][:size] = value.to(device=self.device, dtype=self.data[key].dtype)
        self.ptr, self.size = int(state["ptr"]), size

    def save(self, path: str) -> str:
        """Write to a temp file and rename, so a crash never leaves a half-written buffer."""
        return atomic_save(self.state_dict(), path)

    def load(self, path: str) -> None:
        # mmap: a multi-GB buffer is copied into place page by page instead of read whole first
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
