"""Build robosuite 1.4.1 environments the way robomimic does (env_meta -> EnvRobosuite).

This module is the single place where robomimic is made importable here: robomimic 0.3.0 does a
bare ``import mujoco_py`` in ``robomimic/envs/env_robosuite.py`` although robosuite 1.4 runs on
the official ``mujoco`` bindings. We register a small stand-in module before robomimic loads; it
only provides the exception type robomimic lists in ``rollout_exceptions``.
"""

from __future__ import annotations

import copy
import os
import sys
import types

# Headless rendering: EGL unless the user chose otherwise (osmesa also works with libosmesa6).
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

ENV_NAMES = {
    "lift": "Lift",
    "can": "PickPlaceCan",
    "square": "NutAssemblySquare",
    "transport": "TwoArmTransport",
}
CAMERAS = {
    "lift": ["agentview", "robot0_eye_in_hand"],
    "can": ["agentview", "robot0_eye_in_hand"],
    "square": ["agentview", "robot0_eye_in_hand"],
    "transport": ["shouldercamera0", "shouldercamera1", "robot0_eye_in_hand", "robot1_eye_in_hand"],
}
LOW_DIM_KEYS = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"]


def ensure_robomimic_importable() -> None:
    """Register the ``mujoco_py`` stand-in (idempotent; a real mujoco_py is left alone)."""
    if "mujoco_py" in sys.modules:
        return
    try:  # a real installation wins
        import mujoco_py  # noqa: F401

        return
    except Exception:
        pass
    stub = types.ModuleType("mujoco_py")
    stub.__doc__ = "zprl stand-in: robosuite>=1.4 uses the mujoco bindings, not mujoco_py."
    builder = types.ModuleType("mujoco_py.builder")

    class MujocoException(Exception):
        pass

    builder.MujocoException = MujocoException
    stub.builder = builder
    sys.modules["mujoco_py"] = stub
    sys.modules["mujoco_py.builder"] = builder


ensure_robomimic_importable()


def task_from_env_name(env_name: str) -> str:
    for task, name in ENV_NAMES.items():
        if name == env_name:
            return task
    raise ValueError(f"unknown robosuite env {env_name!r}; known: {', '.join(ENV_NAMES.values())}")


def make_env_meta(task: str, obs: str = "low_dim", image_size: int = 84, abs_action: bool = False,
                  hard_reset: bool = False, camera_names: list[str] | None = None) -> dict:
    """robomimic env_meta for a task: OSC_POSE at 20 Hz, Panda arm(s), robomimic's flags.

    ``hard_reset=False`` keeps the MuJoCo model and GL context across resets (ms instead of ~1 s
    per reset and no memory growth); the simulated task is the same.
    """
    import robosuite

    if task not in ENV_NAMES:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(ENV_NAMES)}")
    if obs not in ("low_dim", "image"):
        raise ValueError(f"unknown observation type {obs!r}; choose low_dim or image")
    controller = robosuite.load_controller_config(default_controller="OSC_POSE")
    controller["control_delta"] = not abs_action
    use_images = obs == "image"
    cams = list(camera_names or CAMERAS[task]) if use_images else []
    kwargs = dict(
        has_renderer=False,
        has_offscreen_renderer=use_images,
        ignore_done=True,
        use_object_obs=True,
        use_camera_obs=use_images,
        control_freq=20,
        controller_configs=controller,
        robots=["Panda"],
        camera_depths=False,
        camera_heights=image_size,
        camera_widths=image_size,
        camera_names=cams,
        reward_shaping=False,
        hard_reset=hard_reset,
    )
    if task == "transport":
        kwargs["robots"] = ["Panda", "Panda"]
        kwargs["env_configuration"] = "single-arm-opposed"
    return {"env_name": ENV_NAMES[task], "type": 1, "env_kwargs": kwargs, "env_version": robosuite.__version__}


def register_obs_modalities(obs_keys) -> None:
    """Tell robomimic which keys are images (it only returns rgb obs for registered keys)."""
    import robomimic.utils.obs_utils as ObsUtils

    keys = list(obs_keys)
    rgb = [k for k in keys if k.endswith("_image")]
    low = [k for k in keys if k not in rgb]
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": low, "rgb": rgb}})


def prepare_env_meta(env_meta: dict, obs_keys=None, abs_action: bool | None = None,
                     hard_reset: bool | None = None) -> tuple[dict, list[str], bool]:
    """(env_meta edited for these overrides, the observation keys, whether images are wanted).

    obs_keys: the observation keys wanted (default: low-dim keys plus the meta's cameras).
    abs_action / hard_reset: override what the meta says (datasets store delta-action metas).
    Cameras become exactly the ``*_image`` keys asked for.
    """
    meta = copy.deepcopy(env_meta)
    kw = meta["env_kwargs"]
    if abs_action is not None:
        kw["controller_configs"]["control_delta"] = not abs_action
    if hard_reset is not None:
        kw["hard_reset"] = hard_reset
    cams = list(kw.get("camera_names") or [])
    if isinstance(kw.get("camera_names"), str):
        cams = [kw["camera_names"]]
    if obs_keys is None:
        obs_keys = LOW_DIM_KEYS + ([f"{c}_image" for c in cams] if kw.get("use_camera_obs") else [])
    obs_keys = list(obs_keys)
    wants_images = any(k.endswith("_image") for k in obs_keys)
    if wants_images:
        kw["camera_names"] = [k[: -len("_image")] for k in obs_keys if k.endswith("_image")]
    return meta, obs_keys, wants_images


def create_env(env_meta: dict, obs_keys=None, render_offscreen: bool | None = None,
               abs_action: bool | None = None, hard_reset: bool | None = None,
               postprocess_visual_obs: bool = False):
    """robomimic ``EnvRobosuite`` from env_meta (the data tools' env; rollouts use
    ``zprl.env.robosuite_env.RobosuiteEnv``, which behaves the same without importing torch).

    obs_keys, abs_action, hard_reset: see ``prepare_env_meta``.
    postprocess_visual_obs=False keeps images uint8 HWC, as datasets store them.
    """
    import robomimic.utils.env_utils as EnvUtils

    meta, obs_keys, wants_images = prepare_env_meta(env_meta, obs_keys, abs_action, hard_reset)
    register_obs_modalities(obs_keys)
    from zprl.env.render_patch import apply_render_patches

    apply_render_patches()  # our robosuite 1.4.1 rendering fixes (patches/README.md)
    env = EnvUtils.create_env_from_metadata(
        env_meta=meta,
        render=False,
        render_offscreen=wants_images if render_offscreen is None else render_offscreen,
        use_image_obs=wants_images,
    )
    env.postprocess_visual_obs = postprocess_visual_obs
    return env
