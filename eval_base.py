"""Evaluate an offline (base) policy checkpoint on held-out seeds.

    python eval_base.py -c path/to/checkpoints/latest.ckpt -o data/eval/square/ -t 4 -d cuda:0 [-n 100]

Writes OUTPUT/eval_log.json (per-episode seed, success, length; mean score) and OUTPUT/media/test_<seed>.mp4.
"""

import argparse
import sys

import zprl.common.config  # noqa: F401
from zprl.common.errors import UserInputError, run_cli


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--checkpoint", required=True, help="offline checkpoint (.ckpt) written by train.py")
    p.add_argument("-o", "--output_dir", required=True, help="where eval_log.json and media/ go")
    p.add_argument("-t", "--n_action_steps", type=int, default=None, help="actions executed per chunk (default: as trained)")
    p.add_argument("-d", "--device", default="cuda:0")
    p.add_argument("-n", "--n_episodes", type=int, default=100, help="test episodes, seeds from 100000")
    p.add_argument("--n_vis", type=int, default=10, help="episodes to record as mp4")
    p.add_argument("--n_envs", type=int, default=None, help="parallel env processes (default: CPU count)")
    p.add_argument("--noise_scale", type=float, default=1.0,
                   help="a probe: the flow starts from noise_scale * N(0, I) (default 1, as trained; 0: all zeros)")
    args = p.parse_args(argv)
    if not args.noise_scale >= 0:
        raise UserInputError(f"--noise_scale {args.noise_scale}: must be >= 0 (1: the base as trained, 0: a zero start)")

    from zprl.common.checkpoint import weights_sha256
    from zprl.policy.checkpoint import load_base_policy
    from zprl.devices import resolve_device
    from zprl.workspace.evaluate import check_output_dir, evaluate

    check_output_dir(args.output_dir)
    resolve_device(args.device, "-d")
    policy, cfg, payload = load_base_policy(args.checkpoint, device=args.device)
    horizon_room = policy.horizon - policy.n_obs_steps + 1
    if args.n_action_steps is not None:
        if not 1 <= args.n_action_steps <= horizon_room:
            raise UserInputError(f"-t {args.n_action_steps}: must be between 1 and {horizon_room} "
                                 f"(horizon {policy.horizon}, n_obs_steps {policy.n_obs_steps})")
        policy.n_action_steps = args.n_action_steps
    policy.start_noise_scale = args.noise_scale
    log = evaluate(policy, cfg.task.env_runner, payload["state"]["env_meta"], args.output_dir, args.n_episodes,
                   n_vis=args.n_vis, extra={"checkpoint": args.checkpoint, "n_action_steps": policy.n_action_steps,
                                            "noise_scale": args.noise_scale,
                                            # the online loop's base_policy_sha256: training.base_eval_log checks it
                                            "base_policy_sha256": weights_sha256(policy.state_dict())},
                   n_action_steps=policy.n_action_steps, n_envs=args.n_envs)
    print(f"mean score {log['mean_score']:.3f} over {log['n_episodes']} episodes -> {args.output_dir}/eval_log.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
