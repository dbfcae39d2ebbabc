import os

# Headless rendering and quiet, deterministic CPU runs for every test.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

import zprl.common.config  # noqa: E402,F401  (OmegaConf resolvers used by the configs)
# diffusers imports torch._dynamo, which loads triton; loading triton's LLVM after Mesa's (robosuite's
# EGL rendering in this process, e.g. test_env's runner test) segfaults, the other order is fine.
# The entry points always load the policy first; tests may run in any order or subset.
import zprl.policy.flow_vib  # noqa: E402,F401

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


def load_script(relpath: str):
    """The module of a script outside the package (``scripts/...``, ``benchmarks/...``), imported by path and
    registered in ``sys.modules`` under its file name (dataclasses look their module up there)."""
    import importlib.util
    import sys

    name = os.path.splitext(os.path.basename(relpath))[0]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, relpath))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


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


def small_offline_sizes(num_epochs: int, n_test_vis: int = 0) -> dict:
    """Debug-sized offline steps without training.debug (which pins num_epochs to 2): 3 train and 3 val
    steps per epoch, a checkpoint, validation and a 1-episode rollout after every epoch."""
    return {"training.debug": "false", "training.num_epochs": num_epochs, "training.max_train_steps": 3,
            "training.max_val_steps": 3, "training.rollout_every": 1, "training.checkpoint_every": 1,
            "training.val_every": 1, "training.lr_warmup_steps": 1, "dataloader.batch_size": 16,
            "dataloader.num_workers": 0, "val_dataloader.batch_size": 16, "val_dataloader.num_workers": 0,
            "task.env_runner.n_train": 0, "task.env_runner.n_train_vis": 0, "task.env_runner.n_test": 1,
            "task.env_runner.n_test_vis": n_test_vis}


def run_offline(dataset_path, output_dir, **extra):
    from omegaconf import OmegaConf

    from zprl.workspace.offline import OfflineWorkspace

    cfg = compose_config(OFFLINE_CONFIG, tiny_offline_overrides(dataset_path, **extra))
    OmegaConf.resolve(cfg)
    workspace = OfflineWorkspace(cfg, output_dir=str(output_dir))
    return workspace, workspace.run()


def tiny_online_overrides(base_ckpt, **extra):
    """A tiny online run on CPU: debug loop (2 envs, 64 agent steps), CPU-sized SAC."""
    overrides = {"online_task": "lift_lowdim_abs", "online_task.base_ckpt": base_ckpt, "training.debug": "true",
                 "training.device": "cpu", "logging.mode": "disabled", "online_task.render_size": "[64,64]",
                 "sac.actor_hidden": "[32,32]", "sac.critic_hidden": "[32,32]",
                 # CPU-sized SAC, as the demo runs it (the config default is the authors' 10 critics x UTD 5)
                 "sac.n_critics": 2, "training.utd": 1}
    overrides.update({k: str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in overrides.items()]


def run_online(base_ckpt, output_dir, **extra):
    """(workspace, last evaluation) of a tiny online run in this process."""
    from omegaconf import OmegaConf

    from zprl.workspace.online import OnlineWorkspace

    cfg = compose_config(ONLINE_CONFIG, tiny_online_overrides(base_ckpt, **extra))
    OmegaConf.resolve(cfg)
    workspace = OnlineWorkspace(cfg, output_dir=str(output_dir))
    return workspace, workspace.run()


def train_cli(config_name, overrides, run_dir, wait=True, **popen):
    """``python train.py`` in a child process (as a user runs it), one torch thread, W&B off unless
    the overrides say otherwise. wait=False returns the Popen (stdout/stderr in run_dir's parent)."""
    import subprocess
    import sys

    from zprl.data.paths import repo_root

    cmd = [sys.executable, os.path.join(repo_root(), "train.py"), f"--config-name={config_name}", *overrides,
           "training.num_threads=1", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": repo_root()}
    if not wait:
        log = open(f"{run_dir}.out", "ab")
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, **popen)


def run_records(run_dir, step_key=None):
    """The run's logs.json.txt records without the wall/CPU clocks (which no two runs share)."""
    from zprl.common.logging import read_json_lines

    return [{k: v for k, v in r.items() if not k.startswith("time/")}
            for r in read_json_lines(os.path.join(str(run_dir), "logs.json.txt"))]


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
