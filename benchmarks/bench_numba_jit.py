"""robosuite's controller math with numba's JIT (robosuite's default) vs without (NUMBA_DISABLE_JIT=1).

    python benchmarks/bench_numba_jit.py [--steps 200] [--reps 3] [--obs image,low_dim]

Turning the JIT off keeps llvmlite's LLVM out of an env worker (less resident memory); this measures
what it costs. Each variant runs in its own child process (numba reads the switch at import), the
variants alternate, order rotated each round. Per row: median CPU ms per control step of one Lift env
(random actions, fixed seeds; headline: the image row), RSS after the steps, and whether the simulator states of the two
variants are bit-identical step by step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from timing import markdown_table, median, print_headline, spread  # noqa: E402

CHILD = r"""
import hashlib, json, sys, time
import numpy as np, psutil
sys.path.insert(0, {repo!r})
from zprl.env.render_patch import apply_render_patches
from zprl.env.robomimic_env import make_env_meta
from zprl.env.robosuite_env import RobosuiteEnv
obs, steps = {obs!r}, {steps}
apply_render_patches(buffer_size=(84, 84))
np.random.seed(0)  # robosuite's object placement draws from numpy's global generator
keys = ["agentview_image", "robot0_eye_in_hand_image", "robot0_eef_pos"] if obs == "image" else ["robot0_eef_pos", "object"]
env = RobosuiteEnv(make_env_meta("lift", obs=obs, image_size=84, abs_action=False), obs_keys=keys)
rng, states = np.random.default_rng(0), hashlib.sha256()
env.reset(); env.step(np.zeros(7))  # first step compiles the jitted functions (numba caches them)
start = time.process_time()
for _ in range(steps):
    env.step(rng.uniform(-0.5, 0.5, 7))
    states.update(env.env.sim.get_state().flatten().tobytes())
print(json.dumps({{"ms": (time.process_time() - start) / steps * 1e3, "states": states.hexdigest(),
                  "rss": psutil.Process().memory_info().rss / 2**20}}))
"""


def run_child(obs: str, jit: bool, steps: int) -> dict:
    env = {**os.environ, "NUMBA_DISABLE_JIT": "0" if jit else "1", "OMP_NUM_THREADS": "1"}
    code = CHILD.format(repo=os.path.dirname(HERE), obs=obs, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"bench_numba_jit: the {obs} child (jit={jit}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--obs", default="image,low_dim", help="comma list of image, low_dim")
    p.add_argument("--steps", type=int, default=200, help="control steps timed per child")
    p.add_argument("--reps", type=int, default=3, help="children per variant, alternated")
    p.add_argument("--quick", action="store_true", help="20 steps, 1 rep, low-dim only (smoke test)")
    args = p.parse_args()
    if args.quick:
        args.obs, args.steps, args.reps = "low_dim", 20, 1
    print(f"# python benchmarks/bench_numba_jit.py --obs {args.obs} --steps {args.steps} --reps {args.reps}; "
          f"load avg {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    rows, ratios = [], {}
    for obs in args.obs.split(","):
        runs = {True: [], False: []}
        for rep in range(args.reps):
            for jit in ((True, False) if rep % 2 == 0 else (False, True)):
                runs[jit].append(run_child(obs, jit, args.steps))
        ms = {jit: [r["ms"] for r in runs[jit]] for jit in runs}
        same = len({r["states"] for r in runs[True] + runs[False]}) == 1
        ratio = ratios[obs] = median(ms[False]) / median(ms[True])
        rows.append([obs, f"{median(ms[True]):.2f} {spread(ms[True])}", f"{median(ms[False]):.2f} {spread(ms[False])}",
                     f"{ratio:.3f}", f"{median([r['rss'] for r in runs[True]]):.0f}",
                     f"{median([r['rss'] for r in runs[False]]):.0f}", "yes" if same else "no"])
    print(markdown_table(["obs", "CPU ms/step JIT", "CPU ms/step no JIT", "no JIT / JIT", "RSS MiB JIT",
                          "RSS MiB no JIT", "same simulator states"], rows))
    print_headline("nojit_over_jit_step_cpu", ratios.get("image", next(iter(ratios.values()))))


if __name__ == "__main__":
    main()
