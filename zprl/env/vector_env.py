"""Batches of rollout envs: gymnasium's AsyncVectorEnv (one process per env) or SyncVectorEnv.

GL contexts must only exist in the processes that render. gymnasium's AsyncVectorEnv builds one
env in the parent to read its spaces; our factory answers that call with a space-only stand-in
(the spaces follow from shape_meta), so the parent never creates a robosuite env or GL context.
Workers start with "forkserver" (or "spawn"): nothing of the parent's GL/torch state is inherited.

Per-env settings for the next episode go through gymnasium's own hooks::

    venv.set_attr("video_path", ["media/test_100000.mp4", None])   # VideoRecordingWrapper
    obs, info = venv.reset(seed=[100000, 100001])                  # per-env seeds

A worker exception is re-raised in the parent; gymnasium logs the worker's traceback first and
we attach it to the exception (``WorkerError``) so it survives into pytest/CI output.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from zprl.common.errors import UserInputError, find_user_error
from zprl.env.wrappers import (MultiStepWrapper, RobomimicGymEnv, VideoRecordingWrapper, action_space_for,
                               observation_space_for)


@dataclass
class RolloutEnvConfig:
    """Everything needed to build one rollout env; picklable, so workers build their own."""

    env_meta: dict
    shape_meta: dict
    n_obs_steps: int = 1
    n_action_steps: int = 1
    max_steps: int | None = None
    abs_action: bool = True
    render_camera: str = "agentview"
    render_size: tuple[int, int] | None = (256, 256)
    fps: int = 10
    env_vars: dict = field(default_factory=dict)
    render_device: str | None = None  # the policy's torch device: envs render on that GPU (render_patch)

    def build(self) -> gym.Env:
        from zprl.env.render_patch import set_render_device

        set_render_device(self.render_device)
        env = RobomimicGymEnv(self.env_meta, self.shape_meta, abs_action=self.abs_action, max_steps=self.max_steps,
                              render_camera=self.render_camera, render_size=self.render_size)
        if self.render_size is not None:
            env = VideoRecordingWrapper(env, fps=self.fps)
        return MultiStepWrapper(env, self.n_obs_steps, self.n_action_steps, max_episode_steps=self.max_steps)

    def spaces_only(self) -> gym.Env:
        inner = _SpacesOnlyEnv(observation_space_for(self.shape_meta), action_space_for(self.shape_meta))
        return MultiStepWrapper(inner, self.n_obs_steps, self.n_action_steps)


class _SpacesOnlyEnv(gym.Env):
    """Carries the spaces for gymnasium's parent-side probe; never stepped."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space
        self.render_mode = "rgb_array"


class _FailedEnv(gym.Wrapper):
    def __init__(self, stand_in: gym.Env, trace: str, user_error: str | None = None):
        super().__init__(stand_in)
        self.trace = trace
        self.user_error = user_error

    def reset(self, **kwargs):
        if self.user_error is not None:  # a person's mistake (e.g. a GPU that does not exist): one line
            raise UserInputError(self.user_error)
        raise RuntimeError(f"building the env failed in the worker:\n{self.trace}")

    def step(self, action):
        return self.reset()


class EnvFactory:
    """Callable env_fn. With ``stand_in_here`` it returns the space-only stand-in in the process
    that made it and builds the real env anywhere else (the workers), after applying ``env_vars``
    and pinning torch to one thread (workers share the machine's cores). Without, it always
    builds the real env (SyncVectorEnv)."""

    def __init__(self, config: RolloutEnvConfig, stand_in_here: bool):
        self.config = config
        self.owner_pid = os.getpid() if stand_in_here else None

    def __call__(self) -> gym.Env:
        if self.owner_pid == os.getpid():
            return self.config.spaces_only()
        if self.owner_pid is not None:  # a worker process: its own env vars, one torch thread
            os.environ.update({k: str(v) for k, v in self.config.env_vars.items()})
            import torch

            torch.set_num_threads(1)
            try:
                return self.config.build()
            except Exception as err:
                # gymnasium builds worker envs outside its error handling (the worker would just
                # die); a stand-in that re-raises on reset routes the traceback to the parent.
                user_error = find_user_error(err)
                return _FailedEnv(self.config.spaces_only(), traceback.format_exc(),
                                  None if user_error is None else str(user_error))
        return self.config.build()


class WorkerError(RuntimeError):
    """An exception raised inside an env worker; the message carries the worker's traceback."""


class RolloutAsyncVectorEnv(AsyncVectorEnv):
    """AsyncVectorEnv whose errors carry the worker's traceback in the exception message."""

    def _raise_if_errors(self, successes):
        if all(successes):
            return
        # Workers queue (index, type, value, traceback) before answering, so these gets return.
        failed = [self.error_queue.get() for _ in range(len(successes) - sum(successes))]
        for item in failed:  # gymnasium's handler logs and closes the failed pipes
            self.error_queue.put(item)
        try:
            super()._raise_if_errors(successes)
        except UserInputError:
            raise  # one line for the person; gymnasium has logged the worker's traceback
        except Exception as err:
            traces = "\n".join(f"--- worker {index} ---\n{trace}" for index, _, _, trace in failed)
            raise WorkerError(f"{type(err).__name__}: {err}\n{traces}") from err


def make_vector_env(config: RolloutEnvConfig, n_envs: int, asynchronous: bool | None = None,
                    context: str = "forkserver", autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP):
    """``n_envs`` copies of the rollout env; asynchronous defaults to ``n_envs > 1``.

    autoreset_mode: gymnasium's (NextStep, SameStep, Disabled). The evaluation runner uses
    Disabled together with MultiStepWrapper's no-op steps after an episode ends.
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if asynchronous is None:
        asynchronous = n_envs > 1
    if asynchronous:
        fns = [EnvFactory(config, stand_in_here=True) for _ in range(n_envs)]
        return RolloutAsyncVectorEnv(fns, context=context, shared_memory=True, autoreset_mode=autoreset_mode)
    fns = [EnvFactory(config, stand_in_here=False) for _ in range(n_envs)]
    return SyncVectorEnv(fns, autoreset_mode=autoreset_mode)



STEP_INFO_KEYS = ("chunk_rewards", "executed_actions", "n_executed", "success", "episode_length")


def step_info(info: dict) -> dict:
    """Each env's MultiStepWrapper info for the step just taken, in any autoreset mode.

    With SameStep autoreset gymnasium files an ended env's step info under ``info["final_info"]``
    and puts its reset info at the top level (where ``success`` is then False and
    ``chunk_rewards`` missing or zero). This takes every env's values from the right place.
    Returns {key: array with the env axis first} for STEP_INFO_KEYS.
    """
    final = info.get("final_info", {})
    out = {}
    for key in STEP_INFO_KEYS:
        sources = [(info.get(key), info.get(f"_{key}")), (final.get(key), final.get(f"_{key}"))]
        template = next(v for v, _ in sources[::-1] if v is not None)
        values = np.zeros_like(np.asarray(template))
        for value, mask in sources:  # final_info last: it wins for the envs that just ended
            if value is not None:
                mask = np.ones(len(values), bool) if mask is None else np.asarray(mask, bool)
                values[mask] = np.asarray(value)[mask]
        out[key] = values
    return out
