"""SAC updates/s at the authors' settings: today's ``zprl/rl/sac.py`` against an earlier version of it.

The reference is the same file read from git history (``--reference``, default: the last commit
before the update was made cheaper), imported as its own module, so both versions run side by
side in one process on the same batches, interleaved. One "update" is ``SAC.update``: one critic
step, and every second step the actor, temperature and Polyak target, as in the online loop.

Each repetition runs in two fresh processes, one with glibc's default malloc and one with
``zprl.common.memory.keep_freed_memory()``, as ``train.py`` runs (the setting is process-wide and
cannot be undone), their order alternating; the table has both versions under both, with the minor
page faults per update, and the headline is today's training process over the reference's.

The speed-ups are not new math: the TD target evaluates only the 2 target members it takes the
min of (not all 10), the actor's backward pass stops at the action's columns of the critics' first
layer while the critic's own step multiplies (state, action) at once (a split there makes autograd
zero-fill and copy full-size gradients), Adam runs fused, and freed memory stays in the process
instead of being faulted back in at every update. After ``--check-updates`` identical updates from
identical weights the script prints how far the two versions' critics have drifted apart (fused
Adam and the first layer's other summation order round differently). The profile of one update
(``--profile``) shows what is left: the batched matmuls of the critics.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import base_parser, interleaved, markdown_table, median, print_headline, setup, spread, time_calls  # noqa: E402

from zprl.common.memory import USER_VARIABLES, keep_freed_memory  # noqa: E402
from zprl.rl import sac as current  # noqa: E402

# zprl/rl/sac.py as it was before the target subset, the split first layer and fused Adam
REFERENCE_COMMIT = "97daed8"
MALLOC = ["default", "keep"]


def load_reference(reference: str):
    """The module in ``reference``: a path to a sac.py, or a git commit whose zprl/rl/sac.py it is."""
    if os.path.isfile(reference):
        path = reference
    else:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        try:
            source = subprocess.run(["git", "show", f"{reference}:zprl/rl/sac.py"], cwd=root, check=True,
                                    capture_output=True, text=True).stdout
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            sys.exit(f"bench_sac_update: cannot read zprl/rl/sac.py at commit {reference} from git ({e}); "
                     f"run it in a full git clone, or pass --reference COMMIT or a path to a sac.py")
        path = os.path.join(tempfile.mkdtemp(), "sac_reference.py")
        with open(path, "w") as f:
            f.write(source)
    spec = importlib.util.spec_from_file_location("sac_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_batch(batch_size: int, state_dim: int, action_dim: int, device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {"state": torch.randn(batch_size, state_dim, generator=g),
             "action": torch.rand(batch_size, action_dim, generator=g) * 2 - 1,
             "reward": (torch.rand(batch_size, generator=g) < 0.2).float(),
             "next_state": torch.randn(batch_size, state_dim, generator=g),
             "terminal": (torch.rand(batch_size, generator=g) < 0.05).float()}
    return {k: v.to(device) for k, v in batch.items()}


def build(module, state_dim: int, action_dim: int, n_critics: int, device, seed: int = 0):
    torch.manual_seed(seed)  # same initial weights in both versions
    return module.SAC(state_dim, action_dim, device, gamma=0.96, n_critics=n_critics, seed=seed)


def child(args) -> None:
    """One process: time both versions under one malloc setting, print the times as one JSON line."""
    import resource

    if args.child == "keep":
        if not keep_freed_memory():
            sys.exit("bench_sac_update: keep_freed_memory() changed nothing here (not glibc?)")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    reference = load_reference(args.reference)
    dims = (args.state_dim, args.action_dim, args.n_critics, device)
    batch = make_batch(args.batch_size, args.state_dim, args.action_dim, device)
    agents = {"reference": build(reference, *dims), "current": build(current, *dims)}
    out = {}
    if args.check_updates:  # the same updates from the same weights: how far apart do they end?
        for agent in agents.values():
            for _ in range(args.check_updates):
                agent.update(batch)
        with torch.no_grad():
            q = {name: a.critic(batch["state"], batch["action"]) for name, a in agents.items()}
        out["drift"] = (q["current"] - q["reference"]).abs().max().item()
    faults = {}

    def rep(name):
        def run():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            seconds = time_calls(lambda: agents[name].update(batch), args.updates, device)
            faults[name] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / args.updates
            return seconds
        return run

    out["times"] = interleaved({name: rep(name) for name in agents}, args.reps)
    out["faults"] = faults
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.updates):
                agents["current"].update(batch)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12), file=sys.stderr)
    print(json.dumps(out))


def run_child(args, malloc: str, reps: int, check_updates: int, profile: bool = False) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", malloc, "--reps", str(reps),
           "--check-updates", str(check_updates), "--reference", args.reference, "--device", args.device,
           "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--n-critics", str(args.n_critics),
           "--state-dim", str(args.state_dim), "--action-dim", str(args.action_dim), "--updates", str(args.updates)]
    env = {k: v for k, v in os.environ.items() if k not in USER_VARIABLES}  # each process its own malloc setting
    out = subprocess.run(cmd + (["--profile"] if profile else []), env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench_sac_update: the {malloc}-malloc process failed:\n{out.stderr[-3000:]}")
    if profile:
        print(out.stderr[out.stderr.find("---"):])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--reference", default=REFERENCE_COMMIT, help="git commit whose zprl/rl/sac.py is the reference, or a path to a sac.py")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--n-critics", type=int, default=10)
    p.add_argument("--state-dim", type=int, default=272, help="lift low-dim ZPRL: obs_emb 256 + z 16")
    p.add_argument("--action-dim", type=int, default=16, help="ZPRL: the latent size")
    p.add_argument("--updates", type=int, default=20, help="updates per repetition")
    p.add_argument("--check-updates", type=int, default=50)
    p.add_argument("--profile", action="store_true", help="also print the top ops of the current update (kept memory)")
    p.add_argument("--child", choices=MALLOC, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.batch_size, args.state_dim, args.updates, args.check_updates, args.reps = 32, 24, 4, 4, 2
    if args.child:
        return child(args)
    device = setup(args)
    load_reference(args.reference)  # fail here, in one line, if git cannot give it
    # one fresh process per malloc setting and repetition, their order alternating: the malloc setting
    # is process-wide and cannot be undone
    times = {(v, m): [] for m in MALLOC for v in ("reference", "current")}
    faults = {key: [] for key in times}
    drift = run_child(args, "default", 1, args.check_updates)["drift"]
    for r in range(args.reps):
        for malloc in MALLOC[r % 2:] + MALLOC[:r % 2]:
            res = run_child(args, malloc, 1, 0, profile=args.profile and malloc == "keep" and r == 0)
            for version, t in res["times"].items():
                times[version, malloc] += t
                faults[version, malloc].append(res["faults"][version])
    rows = [[v, m, 1.0 / median(t), 1e3 * median(t), spread(t), median(faults[v, m])] for (v, m), t in times.items()]
    print(f"\nSAC.update on {device}, batch {args.batch_size}, {args.n_critics} critics, state {args.state_dim}, "
          f"action {args.action_dim}, reference = zprl/rl/sac.py at {args.reference}; malloc: glibc's default, or "
          f"keep = zprl.common.memory.keep_freed_memory() as train.py runs")
    print(markdown_table(["version", "malloc", "updates/s", "ms/update", "spread", "page faults/update"], rows))
    print(f"\nmax |Q_current - Q_reference| after {args.check_updates} identical updates: {drift:.2e}")
    ref = median(times["reference", "default"])
    print(f"the code alone: {ref / median(times['current', 'default']):.3f}x; the kept memory alone: "
          f"{ref / median(times['reference', 'keep']):.3f}x")
    print_headline("updates_per_s_current_over_reference", ref / median(times["current", "keep"]))


if __name__ == "__main__":
    main()
