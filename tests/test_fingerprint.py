"""zprl/common/fingerprint.py: the hashes that tell two machines' base builds apart (docs/cpu_runs.md)."""

import os
import shutil
import subprocess
import sys

import h5py
import pytest
import torch

from robomimic_fixtures import write_robomimic_file
from zprl.common.checkpoint import weights_sha256


def fingerprint(*paths):  # as the base scripts run it
    return subprocess.run([sys.executable, "-m", "zprl.common.fingerprint", *map(str, paths)],
                          capture_output=True, text=True, cwd=os.path.join(os.path.dirname(__file__), ".."))


def fields(stdout):  # "PATH: FIELD sha256 HEX" -> {FIELD: HEX}, the whole file's line under "data"
    rows = {}
    for line in stdout.splitlines():
        words = line.split(": ", 1)[1].split()
        rows["data" if "demos," in words else words[0]] = words[-1]
    return rows


def test_same_demos_same_lines_and_other_observations_change_only_obs(tmp_path):
    a, b = tmp_path / "a.hdf5", tmp_path / "b.hdf5"
    write_robomimic_file(str(a))
    shutil.copy(a, b)
    fa = fields(fingerprint(a).stdout)
    assert {"actions", "states", "obs", "data"} <= set(fa)
    assert fields(fingerprint(b).stdout) == fa
    with h5py.File(b, "r+") as f:
        key = sorted(f["data/demo_0/obs"])[0]
        f[f"data/demo_0/obs/{key}"][0] += 0.5
    fb = fields(fingerprint(b).stdout)
    assert fb["obs"] != fa["obs"] and fb["data"] != fa["data"]
    assert fb["actions"] == fa["actions"] and fb["states"] == fa["states"]


def test_checkpoint_line_is_the_online_runs_base_hash(tmp_path):
    ema = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    torch.save({"state": {"ema_model": ema, "model": {"w": torch.ones(1)}}}, tmp_path / "latest.ckpt")
    out = fingerprint(tmp_path / "latest.ckpt")
    assert out.returncode == 0
    assert out.stdout.split()[2] == weights_sha256(ema) and "(ema_model)" in out.stdout


@pytest.mark.parametrize("name, content, says", [
    ("missing.ckpt", None, "no file"),
    ("notes.txt", "x", "expected a .ckpt or .hdf5"),
])
def test_bad_input_is_one_line(tmp_path, name, content, says):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    out = fingerprint(path)
    assert out.returncode != 0 and says in out.stderr and len(out.stderr.strip().splitlines()) == 1
