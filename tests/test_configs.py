"""Every shipped config composes with Hydra, and what it names can be built."""

import glob
import os

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from zprl.common.config import CONFIG_DIR

TASKS = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(CONFIG_DIR, "task", "*.yaml")))


def compose_cfg(name, overrides=()):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name=name, overrides=list(overrides))


def test_all_tasks_are_shipped():
    expected = {f"{t}_{o}_abs" for t in ("lift", "can", "square", "transport") for o in ("image", "lowdim")}
    assert set(TASKS) == expected


@pytest.mark.parametrize("task", TASKS)
def test_offline_config_composes_and_instantiates(task):
    cfg = compose_cfg("train_flow_match_vib_unet_image_workspace", [f"task={task}"])
    OmegaConf.resolve(cfg)
    assert cfg.task_name == cfg.task.name
    assert cfg.task.dataset_path.endswith(
        f"mh/{'image' if 'image' in task else 'low_dim'}_v141_subset_abs.hdf5")
    n_arms = 2 if task.startswith("transport") else 1
    assert cfg.shape_meta.action.shape == [10 * n_arms]
    # The README's overrides exist and are used by the policy.
    cfg2 = compose_cfg("train_flow_match_vib_unet_image_workspace",
                       [f"task={task}", "policy.vib_latent_dim=8", "policy.vib_beta=0.001", "policy.vib_recon=0.1",
                        "training.seed=3", "task.dataset.seed=3", "exp_name=x", "training.device=cpu",
                        "policy.down_dims=[16,32]"])
    policy = hydra.utils.instantiate(cfg2.policy)
    assert policy.vib_latent_dim == 8
    n_params = sum(p.numel() for p in policy.parameters())
    assert n_params > 0


def test_unknown_override_fails_at_composition():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_cfg("train_flow_match_vib_unet_image_workspace", ["training.no_such_key=1"])
