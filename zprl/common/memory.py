"""Keep freed heap memory in the process instead of handing it back to the kernel after each step.

Why: on a CPU, torch takes every tensor straight from malloc. glibc's malloc serves blocks above its
mmap threshold (128 KiB, raised on the fly only up to the largest block freed so far) with fresh
``mmap`` pages, and returns the top of the heap to the kernel whenever more than the trim threshold
lies free there. A training step frees its activations and gradients at the end and allocates them
again at the next step, so each step page-faults its whole working set back in: one SAC update at the
authors' settings (10 critics, batch 256: tensors of 2.6 MB) took ~1,500-2,600 minor page faults, up
to a fifth of its time (``benchmarks/bench_sac_update.py``). Raising both thresholds keeps those pages
mapped; the cost is that the process's resident memory stays at its peak instead of shrinking between
steps. Blocks above 32 MiB (the replay buffer, datasets) are still mapped on their own.

Only glibc is tuned (Linux); elsewhere, or when the user set glibc's own variables for these settings
(``USER_VARIABLES``), nothing changes. Allocation never changes a computed value.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameter numbers from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit for it on 64-bit machines
TRIM_THRESHOLD = 1024 * 1024 * 1024
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if they were changed."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in USER_VARIABLES):
        return False  # the user tuned malloc themselves
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
