"""Gymnasium view of a robomimic task, plus the wrappers rollouts stack on it.

Stack used by the runners (inside out)::

    RobomimicGymEnv -> VideoRecordingWrapper -> MultiStepWrapper

- ``RobomimicGymEnv``: one control step per ``step``; observation = the shape_meta keys (rgb float32
  CHW in [0, 1], low-dim float32); reward 1.0 on success else 0.0; ``terminated`` = success (the
  early stop), ``truncated`` = ``max_steps`` reached. robosuite's ``done``/horizon is never used.
- ``VideoRecordingWrapper`` (zprl/env/video.py): writes an mp4 of the episode when a path was set
  before ``reset``.
- ``MultiStepWrapper``: observation history and action chunks; once the episode has ended,
  further steps are no-ops, so a batch of envs can run until its slowest episode ends.
"""

from __future__ import annotations

import collections
import contextlib

import gymnasium as gym
import numpy as np

from zprl.common.errors import UserInputError

ARM_ABS_DIM = 7  # pos(3) + axis-angle(3) + gripper(1), what robosuite's OSC_POSE takes per arm
ARM_ROT6D_DIM = 10  # pos(3) + rot6d(6) + gripper(1), what the policy outputs per arm


@contextlib.contextmanager
def numpy_global_rng(rng: np.random.RandomState):
    """Run a block with numpy's global RNG set to ``rng``'s state and carry the state back.

    robosuite 1.4.1 samples object placements and robot init noise from ``np.random``; this gives
    each env its own reproducible stream without disturbing the caller's global RNG.
    """
    saved = np.random.get_state()
    np.random.set_state(rng.get_state())
    try:
        yield
    finally:
        rng.set_state(np.random.get_state())
        np.random.set_state(saved)


def rot6d_action_to_abs_np(action) -> np.ndarray:
    """(10 * n_arms,) rot6d action -> (7 * n_arms,) position + axis-angle + gripper (float64).

    ``zprl.data.rotation.rot6d_action_to_abs`` step for step in numpy (env workers do not import
    torch): Gram-Schmidt on the two stored columns, the quaternion from the best-conditioned of the
    four classic solutions, then the rotation vector (angle in [0, pi]). Degenerate columns give the
    same (arbitrary but finite) rotation as the torch map; ``tests/test_robosuite_env.py`` compares them.
    """
    arms = np.asarray(action, dtype=np.float64).reshape(-1, ARM_ROT6D_DIM)

    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)

    b1 = unit(arms[:, 3:6])
    b2 = unit(arms[:, 6:9] - (b1 * arms[:, 6:9]).sum(-1, keepdims=True) * b1)
    m = np.stack([b1, b2, np.cross(b1, b2)], axis=-1)
    d0, d1, d2 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    four_sq = np.stack([1 + d0 + d1 + d2, 1 + d0 - d1 - d2, 1 - d0 + d1 - d2, 1 - d0 - d1 + d2], -1)
    big = 0.5 * np.sqrt(np.maximum(four_sq, 0.0))
    den = np.maximum(4.0 * big, 1e-12)
    s21, s02, s10 = m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]
    a01, a02, a12 = m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1]
    cands = np.stack([
        np.stack([s21 / den[:, 0], s02 / den[:, 0], s10 / den[:, 0], big[:, 0]], -1),
        np.stack([big[:, 1], a01 / den[:, 1], a02 / den[:, 1], s21 / den[:, 1]], -1),
        np.stack([a01 / den[:, 2], big[:, 2], a12 / den[:, 2], s02 / den[:, 2]], -1),
        np.stack([a02 / den[:, 3], a12 / den[:, 3], big[:, 3], s10 / den[:, 3]], -1)], -2)
    q = cands[np.arange(len(m)), four_sq.argmax(-1)]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[:, 3:4] < 0, -q, q)
    s = np.linalg.norm(q[:, :3], axis=-1, keepdims=True)  # sin(angle / 2)
    half = np.arctan2(s, q[:, 3:4])
    small = half < 0.5 * 1e-3
    factor = np.where(small, 2.0 + half * half / 3.0, 2.0 * half / np.where(small, 1.0, s))
    return np.concatenate([arms[:, :3], q[:, :3] * factor, arms[:, 9:10]], axis=-1).reshape(-1)


def observation_space_for(shape_meta: dict) -> gym.spaces.Dict:
    spaces = {}
    for key, meta in shape_meta["obs"].items():
        shape = tuple(meta["shape"])
        if meta.get("type", "low_dim") == "rgb":
            spaces[key] = gym.spaces.Box(0.0, 1.0, shape, np.float32)
        else:
            spaces[key] = gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
    return gym.spaces.Dict(spaces)


def action_space_for(shape_meta: dict) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, (int(shape_meta["action"]["shape"][0]),), np.float32)


def _camera_sizes(env_kwargs: dict) -> tuple[int, int]:
    def largest(v):
        return max(v) if isinstance(v, (list, tuple)) else v

    return int(largest(env_kwargs.get("camera_widths", 1))), int(largest(env_kwargs.get("camera_heights", 1)))


class RobomimicGymEnv(gym.Env):
    """A robomimic task as a gymnasium env (see the module docstring for the contract).

    reset(seed=s) makes the episode's initial state a function of ``s`` only (not of earlier
    episodes); reset(options={"state": flat_sim_state}) starts from a stored simulator state.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, env_meta: dict, shape_meta: dict, abs_action: bool = True, max_steps: int | None = None,
                 render_camera: str = "agentview", render_size: tuple[int, int] | None = (256, 256)):
        from zprl.env.render_patch import apply_render_patches
        from zprl.env.robosuite_env import RobosuiteEnv

        self.shape_meta = shape_meta
        self.abs_action = abs_action
        self.max_steps = max_steps
        self.render_camera = render_camera
        self.render_size = tuple(render_size) if render_size is not None else None
        self.render_mode = "rgb_array" if render_size is not None else None
        self.observation_space = observation_space_for(shape_meta)
        self.action_space = action_space_for(shape_meta)
        self._rgb_keys = [k for k, m in shape_meta["obs"].items() if m.get("type", "low_dim") == "rgb"]

        # Start the offscreen buffer at the largest image this env will ask for (no GL rebuild later).
        w, h = _camera_sizes(env_meta["env_kwargs"])
        if self.render_size is not None:
            w, h = max(w, self.render_size[1]), max(h, self.render_size[0])
        apply_render_patches(buffer_size=(w, h))
        # robosuite draws some model properties once, at construction, from np.random (lift's cube
        # size, kept across resets since hard_reset=False): a fixed stream makes every env the same
        # task in every process and run, so evaluation seeds mean the same episodes everywhere.
        with numpy_global_rng(np.random.RandomState(0)):
            self.env = RobosuiteEnv(env_meta, obs_keys=list(shape_meta["obs"]), abs_action=abs_action,
                                    hard_reset=False, render_offscreen=True if self.render_size is not None else None)
        self.n_arms = len(self.env.env.robots)
        self.control_freq = float(self.env.env.control_freq)
        self.metadata = {**self.metadata, "render_fps": self.control_freq}
        self._check_action_dim()
        self._rng = np.random.RandomState()
        self._steps = 0

    def _check_action_dim(self) -> None:
        dim = self.action_space.shape[0]
        self._action_dims = {ARM_ABS_DIM * self.n_arms}
        if self.abs_action:
            self._action_dims.add(ARM_ROT6D_DIM * self.n_arms)
        if dim not in self._action_dims:
            raise UserInputError(f"shape_meta.action.shape={dim} does not fit {self.n_arms} arm(s); use "
                                 f"{' or '.join(str(a) for a in sorted(self._action_dims))}")

    def _to_env_action(self, action) -> np.ndarray:
        action = np.asarray(action, dtype=np.float64)
        if action.shape not in {(d,) for d in self._action_dims}:
            raise ValueError(f"action of shape {action.shape}; this env takes one of "
                             f"{sorted(self._action_dims)} values per step")
        if self.abs_action and action.shape[-1] == ARM_ROT6D_DIM * self.n_arms:
            action = rot6d_action_to_abs_np(action)
        return action

    def _convert_obs(self, raw: dict) -> dict:
        obs = {}
        for key, space in self.observation_space.spaces.items():
            value = raw[key]
            if key in self._rgb_keys:
                # robomimic returns upright uint8 HWC, as the dataset stores it; the dataset loader
                # makes float CHW in [0, 1], and so do we.
                value = np.moveaxis(np.asarray(value), -1, 0).astype(np.float32) / 255.0
            else:
                value = np.asarray(value, dtype=np.float32)
            if value.shape != space.shape:
                raise UserInputError(f"observation {key!r} has shape {value.shape} but shape_meta says "
                                     f"{space.shape}; make shape_meta match the dataset's env (camera size)")
            obs[key] = value
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.RandomState(seed)
        if options and options.get("rng_state") is not None:  # replaying an episode (MultiStepWrapper)
            self._rng.set_state(options["rng_state"])
        # all of the episode's randomness is drawn in this reset: this state plus the actions is the episode
        self.episode_rng_state = self._rng.get_state()
        with numpy_global_rng(self._rng):
            raw = self.env.reset()
        if options and options.get("state") is not None:
            raw = self.env.reset_to({"states": np.asarray(options["state"])})
        self._steps = 0
        return self._convert_obs(raw), {"success": False}

    def _unstable_count(self) -> int:
        """How often MuJoCo met a NaN/inf/huge position, velocity, acceleration or control; it then
        resets the state (or zeroes the control) silently, so observations stay finite while the
        episode stopped being the one the actions asked for."""
        import mujoco

        w, kinds = self.env.env.sim.data._data.warning, mujoco.mjtWarning
        return sum(int(w[k].number) for k in (kinds.mjWARN_BADQPOS, kinds.mjWARN_BADQVEL, kinds.mjWARN_BADQACC,
                                              kinds.mjWARN_BADCTRL))

    def step(self, action):
        unstable_before = self._unstable_count()
        raw, env_reward, _, _ = self.env.step(self._to_env_action(action))
        self._steps += 1
        success = bool(self.env.is_success()["task"])
        truncated = self.max_steps is not None and self._steps >= self.max_steps
        info = {"success": success, "env_reward": float(env_reward),
                "sim_unstable": self._unstable_count() > unstable_before}
        return self._convert_obs(raw), float(success), success, bool(truncated and not success), info

    def sim_state(self) -> np.ndarray:
        """robosuite's flattened simulator state (time, qpos, qvel)."""
        return np.array(self.env.env.sim.get_state().flatten())

    def render(self):
        if self.render_size is None:
            raise RuntimeError("this env was built with render_size=None")
        h, w = self.render_size
        return np.ascontiguousarray(self.env.render(mode="rgb_array", height=h, width=w,
                                                    camera_name=self.render_camera))

    def close(self):
        env = getattr(self, "env", None)
        if env is not None:
            env.env.close()
            self.env = None


def _finite(obs: dict, reward) -> bool:
    return bool(np.isfinite(reward)) and all(np.isfinite(np.asarray(v)).all() for v in obs.values())


def stack_space(space: gym.spaces.Box, n: int) -> gym.spaces.Box:
    return gym.spaces.Box(np.repeat(space.low[None], n, 0), np.repeat(space.high[None], n, 0),
                          (n, *space.shape), space.dtype)


class MultiStepWrapper(gym.Wrapper):
    """Observation history of ``n_obs_steps`` and action chunks of up to ``n_action_steps``.

    step(chunk (k, Da), k <= n_action_steps) runs the actions in order and stops inside the chunk
    when the episode ends (success, ``max_episode_steps`` or the inner truncation). info holds
    ``chunk_rewards`` (n_action_steps,) zero-padded, ``executed_actions`` (n_action_steps, Da)
    zero-padded with ``n_executed`` valid rows (the actions as given, i.e. in policy space),
    ``success``, ``episode_length`` (control steps) and ``fault``. The returned reward is the chunk's sum.
    A step whose observation or reward is not finite, or that MuJoCo found unstable, ends the
    episode as truncated with ``fault=True`` (that step's reward counts 0 and its observation is not
    kept: the history holds the last good one).
    After the episode ended, step() is a no-op that repeats the final observation and flags.

    ``episode_record()`` is the episode so far as data (the inner env's reset RNG state, every
    action executed, the simulator state reached); ``restore_episode(record)`` replays it, so an
    env in a fresh process continues that very episode (a resumed run's training envs). A replay
    reproduces the episode exactly (MuJoCo is deterministic), including what the flattened
    simulator state does not hold (the gripper's accumulated command, robosuite's observation
    timers, the solver's warm start); it checks that it reached the recorded simulator state.
    """

    def __init__(self, env: gym.Env, n_obs_steps: int, n_action_steps: int, max_episode_steps: int | None = None):
        super().__init__(env)
        self.n_obs_steps, self.n_action_steps = n_obs_steps, n_action_steps
        self.max_episode_steps = max_episode_steps
        self.observation_space = gym.spaces.Dict(
            {k: stack_space(s, n_obs_steps) for k, s in env.observation_space.spaces.items()})
        self.action_space = stack_space(env.action_space, n_action_steps)
        self._history = collections.deque(maxlen=n_obs_steps)
        self._ended = True
        self._actions = []  # every action executed in this episode
        self._fault = False
        self.idle = False  # set per env (e.g. vector env set_attr) before reset
        self.restore_record = None  # set per env (vector env set_attr) before restore_episode()

    def _stacked(self) -> dict:
        return {k: np.stack([o[k] for o in self._history]) for k in self._history[0]}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._history.clear()
        self._history.extend([obs] * self.n_obs_steps)  # pad the history with the first frame
        # An idle env (padding in a batch of rollouts) is over before it starts: steps are no-ops.
        self._ended, self._length, self._success = bool(self.idle), 0, False
        self._flags = (False, bool(self.idle))
        self._actions = []
        self._fault = False
        return self._stacked(), info

    def step(self, chunk):
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim == 1:
            chunk = chunk[None]
        da = self.env.action_space.shape[0]
        rewards = np.zeros(self.n_action_steps, np.float32)
        executed = np.zeros((self.n_action_steps, da), np.float32)
        n = 0
        if not self._ended:
            for action in chunk[: self.n_action_steps]:
                obs, reward, terminated, truncated, step_info = self.env.step(action)
                executed[n] = action
                self._actions.append(action.copy())
                n += 1
                if step_info.get("sim_unstable") or not _finite(obs, reward):
                    self._length += 1
                    self._fault, self._ended, self._flags = True, True, (False, True)
                    break
                self._history.append(obs)
                rewards[n - 1] = reward
                self._length += 1
                self._success = self._success or bool(step_info.get("success", False))
                if self.max_episode_steps is not None and self._length >= self.max_episode_steps:
                    truncated = not terminated
                if terminated or truncated:
                    self._ended, self._flags = True, (bool(terminated), bool(truncated))
                    break
        info = {"chunk_rewards": rewards, "executed_actions": executed, "n_executed": n,
                "success": self._success, "episode_length": self._length, "fault": self._fault}
        terminated, truncated = self._flags
        return self._stacked(), float(rewards.sum()), terminated, truncated, info

    def episode_record(self) -> dict:
        """The episode so far: ``rng_state`` (the inner env's, before its reset), ``actions``
        (L, Da) float32 as executed, ``sim_state`` (flattened) and ``length``."""
        actions = np.array(self._actions, dtype=np.float32).reshape(len(self._actions), self.env.action_space.shape[0])
        return {"rng_state": self.env.get_wrapper_attr("episode_rng_state"), "actions": actions,
                "sim_state": self.env.get_wrapper_attr("sim_state")(), "length": self._length}

    def restore_episode(self, record: dict | None = None) -> int:
        """Replay ``record`` (default: ``restore_record``, set per env by the vector env) from its
        reset; returns the episode's length. Raises if the replay misses the recorded sim state."""
        record, self.restore_record = record if record is not None else self.restore_record, None
        self.reset(options={"rng_state": record["rng_state"]})
        for action in record["actions"]:
            self.step(action[None])
        reached = self.env.get_wrapper_attr("sim_state")()
        if self._length != record["length"] or not np.array_equal(reached, record["sim_state"]):
            raise RuntimeError(f"replaying a {record['length']}-step episode did not reach its recorded simulator "
                               f"state (max difference {np.abs(reached - record['sim_state']).max():.3g})")
        return self._length
