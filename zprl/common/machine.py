"""What machine and which CPU kernels a run ran on, written beside its logs.

Float rounding on a CPU depends on the kernels torch, MKL, oneDNN and numpy pick for it, and the same
recipe gave other weights on an AMD and an Intel machine (docs/cpu_runs.md). A run directory therefore
keeps ``machine.json``: one entry per start (a resumed run may continue on another machine), each
with the CPU, torch's kernel level and the environment variables that pin kernels.
"""

from __future__ import annotations

import datetime
import json
import os
import platform

FILE_NAME = "machine.json"


def isa_env_pins() -> dict[str, str]:
    """The variables scripts/cpu_runs/isa_env.sh exports: the evidence scripts' kernel pins, one source."""
    import shlex

    from zprl.data.paths import repo_root

    pins = {}
    with open(os.path.join(repo_root(), "scripts", "cpu_runs", "isa_env.sh")) as f:
        for line in f:
            if line.startswith("export "):
                pins.update(item.split("=", 1) for item in shlex.split(line[len("export "):], comments=True))
    return pins


# the kernel pins, and the thread settings that change rounding or speed
KERNEL_ENV = (*isa_env_pins(), "OMP_NUM_THREADS", "OMP_WAIT_POLICY")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_record(step: int) -> dict:
    import torch

    return {
        "started_at_step": int(step),
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
    }


def append_machine_record(output_dir: str, step: int, fresh: bool) -> dict:
    """Add this start's entry to ``output_dir/machine.json``; a fresh run starts a new list."""
    path = os.path.join(output_dir, FILE_NAME)
    entries = []
    if not fresh and os.path.isfile(path):
        try:
            with open(path) as f:
                entries = json.load(f)
        except (OSError, ValueError):
            entries = []  # a file a kill cut short: this start's entry is still worth having
    entry = machine_record(step)
    entries.append(entry)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(entries, f, indent=1)
    os.replace(tmp, path)
    return entry
