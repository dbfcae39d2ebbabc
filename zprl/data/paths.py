"""Where datasets live by default, and the one command that makes a missing one."""

from __future__ import annotations

import os
import re

TASKS = ("lift", "can", "square", "transport")
OBS_TYPES = ("low_dim", "image")

# Layout of the public ZPRL dataset release: data_local/robomimicv030/<task>/mh/<obs>_v141_subset_abs.hdf5
_DEFAULT_RE = re.compile(r"robomimicv030/(?P<task>\w+)/mh/(?P<obs>image|low_dim)_v141_subset_abs\.hdf5$")


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_dataset_path(task: str, obs: str, root: str | None = None) -> str:
    """Path the task configs read by default (relative to the repository root unless ``root``)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if obs not in OBS_TYPES:
        raise ValueError(f"unknown observation type {obs!r}; choose one of {', '.join(OBS_TYPES)}")
    rel = os.path.join("data_local", "robomimicv030", task, "mh", f"{obs}_v141_subset_abs.hdf5")
    return os.path.join(root if root is not None else repo_root(), rel)


def prepare_command(task: str, obs: str) -> str:
    return f"python -m zprl.data.prepare --task {task} --obs {obs}"


def missing_dataset_message(path: str) -> str:
    """One line for a dataset that does not exist: which path, and how to make or get it."""
    m = _DEFAULT_RE.search(os.path.abspath(path).replace(os.sep, "/"))
    if m:
        how = f"make it with: {prepare_command(m['task'], m['obs'])}"
    else:
        how = "point task.dataset_path at a robomimic hdf5 file, or make one with: python -m zprl.data.prepare --task TASK --obs {image,low_dim}"
    return f"dataset not found: {path} — {how}"
