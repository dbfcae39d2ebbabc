"""Each benchmark script runs end to end at tiny sizes (--quick) and ends with its headline line.

No timing thresholds: the numbers of a --quick run mean nothing; the format and the values that
do not depend on timing (byte counts) are checked.
"""

import math
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADLINE = re.compile(r"^headline: (?P<name>[a-z0-9_]+)=(?P<value>-?\d+\.\d{3})$")


def run_quick(script: str, *extra: str) -> list[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), "--quick", *extra],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    match = HEADLINE.match(lines[-1])
    assert match, f"last line is not a headline: {lines[-1]!r}"
    value = float(match["value"])
    assert math.isfinite(value) and value > 0
    return lines


def table_rows(lines: list[str], first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines
            if line.startswith(f"| {first_cell} |")]


def test_bench_inference_quick():
    lines = run_quick("bench_inference.py")
    assert lines[-1].startswith("headline: flow2_over_ddim10=")
    ms_row, ratio_row = table_rows(lines, "low-dim")
    assert len(ms_row) == 9 and len(ratio_row) == 9  # obs, batch, encoder/6 samplers, chunk ratio
    assert ratio_row[2 + 4] == "1.000"  # DDIM-10 relative to itself


def test_bench_memory_quick():
    lines = run_quick("bench_memory.py")
    assert lines[-1].startswith("headline: rss_over_predicted_image_f32=")
    image, lowdim = table_rows(lines, "lift")
    # state = 2 cameras x 256 + 9 low-dim + 16 latent; each row stores state and next_state,
    # the 16-d action and float32 reward and terminal.
    assert image[2:6] == ["537", "16", str((2 * 537 + 16) * 4 + 8), str((2 * 537 + 16) * 2 + 8)]
    assert lowdim[2:6] == ["272", "16", str((2 * 272 + 16) * 4 + 8), str((2 * 272 + 16) * 2 + 8)]


@pytest.mark.slow  # generates its datasets on a fresh machine (minutes of simulation)
def test_bench_offline_quick():
    lines = run_quick("bench_offline.py")
    assert lines[-1].startswith("headline: loader_over_memory_worst=")
    (row,) = table_rows(lines, "low-dim")
    assert row[2] == "32" and row[3] == "0"  # quick: batch 32, loading in the main process


@pytest.mark.slow
def test_bench_env_quick():
    lines = run_quick("bench_env.py")
    assert lines[-1].startswith("headline: render_patch_speedup_geomean=")
    (row,) = table_rows(lines, "lift")
    assert all(float(cell.split()[0]) > 0 for cell in row[1:4])


@pytest.mark.slow
def test_bench_online_quick():
    lines = run_quick("bench_online.py")
    assert lines[-1].startswith("headline: loop_over_raw=")
    shares = [line for line in lines if line.startswith(("| demo, ", "| authors, "))]
    assert [s.split("|")[1].strip() for s in shares] == [f"{name}, {loop}" for name in ("demo", "authors")
                                                         for loop in ("serial", "overlapped", "2 env groups")]
    for line in shares:
        parts = [float(c.strip().rstrip("%")) for c in line.strip().strip("|").split("|")[1:]]
        assert abs(sum(parts) - 100.0) < 0.5 and all(p >= 0 for p in parts[:3])


def test_bench_sac_update_quick():
    # the reference is today's file itself (no git history needed): same weights, same updates
    lines = run_quick("bench_sac_update.py", "--reference", os.path.join(REPO, "zprl", "rl", "sac.py"))
    assert lines[-1].startswith("headline: updates_per_s_current_over_reference=")
    assert [r[:2] for r in table_rows(lines, "reference") + table_rows(lines, "current")] == [
        ["reference", "default"], ["reference", "keep"], ["current", "default"], ["current", "keep"]]
    (drift,) = [line for line in lines if line.startswith("max |Q_current - Q_reference|")]
    assert float(drift.split(": ")[1]) == 0.0


def test_bench_cpu_train_quick():
    lines = run_quick("bench_cpu_train.py", "--reps", "1")
    assert lines[-1].startswith("headline: demo_train_step_speedup=")
    assert [r[1] for r in table_rows(lines, "demo [32,64,128]")] == [
        "train step", "forward + backward", "AdamW step", "chunk, 1 obs", "chunk, 20 obs"]


def test_bench_threads_quick():
    lines = run_quick("bench_threads.py")
    assert lines[-1].startswith("headline: two_passive_over_one_thread=")
    rows = {r[0]: r for r in (table_rows(lines, "1 thread") + table_rows(lines, "2 threads, PASSIVE")
                              + table_rows(lines, "2 threads, default") + table_rows(lines, "2 threads, ACTIVE"))}
    assert sorted(rows) == ["1 thread", "2 threads, ACTIVE", "2 threads, PASSIVE", "2 threads, default"]
    assert rows["1 thread"][3] == "1"  # the reference's speed-up over itself


def test_bench_numba_jit_quick():
    lines = run_quick("bench_numba_jit.py")
    assert lines[-1].startswith("headline: nojit_over_jit_step_cpu=")
    (row,) = table_rows(lines, "low_dim")
    assert float(row[5]) < float(row[4])  # without the JIT llvmlite's LLVM is never loaded
    assert row[6] in ("yes", "no")
