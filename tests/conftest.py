import os

# Headless rendering and quiet, deterministic CPU runs for every test.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

import zprl.common.config  # noqa: E402,F401  (OmegaConf resolvers used by the configs)

# The test networks are tiny: per-op overhead dominates and a second intra-op thread only adds
# contention (env worker processes share the same cores).
torch.set_num_threads(1)


@pytest.fixture
def repo_root():
    from zprl.data.paths import repo_root as root

    return root()


# ---- shared real artefacts, made once per test session ------------------------------------------
# A tiny real pipeline: scripted lift demos -> absolute actions -> a few offline training steps.
# Every test that needs a dataset or a base checkpoint shares these instead of making its own.

OFFLINE_CONFIG = "train_flow_match_vib_unet_image_workspace"
ONLINE_CONFIG = "train_online_vib_robomimic_workspace"


def compose_config(name, overrides=()):
    from hydra import compose, initialize_config_dir

    from zprl.common.config import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name=name, overrides=list(overrides))


def tiny_offline_overrides(dataset_path, **extra):
    """A minutes-long offline run on CPU: debug loop, tiny U-Net, cheap rollouts."""
    overrides = {
        "task": "lift_lowdim_abs", "task.dataset_path": dataset_path, "training.debug": "true",
        "training.device": "cpu", "logging.mode": "disabled", "policy.down_dims": "[16,32]",
        "policy.diffusion_step_embed_dim": 16, "task.obs_encoder.hidden_dims": "[32]",
        "task.obs_encoder.output_dim": 32, "task.env_runner.max_steps": 24, "task.env_runner.render_size": "[64,64]",
        "task.dataset.val_ratio": 0.3,
    }
    overrides.update({k: str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in overrides.items()]


def run_offline(dataset_path, output_dir, **extra):
    from omegaconf import OmegaConf

    from zprl.workspace.offline import OfflineWorkspace

    cfg = compose_config(OFFLINE_CONFIG, tiny_offline_overrides(dataset_path, **extra))
    OmegaConf.resolve(cfg)
    workspace = OfflineWorkspace(cfg, output_dir=str(output_dir))
    return workspace, workspace.run()


@pytest.fixture(scope="session")
def lift_lowdim_abs_file(tmp_path_factory):
    """3 scripted expert lift demos (low-dim), converted to absolute actions."""
    from zprl.data.convert_abs import convert_file
    from zprl.data.generate_demos import generate_demos

    d = tmp_path_factory.mktemp("lift_data")
    generate_demos("lift", 3, quality="expert", obs="low_dim", seed=0, output=str(d / "delta.hdf5"),
                   show_progress=False)
    convert_file(str(d / "delta.hdf5"), str(d / "abs.hdf5"), check=False, show_progress=False)
    return str(d / "abs.hdf5")


@pytest.fixture(scope="session")
def tiny_base_run(lift_lowdim_abs_file, tmp_path_factory):
    """Output dir of a tiny offline run (2 epochs x 3 steps) on the lift file; has checkpoints/latest.ckpt."""
    out = tmp_path_factory.mktemp("offline_run")
    run_offline(lift_lowdim_abs_file, out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_base_ckpt(tiny_base_run):
    return os.path.join(tiny_base_run, "checkpoints", "latest.ckpt")
