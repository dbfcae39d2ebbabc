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

With ``--lambdas 0.2,0.5,1`` (VIB bases) it also prints each interface's reach on the same
observations and flow noise (zprl/policy/calibration.py): how far a random dz ~ U(-1, 1) at each
lambda, a random action residual da ~ U(-1, 1) at ``--alpha-res``, a random embedding residual
d ~ U(-1, 1) at ``--emb-res-scale`` (from the U-Net on the raw embedding) and a random initial noise
``--noise-bound`` * U(-1, 1) (noise steering) move the executed chunk's end-effector targets, and the
lambda that ``steering.res_scale=match_action_residual`` would pick.
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
    p.add_argument("--lambdas", default="", help="comma-separated ZPRL lambdas whose reach to print (VIB bases)")
    p.add_argument("--alpha-res", type=float, default=0.1, help="the action residual's alpha_res to compare with")
    p.add_argument("--emb-res-scale", type=float, default=0.025, help="the embedding residual's res_scale")
    p.add_argument("--noise-bound", type=float, default=1.5, help="noise steering's bound on the initial noise")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("| checkpoint | observations | spread between two noises (mm) | noise vs zero noise (mm) | dv/dx at sigma=1 |")
    print("|---|---|---|---|---|")
    for ckpt in args.checkpoints:
        r = noise_spread(ckpt, args.n)
        print(f"| {ckpt} | {r['n']} | {r['spread_mm']:.1f} | {r['vs_zero_noise_mm']:.1f} | {r['slope_at_sigma1']:.3f} |")
    if args.lambdas:
        from zprl.policy.calibration import steering_levers
        from zprl.policy.checkpoint import load_base_policy

        lambdas = [float(x) for x in args.lambdas.split(",")]
        print("\nReach: mean distance (mm) the executed chunk's end-effector targets move, same observations "
              "and flow noise\n")
        print("| checkpoint | flow noise | action residual (alpha " + f"{args.alpha_res:g})"
              + "".join(f" | zprl lambda {lam:g}" for lam in lambdas)
              + f" | embedding residual ({args.emb_res_scale:g}) | noise steering (bound {args.noise_bound:g})"
              + " | matching lambda |")
        print("|---|---|---|" + "---|" * len(lambdas) + "---|---|---|")
        for ckpt in args.checkpoints:
            policy, cfg, _ = load_base_policy(ckpt)
            r = steering_levers(policy, cfg, lambdas, args.alpha_res, samples=args.n,
                                emb_res_scale=args.emb_res_scale, noise_bound=args.noise_bound)
            cells = "".join(f" | {1000 * r['zprl_m'][lam]:.1f}" for lam in lambdas)
            print(f"| {ckpt} | {1000 * r['flow_noise_m']:.1f} | {1000 * r['action_residual_m']:.1f}{cells} | "
                  f"{1000 * r['embedding_residual_m']:.1f} | {1000 * r['noise_m']:.1f} | "
                  f"{r['matching_res_scale']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
