"""How much a base policy's executed actions depend on its flow noise (is the 2-step base near-deterministic?).

    python scripts/base_noise_spread.py CKPT [CKPT ...] [-n 256]

On ``n`` observations of each checkpoint's own training dataset, conditioned as deployed (decoded
posterior mean), prints
- the mean end-effector position distance (mm) between the executed chunks sampled from two
  independent flow noises, and between a noise draw and the zero-noise start;
- the network's local slope d v / d x at sigma = 1 (projected on a random direction): 1.0 means its
  first step of the authors' 2-step sampler jumps to a noise-independent conditional-mean estimate.
Compare the spread with how far steering moves the chunk (scripts/diagnose_steering.py, section 2):
a critic cannot credit steering effects much smaller than noise it does not observe.
"""

from __future__ import annotations

import argparse
import sys

import torch

from zprl.common.errors import run_cli


@torch.no_grad()
def noise_spread(ckpt: str, n: int = 256, seed: int = 0) -> dict:
    from zprl.policy import steering as S
    from zprl.policy.checkpoint import load_base_policy
    from zprl.rl.smoothness import position_dims

    policy, cfg, _ = load_base_policy(ckpt)
    obs = next(S.dataset_observations(cfg, n, seed=1, batch_size=n))
    emb = policy.encode_obs(obs)
    cond = policy.decode_latent(policy.vib_posterior(emb)[0]) if policy.use_vib else emb
    g = torch.Generator().manual_seed(seed)
    shape = (emb.shape[0], policy.horizon, policy.action_dim)
    pos = torch.as_tensor(position_dims(policy.action_dim))

    def chunk(noise):
        return policy.sample_action_chunk(cond, noise)["action"][..., pos].unflatten(-1, (-1, 3))

    a, b = chunk(torch.randn(shape, generator=g)), chunk(torch.randn(shape, generator=g))
    zero = chunk(torch.zeros(shape))
    x, u, eps = torch.randn(shape, generator=g), torch.randn(shape, generator=g), 1e-2
    t = torch.full((shape[0],), float(policy.flow.train_timesteps[0]))
    slope = ((policy.model(x + eps * u, t, cond) - policy.model(x, t, cond)) * u).sum() / (eps * u.pow(2).sum())
    return {"spread_mm": 1000 * (a - b).norm(dim=-1).mean().item(),
            "vs_zero_noise_mm": 1000 * (a - zero).norm(dim=-1).mean().item(),
            "slope_at_sigma1": slope.item(), "n": int(emb.shape[0])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="offline checkpoints (latest.ckpt)")
    p.add_argument("-n", type=int, default=256, help="dataset observations")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("| checkpoint | observations | spread between two noises (mm) | noise vs zero noise (mm) | dv/dx at sigma=1 |")
    print("|---|---|---|---|---|")
    for ckpt in args.checkpoints:
        r = noise_spread(ckpt, args.n)
        print(f"| {ckpt} | {r['n']} | {r['spread_mm']:.1f} | {r['vs_zero_noise_mm']:.1f} | {r['slope_at_sigma1']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
