"""Time per action chunk: rectified-flow Euler sampling (1, 2, 4, 10 steps) vs DDIM-10 and DDPM-100.

    python benchmarks/bench_inference.py [--device cuda:0] [--batches 1,20] [--small]

All samplers drive the SAME U-Net (the policy's, built from the task config) on the same noise and
condition. DDIM/DDPM come from diffusers and treat the network output as an epsilon prediction;
the output is meaningless for a velocity-trained net, but only the cost is measured here: one
U-Net call per step plus the scheduler's arithmetic. The observation encoder (ResNet18 per camera
or the low-dim MLP, then the VIB encoder and decoder) runs once per chunk whatever the sampler,
so it has its own column and the sampler columns exclude it.
"""

from __future__ import annotations

import torch
from builders import build_policy, random_obs
from omegaconf import OmegaConf
from timing import base_parser, interleaved, markdown_table, median, print_headline, setup, spread, time_calls

FLOW_STEPS = (1, 2, 4, 10)
CONFIGS = {"image": "lift_image_abs", "low-dim": "lift_lowdim_abs"}


def diffusers_sampler(kind: str, steps: int, num_train_timesteps: int):
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
    # Diffusion Policy's schedule; the step count, not the schedule, sets the cost.
    sched = cls(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                prediction_type="epsilon", clip_sample=True)
    sched.set_timesteps(steps)

    def sample(model, noise, cond):
        x = noise
        for t in sched.timesteps:
            x = sched.step(model(x, t, cond), t, x).prev_sample
        return x

    return sample


def make_variants(policy, obs, device, calls: dict[str, int]):
    """name -> callable returning seconds per action chunk (one repetition)."""
    with torch.inference_mode():
        cond = policy.decode_latent(policy.vib_posterior(policy.encode_obs(obs))[0])
    noise = torch.randn(cond.shape[0], policy.horizon, policy.action_dim, device=device)
    model = policy.model

    def encoder():
        with torch.inference_mode():
            emb = policy.encode_obs(obs)
            return policy.decode_latent(policy.vib_posterior(emb)[0])

    samplers = {f"flow-{k}": (lambda k=k: policy.flow.sample(model, noise, cond, num_inference_steps=k))
                for k in FLOW_STEPS}
    ntt = policy.flow.num_train_timesteps  # the flow scheduler's training grid
    ddim, ddpm = diffusers_sampler("ddim", 10, ntt), diffusers_sampler("ddpm", 100, ntt)
    samplers["DDIM-10"] = lambda: ddim(model, noise, cond)
    samplers["DDPM-100"] = lambda: ddpm(model, noise, cond)

    def timed(fn, name):
        def run():
            with torch.inference_mode():
                return time_calls(fn, calls[name], device)
        return run

    variants = {"encoder": timed(encoder, "encoder")}
    variants.update({name: timed(fn, name) for name, fn in samplers.items()})
    return variants


def calibrate(variants, target_s: float) -> dict[str, int]:
    """Calls per repetition so each measurement lasts about ``target_s`` (after one warm call)."""
    calls = {}
    for name, run in variants.items():
        run()
        calls[name] = max(1, min(200, int(target_s / max(run(), 1e-6))))
    return calls


def main():
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,20", help="comma-separated batch sizes (1 = one env, 20 = online envs)")
    p.add_argument("--small", action="store_true", help=f"small U-Net instead of the paper's [128,256,512]")
    p.add_argument("--target-seconds", type=float, default=0.4, help="length of one measurement")
    args = p.parse_args()
    device = setup(args)
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]
    configs = {"low-dim": CONFIGS["low-dim"]} if args.quick else CONFIGS
    reps = 1 if args.quick else args.reps
    small = args.small or args.quick
    names = ["encoder"] + [f"flow-{k}" for k in FLOW_STEPS] + ["DDIM-10", "DDPM-100"]

    ms_rows, ratio_rows, headline = [], [], None
    for label, task in configs.items():
        policy, cfg = build_policy(task, small=small, device=device)
        policy.eval()
        shape_meta = OmegaConf.to_container(cfg.shape_meta, resolve=True)
        for batch in batches:
            obs = random_obs(shape_meta, batch, policy.n_obs_steps, device, torch.Generator().manual_seed(batch))
            calls = {n: 1 for n in names}
            variants = make_variants(policy, obs, device, calls)
            calls.update(calibrate(variants, 0.05 if args.quick else args.target_seconds))
            res = interleaved(variants, reps, warmup=False)
            med = {n: median(v) for n, v in res.items()}
            ms_rows.append([label, batch, *(f"{1e3 * med[n]:.2f} {spread(res[n])}" for n in names)])
            enc, ddim = med["encoder"], med["DDIM-10"]
            ratio_rows.append([label, batch, *(f"{med[n] / ddim:.3f}" for n in names[1:]),
                               f"{(enc + med['flow-2']) / (enc + ddim):.3f}"])
            if headline is None or (label == "image" and batch == batches[0]):
                headline = med["flow-2"] / ddim
        print(f"# {label} ({task}): U-Net down_dims={list(cfg.policy.down_dims)}, horizon={policy.horizon}, "
              f"action_dim={policy.action_dim}, obs_emb={policy.obs_dim}, reps={reps}", flush=True)

    print("\nms per action chunk (median of interleaved repetitions, ± half-range); sampler columns exclude the encoder")
    print(markdown_table(["obs", "batch", "encoder+VIB"] + names[1:], ms_rows))
    print("\nsampler time / DDIM-10 sampler time; last column: whole chunk (encoder + flow-2) / (encoder + DDIM-10)")
    print(markdown_table(["obs", "batch"] + names[1:] + ["chunk flow-2 / chunk DDIM-10"], ratio_rows))
    print_headline("flow2_over_ddim10", headline)


if __name__ == "__main__":
    main()
