"""The rollout envs' simulator: robosuite built from a robomimic env_meta, without robomimic.

robomimic's ``EnvRobosuite`` is what datasets were recorded with, and the data tools keep using it
(``zprl.env.robomimic_env.create_env``). Importing it also imports torch (robomimic's observation
utilities do), which makes every env worker process ~1 GB; the paper's 20 + 25 workers then need
~45 GB of host memory. ``RobosuiteEnv`` builds the same robosuite env with the same arguments and
returns the same observations (images flipped upright as uint8 HWC, ``object`` from robosuite's
``object-state``, the robots' prefixed keys), so a worker imports robosuite, MuJoCo and numpy only.
``tests/test_robosuite_env.py`` checks it against ``EnvRobosuite`` step by step.
"""

from __future__ import annotations

import numpy as np

from zprl.env.model_compile import robosuite_compiling
from zprl.env.robomimic_env import prepare_env_meta


def _render_gpu_device_id() -> int | None:
    """The EGL device robomimic would pass to robosuite (egl_probe's first working one)."""
    try:
        import egl_probe
    except ImportError:
        return None
    devices = egl_probe.get_available_devices()
    return devices[0] if devices else None


class RobosuiteEnv:
    """The part of robomimic's ``EnvRobosuite`` the rollout envs use: ``reset``, ``reset_to``,
    ``step``, ``is_success``, ``render`` and ``env`` (the robosuite env).

    Observations hold exactly ``obs_keys``. robomimic's extras (joint positions and end-effector
    velocities switched on as observables) are kept, so the simulation is the same.

    ``visual_meshes``: compile the robots' visual meshes. None (default): only if the env renders
    (image observations or ``render_offscreen``); without them a low-dim worker holds ~170 MB less
    and steps the same (``zprl.env.model_compile``, which also compiles every env's model without
    keeping its parsed XML).
    """

    def __init__(self, env_meta: dict, obs_keys, render_offscreen: bool | None = None,
                 abs_action: bool | None = None, hard_reset: bool | None = None,
                 visual_meshes: bool | None = None):
        import robosuite

        from zprl.env.render_patch import apply_render_patches

        meta, self.obs_keys, wants_images = prepare_env_meta(env_meta, obs_keys, abs_action, hard_reset)
        self.image_keys = [k for k in self.obs_keys if k.endswith("_image")]
        kwargs = dict(meta["env_kwargs"])
        kwargs.update(has_renderer=False, ignore_done=True, use_object_obs=True, use_camera_obs=wants_images,
                      camera_depths=False, has_offscreen_renderer=bool(render_offscreen) or wants_images)
        if kwargs["has_offscreen_renderer"]:
            device = _render_gpu_device_id()
            if device is not None:
                kwargs["render_gpu_device_id"] = device
        apply_render_patches()  # our robosuite 1.4.1 rendering fixes (patches/README.md)
        self.visual_meshes = kwargs["has_offscreen_renderer"] if visual_meshes is None else visual_meshes
        # MuJoCo's cache of decoded meshes only speeds up compiling the same model again: hard resets
        self._hard_reset = kwargs.get("hard_reset", True)
        self.name = meta["env_name"]
        with self._compiling():
            self.env = robosuite.make(self.name, **kwargs)
        for name in self.env.observation_names:
            if "joint_pos" in name or "eef_vel" in name:
                self.env.modify_observable(observable_name=name, attribute="active", modifier=True)

    def _compiling(self):
        """The context robosuite compiles this env's model in (at construction and hard resets)."""
        return robosuite_compiling(self.visual_meshes, keep_mesh_cache=self._hard_reset)

    def get_observation(self, raw: dict | None = None) -> dict:
        if raw is None:
            raw = self.env._get_observations(force_update=True)
        obs = {}
        for key in self.obs_keys:
            if key in self.image_keys:
                obs[key] = raw[key][::-1]  # robosuite renders upside down
            elif key == "object":
                obs[key] = np.array(raw["object-state"])
            else:
                obs[key] = np.array(raw[key])
        return obs

    def reset(self) -> dict:
        with self._compiling():  # a hard reset compiles the model again
            return self.get_observation(self.env.reset())

    def reset_to(self, state: dict) -> dict:
        """Set the flattened simulator state ``state["states"]`` (no model XML: same env)."""
        if "model" in state:
            raise ValueError("RobosuiteEnv.reset_to takes simulator states only, not model XML")
        self.env.sim.set_state_from_flattened(state["states"])
        self.env.sim.forward()
        return self.get_observation()

    def step(self, action):
        raw, reward, done, info = self.env.step(action)
        return self.get_observation(raw), reward, False, info

    def is_success(self) -> dict:
        success = self.env._check_success()
        return success if isinstance(success, dict) else {"task": success}

    def render(self, mode: str = "rgb_array", height: int | None = None, width: int | None = None,
               camera_name: str = "agentview") -> np.ndarray:
        if mode != "rgb_array":
            raise ValueError(f"RobosuiteEnv renders offscreen only (mode='rgb_array'), not {mode!r}")
        return self.env.sim.render(height=height, width=width, camera_name=camera_name)[::-1]
