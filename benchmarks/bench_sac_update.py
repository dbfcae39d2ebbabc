"""SAC updates/s at the authors' settings: today's ``zprl/rl/sac.py`` against an earlier version of it.

The reference is the same file read from git history (``--reference``, default: the last commit
before the update was made cheaper), imported as its own module, so both versions run side by
side in one process on the same batches, interleaved. One "update" is ``SAC.update``: one critic
step, and every second step the actor, temperature and Polyak target, as in the online loop.

The speed-ups are not new math: the TD target evaluates only the 2 target members it takes the
min of (not all 10), the actor's backward pass stops at the action's columns of the critics' first
layer, and Adam runs fused. After ``--check-updates`` identical updates from identical weights the
script prints how far the two versions' critics have drifted apart (fused Adam rounds differently).
The profile of one update (``--profile``) shows what is left: the batched matmuls of the critics.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import base_parser, interleaved, markdown_table, median, print_headline, setup, spread, time_calls  # noqa: E402

from zprl.rl import sac as current  # noqa: E402

# zprl/rl/sac.py as it was before the target subset, the split first layer and fused Adam
REFERENCE_COMMIT = "97daed8"


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


def main():
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--reference", default=REFERENCE_COMMIT, help="git commit whose zprl/rl/sac.py is the reference, or a path to a sac.py")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--n-critics", type=int, default=10)
    p.add_argument("--state-dim", type=int, default=272, help="lift low-dim ZPRL: obs_emb 256 + z 16")
    p.add_argument("--action-dim", type=int, default=16, help="ZPRL: the latent size")
    p.add_argument("--updates", type=int, default=20, help="updates per repetition")
    p.add_argument("--check-updates", type=int, default=50)
    p.add_argument("--profile", action="store_true", help="also print the top ops of the current update")
    args = p.parse_args()
    if args.quick:
        args.batch_size, args.state_dim, args.updates, args.check_updates, args.reps = 32, 24, 4, 4, 2
    device = setup(args)
    reference = load_reference(args.reference)
    dims = (args.state_dim, args.action_dim, args.n_critics, device)
    batch = make_batch(args.batch_size, args.state_dim, args.action_dim, device)
    agents = {"reference": build(reference, *dims), "current": build(current, *dims)}

    # the same updates from the same weights: how far apart do they end?
    for agent in agents.values():
        for _ in range(args.check_updates):
            agent.update(batch)
    with torch.no_grad():
        q = {name: a.critic(batch["state"], batch["action"]) for name, a in agents.items()}
    drift = (q["current"] - q["reference"]).abs().max().item()

    def rep(agent):
        return lambda: time_calls(lambda: agent.update(batch), args.updates, device)

    times = interleaved({name: rep(a) for name, a in agents.items()}, args.reps)
    rows = [[name, 1.0 / median(t), 1e3 * median(t), spread(t)] for name, t in times.items()]
    print(f"\nSAC.update, batch {args.batch_size}, {args.n_critics} critics, state {args.state_dim}, "
          f"action {args.action_dim}, reference = zprl/rl/sac.py at {args.reference}")
    print(markdown_table(["version", "updates/s", "ms/update", "spread"], rows))
    print(f"\nmax |Q_current - Q_reference| after {args.check_updates} identical updates: {drift:.2e}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.updates):
                agents["current"].update(batch)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    print_headline("updates_per_s_current_over_reference", median(times["reference"]) / median(times["current"]))


if __name__ == "__main__":
    main()
