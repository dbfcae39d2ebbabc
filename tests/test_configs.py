"""Every shipped config composes with Hydra, and what it names can be built."""

import glob
import os

import hydra
import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from zprl.common.config import CONFIG_DIR

TASKS = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(CONFIG_DIR, "task", "*.yaml")))


compose_cfg = compose_config


def test_all_tasks_are_shipped():
    expected = {f"{t}_{o}_abs" for t in ("lift", "can", "square", "transport") for o in ("image", "lowdim")}
    expected.add("tool_hang_image_abs")  # robomimic has tool_hang as proficient-human image data only
    assert set(TASKS) == expected
    online = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(CONFIG_DIR, "online_task", "*.yaml"))}
    assert online == expected


@pytest.mark.parametrize("task", TASKS)
def test_offline_config_composes_and_instantiates(task):
    cfg = compose_cfg("train_flow_match_vib_unet_image_workspace", [f"task={task}"])
    OmegaConf.resolve(cfg)
    assert cfg.task_name == cfg.task.name
    if task.startswith("tool_hang"):
        assert cfg.task.dataset_path.endswith("data_local/robomimicv030/tool_hang/ph/image_v141_abs.hdf5")
    else:
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


# -- the authors' defaults, per task (../shared/reference/method.md, "(cfg)" values) ------------------
# task: (n_action_steps, num_inference_steps, vib_latent_dim, vib_beta, max_steps, crop)
OFFLINE_DEFAULTS = {
    "lift": (4, 2, 16, 2e-4, 400, 76),
    "can": (4, 2, 16, 2e-4, 500, 76),
    "square": (4, 2, 16, 2e-4, 400, 76),
    "transport": (5, 2, 32, 1e-4, 700, 76),
    "tool_hang": (8, 20, 16, 2e-4, 700, 216),
}
# task: (res_scale, buffer_size, warmup_agent_steps); lift takes can/square's lambda (nearest single-arm task)
ONLINE_DEFAULTS = {
    "lift": (0.2, 250_000, 2000),
    "can": (0.2, 250_000, 2000),
    "square": (0.2, 250_000, 2000),
    "transport": (0.1, 500_000, 4000),
    "tool_hang": (0.1, 500_000, 4000),
}


def _task_of(name):
    return name.rsplit("_", 2)[0]  # "tool_hang_image_abs" -> "tool_hang"


@pytest.mark.parametrize("task", TASKS)
def test_offline_defaults_are_the_authors_per_task(task):
    cfg = compose_cfg("train_flow_match_vib_unet_image_workspace", [f"task={task}"])
    OmegaConf.resolve(cfg)
    n_act, n_inf, dz, beta, max_steps, crop = OFFLINE_DEFAULTS[_task_of(task)]
    assert (cfg.horizon, cfg.n_obs_steps, cfg.n_action_steps) == (16, 1, n_act)
    assert cfg.policy.n_action_steps == cfg.task.dataset.n_action_steps == cfg.task.env_runner.n_action_steps == n_act
    assert cfg.policy.num_inference_steps == n_inf
    assert (cfg.policy.vib_latent_dim, cfg.policy.vib_beta, cfg.policy.vib_recon) == (dz, pytest.approx(beta), 0.01)
    assert (cfg.ema.power, cfg.ema.max_value) == (0.8, 0.9999)
    assert cfg.task.env_runner.max_steps == max_steps
    assert (cfg.task.env_runner.n_test, cfg.task.env_runner.test_start_seed) == (50, 100000)
    if "image" in task:
        assert cfg.task.obs_encoder.imagenet_norm is True
        assert list(cfg.task.obs_encoder.crop_shape) == [crop, crop]


def test_readme_overrides_win_over_per_task_defaults():
    cfg = compose_cfg("train_flow_match_vib_unet_image_workspace",
                      ["task=transport_image_abs", "policy.vib_latent_dim=16", "policy.vib_beta=0.0002",
                       "n_action_steps=3", "policy.num_inference_steps=10"])
    OmegaConf.resolve(cfg)
    assert (cfg.policy.vib_latent_dim, cfg.policy.vib_beta) == (16, 0.0002)
    assert cfg.policy.n_action_steps == cfg.task.dataset.n_action_steps == cfg.task.env_runner.n_action_steps == 3
    assert cfg.policy.num_inference_steps == 10
    cfg = compose_cfg("train_flow_match_vib_unet_image_workspace",
                      ["task=tool_hang_image_abs", "policy.num_inference_steps=4"])
    assert cfg.policy.num_inference_steps == 4


@pytest.mark.parametrize("task", TASKS)
def test_online_defaults_are_the_authors_per_task(task):
    cfg = compose_cfg("train_online_vib_robomimic_workspace", [f"online_task={task}", "online_task.base_ckpt=x.ckpt"])
    OmegaConf.resolve(cfg)
    res_scale, buffer, warmup = ONLINE_DEFAULTS[_task_of(task)]
    o, t, s = cfg.online_task, cfg.training, cfg.sac
    assert (s.n_critics, s.n_target_min) == (10, 2)
    assert (t.utd, t.training_freq, t.batch_size) == (5, 1000, 256)
    assert (t.total_agent_steps, t.eval_every, t.checkpoint_every) == (250_000, 10_000, 100_000)
    assert (t.buffer_size, t.warmup_agent_steps) == (o.buffer_size, o.warmup_agent_steps) == (buffer, warmup)
    assert o.res_scale == cfg.steering.res_scale == res_scale
    assert (o.n_envs, o.n_eval_envs, o.n_eval_episodes, o.eval_start_seed) == (20, 25, 50, 100000)
    assert o.n_action_steps is None  # as the base policy was trained (its task default: transport 5, tool_hang 8)
    assert o.max_steps == OFFLINE_DEFAULTS[_task_of(task)][4]


def test_tool_hang_image_policy_builds_with_the_authors_shapes():
    import torch

    from zprl.model.normalizer import LinearNormalizer

    cfg = compose_cfg("train_flow_match_vib_unet_image_workspace",
                      ["task=tool_hang_image_abs", "policy.down_dims=[16,32]", "policy.diffusion_step_embed_dim=16"])
    torch.manual_seed(0)
    policy = hydra.utils.instantiate(cfg.policy).eval()
    enc = policy.obs_encoder
    assert enc.rgb_keys == ["robot0_eye_in_hand_image", "sideview_image"]
    assert enc.low_dim_keys == ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
    assert enc.crop_hw == {k: (216, 216) for k in enc.rgb_keys} and enc.imagenet_norm
    assert policy.obs_dim == 2 * 256 + 3 + 4 + 2
    assert (policy.horizon, policy.n_action_steps, policy.action_dim) == (16, 8, 10)
    assert policy.flow.num_inference_steps == 20
    assert (policy.vib_latent_dim, policy.vib_beta) == (16, 2e-4)
    low = {k: torch.randn(50, v["shape"][0]) for k, v in cfg.task.shape_meta.obs.items() if v.type == "low_dim"}
    normalizer = LinearNormalizer()
    normalizer.fit({"action": torch.randn(50, 10), **low})
    policy.set_normalizer(normalizer)
    obs = {k: (torch.rand(2, 1, *v["shape"]) if v.type == "rgb" else torch.randn(2, 1, *v["shape"]))
           for k, v in cfg.task.shape_meta.obs.items()}
    assert obs["sideview_image"].shape == (2, 1, 3, 240, 240)
    out = policy.predict_action(obs)
    assert out["action"].shape == (2, 8, 10) and out["action_pred"].shape == (2, 16, 10)
    assert out["z"].shape == (2, 16) and out["cond"].shape == (2, policy.obs_dim)
    assert torch.isfinite(out["action_pred"]).all()


@pytest.mark.slow
def test_tool_hang_shape_meta_matches_robosuite_toolhang():
    """robomimic's tool_hang image files name robosuite's ToolHang with cameras sideview and
    robot0_eye_in_hand at 240x240; create_env builds it from such an env_meta, and its
    observations have the task config's keys and shapes."""
    from zprl.env.robomimic_env import make_env_meta
    from zprl.env.wrappers import RobomimicGymEnv

    cfg = compose_cfg("train_flow_match_vib_unet_image_workspace", ["task=tool_hang_image_abs"])
    shape_meta = OmegaConf.to_container(cfg.task.shape_meta, resolve=True)
    meta = make_env_meta("lift", obs="image", image_size=240, abs_action=True)  # robomimic's kwargs, then ToolHang's
    meta["env_name"] = "ToolHang"
    meta["env_kwargs"]["camera_names"] = ["sideview", "robot0_eye_in_hand"]
    env = RobomimicGymEnv(meta, shape_meta, abs_action=True, max_steps=cfg.task.env_runner.max_steps, render_size=None)
    obs, _ = env.reset(seed=0)
    assert {k: tuple(v.shape) for k, v in obs.items()} == {k: tuple(v["shape"]) for k, v in shape_meta["obs"].items()}
    assert env.n_arms == 1
    env.close()


def test_defaults_page_names_tests_that_exist():
    # docs/defaults.md says which test pins each of the authors' defaults; a renamed or deleted test
    # must not leave the page pointing at nothing
    import ast
    import re

    root = os.path.dirname(CONFIG_DIR)
    page = open(os.path.join(root, "docs", "defaults.md")).read()
    named = re.findall(r"tests/(test_\w+\.py)::(test_\w+)", page)
    assert len(named) >= 15
    for file, test in named:
        tree = ast.parse(open(os.path.join(root, "tests", file)).read())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert test in defined, f"docs/defaults.md names tests/{file}::{test}, which does not exist"
