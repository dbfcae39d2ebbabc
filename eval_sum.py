"""Evaluate a steered (composed) policy from an online checkpoint on held-out seeds.

    python eval_sum.py -c path/to/checkpoints/step_600000.ckpt -o path/to/eval_logs/ -d cuda:0 [-n 100]

Deterministic: z = mu and dz = tanh(mean). Writes eval_log.json and media/test_<seed>.mp4 in the
same format as eval_base.py, on the same seeds, so the two compare directly.
"""

import argparse
import sys

from zprl.common.errors import run_cli


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--checkpoint", required=True, help="online checkpoint (step_XXXXXX.ckpt or latest.ckpt)")
    p.add_argument("-o", "--output_dir", required=True, help="where eval_log.json and media/ go")
    p.add_argument("-d", "--device", default="cuda:0")
    p.add_argument("-n", "--n_episodes", type=int, default=100, help="test episodes, seeds from 100000")
    p.add_argument("--n_vis", type=int, default=10, help="episodes to record as mp4")
    p.add_argument("--n_envs", type=int, default=None, help="parallel env processes (default: CPU count)")
    p.add_argument("--base_ckpt", default=None, help="the base checkpoint, if it moved since training")
    args = p.parse_args(argv)

    from zprl.policy.steered import load_steered_policy
    from zprl.devices import resolve_device
    from zprl.workspace.evaluate import check_output_dir, evaluate

    check_output_dir(args.output_dir)
    resolve_device(args.device, "-d")
    policy, base_cfg, state = load_steered_policy(args.checkpoint, device=args.device, base_ckpt=args.base_ckpt)
    log = evaluate(policy, base_cfg.task.env_runner, state["env_meta"], args.output_dir, args.n_episodes,
                   n_vis=args.n_vis, n_action_steps=state["n_action_steps"], n_envs=args.n_envs,
                   extra={"checkpoint": args.checkpoint, "base_ckpt": state["base_ckpt"],
                          "steering": state["steering"], "agent_steps": state["counters"]["agent_steps"],
                          "env_steps": state["counters"]["agent_steps"] * state["n_action_steps"],
                          "n_action_steps": state["n_action_steps"]})
    print(f"mean score {log['mean_score']:.3f} over {log['n_episodes']} episodes -> {args.output_dir}/eval_log.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
