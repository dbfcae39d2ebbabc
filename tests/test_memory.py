"""zprl.common.memory: freed tensors' pages stay in the process, so a step does not fault them back in."""

import os
import platform
import subprocess
import sys

import pytest

from zprl.common.memory import USER_VARIABLES, keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A training step's pattern: one SAC update at the authors' settings (10 critics, batch 256) allocates
# and frees tensors of many sizes up to 2.6 MB, which glibc's self-adjusting thresholds do not follow.
STEPS = """
import resource, sys, torch
from zprl.common.memory import keep_freed_memory
from zprl.rl.sac import SAC
tuned = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.manual_seed(0)
torch.set_num_threads(1)
sac = SAC(272, 16, "cpu", gamma=0.96, n_critics=10)
batch = {"state": torch.randn(256, 272), "action": torch.rand(256, 16), "reward": torch.zeros(256),
         "next_state": torch.randn(256, 272), "terminal": torch.zeros(256)}
for _ in range(4):  # the heap grows to an update's size
    sac.update(batch)
faults = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    sac.update(batch)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(tuned, sorted(faults)[4])  # the median update: the kept heap can still grow once in a while
"""


def faults_per_step(mode: str, env: dict | None = None) -> tuple[str, float]:
    """(whether malloc was tuned, minor page faults of the median update) in a fresh process."""
    out = subprocess.run([sys.executable, "-c", STEPS, mode], check=True, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(not GLIBC, reason="tunes glibc's malloc only; other C libraries are left as they are")
def test_keep_freed_memory_stops_each_step_faulting_its_tensors_back_in():
    tuned, kept = faults_per_step("keep")
    _, default = faults_per_step("default")
    assert tuned == "True"
    # by default each update faults ~10 MB back in from the kernel (~2,000 pages); kept, it reuses its pages
    assert default > 500 and kept < default / 10


@pytest.mark.skipif(not GLIBC, reason="tunes glibc's malloc only")
def test_keep_freed_memory_leaves_a_users_own_malloc_settings_alone():
    tuned, _ = faults_per_step("keep", {"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert tuned == "False"


def test_keep_freed_memory_says_whether_it_tuned_anything():
    assert keep_freed_memory() is (GLIBC and not any(k in os.environ for k in USER_VARIABLES))


def test_workspaces_keep_freed_memory_unless_the_config_says_no(monkeypatch, tmp_path):
    from omegaconf import OmegaConf

    from zprl.workspace.base import BaseWorkspace

    calls = []
    monkeypatch.setattr("zprl.common.memory.keep_freed_memory", lambda: calls.append(True) or True)
    BaseWorkspace(OmegaConf.create({"training": {"keep_freed_memory": False}}), output_dir=str(tmp_path))
    assert calls == []
    BaseWorkspace(OmegaConf.create({"training": {"keep_freed_memory": True}}), output_dir=str(tmp_path))
    BaseWorkspace(OmegaConf.create({"training": {}}), output_dir=str(tmp_path))  # configs from before the key
    assert calls == [True, True]
