"""Objects the benchmarks time, built from the project's own Hydra configs (no hand-made twins)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # scripts run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, REPO)

import zprl.common.config  # noqa: E402,F401  (registers the ${repo_root:} resolver)

OFFLINE_CONFIG = "train_flow_match_vib_unet_image_workspace"
ONLINE_CONFIG = "train_online_vib_robomimic_workspace"
# U-Net widths for --small runs; the paper's are the config default [128, 256, 512].
SMALL_UNET = "[32,64,128]"
DATA_DIR = os.environ.get("ZPRL_BENCH_DATA", "/tmp/zprl_bench")


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=os.path.join(REPO, "config"), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def random_normalizer(shape_meta, generator: torch.Generator | None = None):
    """A normalizer fitted on random data of the right shapes (timing does not depend on the values)."""
    from zprl.model.normalizer import LinearNormalizer

    data = {"action": torch.rand(512, int(shape_meta["action"]["shape"][0]), generator=generator) * 2 - 1}
    for key, spec in shape_meta["obs"].items():
        if spec.get("type", "low_dim") == "low_dim":
            data[key] = torch.randn(512, *spec["shape"], generator=generator)
    norm = LinearNormalizer().fit(data, mode="limits")
    for key, spec in shape_meta["obs"].items():
        if spec.get("type") == "rgb":
            norm.set_identity(key)
    return norm


def build_policy(task: str, small: bool = False, overrides: tuple[str, ...] = (), device="cpu"):
    """The offline policy exactly as train.py instantiates it for ``task`` -> (policy, cfg)."""
    import hydra
    from omegaconf import OmegaConf

    extra = [f"policy.down_dims={SMALL_UNET}"] if small else []
    cfg = compose(OFFLINE_CONFIG, [f"task={task}", *extra, *overrides])
    policy = hydra.utils.instantiate(cfg.policy)
    shape_meta = OmegaConf.to_container(cfg.shape_meta, resolve=True)
    policy.set_normalizer(random_normalizer(shape_meta, torch.Generator().manual_seed(0)))
    return policy.to(device), cfg


def random_obs(shape_meta, batch: int, n_obs_steps: int, device, generator=None) -> dict:
    """An observation batch (B, To, ...) as the env wrappers hand it to the policy."""
    obs = {}
    for key, spec in shape_meta["obs"].items():
        shape = (batch, n_obs_steps, *spec["shape"])
        if spec.get("type") == "rgb":
            obs[key] = torch.rand(shape, generator=generator)
        else:
            obs[key] = torch.randn(shape, generator=generator)
    return {k: v.to(device) for k, v in obs.items()}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def ensure_lowdim_dataset() -> str:
    """A low-dim lift file with absolute actions: data_local's if present (copied, never modified),
    else 20 generated scripted demos."""
    out = os.path.join(DATA_DIR, "lift_lowdim_abs.hdf5")
    if os.path.exists(out):
        return out
    os.makedirs(DATA_DIR, exist_ok=True)
    local = os.path.join(REPO, "data_local/robomimicv030/lift/mh/low_dim_v141_subset_abs.hdf5")
    if os.path.exists(local):
        import shutil

        shutil.copyfile(local, out + ".tmp")
        os.replace(out + ".tmp", out)
        return out
    return _generate("low_dim", 20, out)


def ensure_image_dataset(num_demos: int = 12) -> str:
    """A small lift file with two 84x84 cameras and absolute actions, generated once."""
    out = os.path.join(DATA_DIR, f"lift_image{num_demos}_abs.hdf5")
    return out if os.path.exists(out) else _generate("image", num_demos, out)


def _generate(obs: str, num_demos: int, out: str) -> str:
    os.makedirs(DATA_DIR, exist_ok=True)
    delta = out.replace("_abs.hdf5", "_delta.hdf5")
    py = sys.executable
    print(f"# generating {out} ({num_demos} scripted lift demos, {obs})", flush=True)
    subprocess.run([py, "-m", "zprl.data.generate_demos", "--task", "lift", "--num-demos", str(num_demos),
                    "--quality", "expert", "--obs", obs, "--seed", "1", "--output", delta, "--overwrite",
                    "--no-progress"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    subprocess.run([py, "-m", "zprl.data.convert_abs", "--input", delta, "--output", out, "--overwrite"],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out
