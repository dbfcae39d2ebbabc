"""How often an online run's observations sent the VIB posterior far outside what it was trained on.

For each run directory, reads the replay buffer in ``checkpoints/latest.ckpt`` (the stored RL states
begin with the frozen encoder's obs_emb) and the run's base policy, recomputes the posterior
(mu, logvar) of every stored observation and prints: rows, rows whose posterior is wider than the
prior (max logvar > 0), the largest logvar (and, for reference, the largest on 4096 observations of
the base's own dataset), and, for ZPRL (whose state ends with the sampled z),
rows with |z| > 1e3 and the largest |z|; then the buffer rows where each such stretch began (one
row per agent step, so row ~ agent step; env steps = 4x for n_action_steps 4). docs/steering.md
("The posterior on unfamiliar observations") quotes it.

    python scripts/posterior_blowups.py data/runs/evidence/can/zprl_match_c10u1/2 [...]
"""

import argparse
import os

import torch


def stretches(rows: torch.Tensor, gap: int = 50) -> list[int]:
    """First row of each run of flagged rows (rows closer than ``gap`` belong to one stretch)."""
    firsts, last = [], None
    for r in rows.tolist():
        if last is None or r - last > gap:
            firsts.append(r)
        last = r
    return firsts


@torch.no_grad()
def scan(run_dir: str) -> str:
    from zprl.common.checkpoint import load_checkpoint
    from zprl.policy.calibration import dataset_observations
    from zprl.policy.checkpoint import load_base_policy

    payload = load_checkpoint(os.path.join(run_dir, "checkpoints", "latest.ckpt"))
    state = payload["state"]
    policy, base_cfg, _ = load_base_policy(state["base_ckpt"])
    on_data = max(policy.vib_posterior(policy.encode_obs(obs))[1].max().item()
                  for obs in dataset_observations(base_cfg, 4096, seed=0, batch_size=512))
    replay = state["replay"]
    states = replay["data"]["state"][: replay["size"]].float()
    emb = states[:, : policy.obs_dim]
    logvar_max = torch.cat([policy.vib_posterior(part)[1].amax(1) for part in emb.split(4096)])
    wide = (logvar_max > 0).nonzero().flatten()
    line = (f"{run_dir}: steering {state['steering']['name']}; largest logvar on 4096 dataset observations "
            f"{on_data:.2f}; buffer: {len(states)} rows, posterior wider than the prior "
            f"(max logvar > 0) in {len(wide)}, largest logvar {logvar_max.max().item():.1f}")
    if state["steering"]["name"] == "zprl":
        z = states[:, policy.obs_dim:]
        huge = (z.abs().amax(1) > 1e3).nonzero().flatten()
        line += f"; |z| > 1e3 in {len(huge)} rows, largest |z| {z.abs().max().item():.3g}"
    return line + f"; stretches begin at rows {stretches(wide)}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="online run directories (with checkpoints/latest.ckpt)")
    args = parser.parse_args(argv)
    for run in args.runs:
        print(scan(run), flush=True)


if __name__ == "__main__":
    main()
