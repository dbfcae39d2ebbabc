"""benchmarks/gpu_check.py at tiny sizes on CPU: every row runs and the table has its shape (the GPU
figures come from the lent GPU machine: benchmarks/gpu_check_run.sh)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_runs_every_row_on_cpu_at_tiny_sizes():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_check.py"), "--device", "cpu",
                          "--tiny", "--threads", "1", "--frames", "3"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[-1] == "headline: gpu_check_rows_ok=10/10", "\n".join(lines[-15:])
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines
            if line.startswith("| ") and not line.startswith("| check ")]
    checks = [(r[0], r[1], r[3]) for r in rows]
    assert checks == [
        ("offline train step (image)", "batch 1, fp32", "samples/s"),
        ("offline train step (image)", "batch 1, bf16 autocast", "samples/s"),
        ("offline train step (image)", "batch 2, fp32", "samples/s"),
        ("offline train step (image)", "batch 2, bf16 autocast", "samples/s"),
        ("inference chunk (image)", "1 obs, flow-2 (authors')", "ms"),
        ("inference chunk (image)", "1 obs, DDIM-10", "ms"),
        ("inference chunk (image)", "2 obs, flow-2 (authors')", "ms"),
        ("inference chunk (image)", "2 obs, DDIM-10", "ms"),
        ("SAC update (ZPRL)", "2 critics, MLP [32, 32], batch 32, state 537, action 16", "updates/s"),
        ("MuJoCo EGL render", "two 84x84 cameras (agentview, robot0_eye_in_hand), no MSAA/reflections", "frame pairs/s"),
    ]
    assert all(float(r[2].replace(",", "")) > 0 and r[4] == "-" for r in rows)  # no GPU memory on CPU
    # the EGL table and zprl's pick are printed (here Mesa: no CUDA number, nothing asked for)
    assert any(line.startswith("#   EGL 0 -> None") for line in lines)
    assert any(line.startswith("# zprl's pick for cpu: EGL 0; no GPU asked for") for line in lines)
