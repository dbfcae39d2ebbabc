"""The soak script (benchmarks/soak_online.py) at a 2-minute setting: a worker kill and a kill -9 +
resume of the run, nothing lost, memory within its bound. The lead's 30-minute soak is the same
command with --minutes 30."""

import os
import subprocess
import sys

import pytest

from zprl.data.paths import repo_root


@pytest.mark.slow
def test_soak_two_minutes(tiny_base_ckpt, tmp_path):
    out = subprocess.run([sys.executable, os.path.join(repo_root(), "benchmarks", "soak_online.py"), "--minutes", "2",
                          "--base-ckpt", tiny_base_ckpt, "--out", str(tmp_path / "soak"), "--sample-every", "5"],
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": repo_root()},
                         capture_output=True, text=True, timeout=1800)
    print(out.stdout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[-1] == "headline: soak_ok=1.000"
    assert any("SIGKILL training env worker" in line for line in lines)
    assert "- [x] one env fault counted" in lines and "| main |" in out.stdout
