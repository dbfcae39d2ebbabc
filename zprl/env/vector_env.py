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

With ``restart_failed=True`` (the online loop's training envs) a worker that dies, raises, or does
not answer a step within ``step_timeout`` seconds is killed and replaced instead: the new worker
builds its env and starts a new episode (seeded), and that step reports the lost episode as
truncated with ``fault=True`` in its step info (no reward, no executed actions). Such envs send
observations through their pipes (``shared_memory=False``), so a new worker needs no shared buffer.
Non-finite observations and rewards, and MuJoCo's own instability reset, end an episode the same
way inside the worker (``MultiStepWrapper``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import traceback
from copy import deepcopy
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.vector.async_vector_env import AsyncState, _async_worker
from gymnasium.vector.utils import CloudpickleWrapper, concatenate, iterate

from zprl.common.errors import UserInputError, find_user_error
from zprl.env.deferred_import import defer_import
from zprl.env.video import VideoRecordingWrapper
from zprl.env.wrappers import MultiStepWrapper, RobomimicGymEnv, action_space_for, observation_space_for


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
    that made it and builds the real env anywhere else (the workers), after applying ``env_vars``.
    Workers import robosuite, MuJoCo and numpy, not torch (``zprl.env.robosuite_env``). Without, it always
    builds the real env (SyncVectorEnv)."""

    def __init__(self, config: RolloutEnvConfig, stand_in_here: bool):
        self.config = config
        self.owner_pid = os.getpid() if stand_in_here else None

    def __call__(self) -> gym.Env:
        if self.owner_pid == os.getpid():
            return self.config.spaces_only()
        if self.owner_pid is not None:  # a worker process: its own env vars; no torch (slim workers)
            os.environ.update({k: str(v) for k, v in self.config.env_vars.items()})
            defer_import("cv2")  # robosuite's on-screen viewer needs it, a worker never opens one
            try:
                return self.config.build()
            except Exception as err:
                # gymnasium builds worker envs outside its error handling (the worker would just
                # die); a stand-in that re-raises on reset routes the traceback to the parent.
                user_error = find_user_error(err)
                return _FailedEnv(self.config.spaces_only(), traceback.format_exc(),
                                  None if user_error is None else str(user_error))
        return self.config.build()


log = logging.getLogger("zprl")


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


class FaultTolerantVectorEnv(RolloutAsyncVectorEnv):
    """A RolloutAsyncVectorEnv whose failed workers are replaced (see the module docstring).

    ``restarts`` counts the replacements; ``restart_seed(index, restarts)`` seeds the new worker's
    first episode. Only ``step`` is protected: resets, calls and attribute access fail as usual.
    """

    def __init__(self, env_fns, step_timeout: float | None = None, context: str = "forkserver",
                 restart_seed=None, **kwargs):
        super().__init__(env_fns, context=context, shared_memory=False, **kwargs)
        self.step_timeout = step_timeout
        self.context = context
        self.restart_seed = restart_seed or (lambda index, restarts: 2 ** 31 - 1 - restarts)
        self.restarts = 0
        self._unsent: dict[int, str] = {}

    def step_async(self, actions) -> None:
        self._assert_is_running()
        if self._state != AsyncState.DEFAULT:
            raise RuntimeError(f"step_async while waiting for {self._state.value}")
        self._unsent = {}
        for i, (pipe, action) in enumerate(zip(self.parent_pipes, iterate(self.action_space, actions))):
            try:
                pipe.send(("step", action))
            except (BrokenPipeError, ConnectionResetError, OSError, AttributeError):
                self._unsent[i] = f"worker {i} was gone (exit code {self.processes[i].exitcode})"
        self._state = AsyncState.WAITING_STEP

    def step_wait(self, timeout: float | None = None):
        self._assert_is_running()
        deadline = None if self.step_timeout is None else time.monotonic() + self.step_timeout
        results, faults = [None] * self.num_envs, dict(self._unsent)
        for i, pipe in enumerate(self.parent_pipes):
            if i in faults:
                continue
            try:
                if deadline is not None and not pipe.poll(max(deadline - time.monotonic(), 0.0)):
                    faults[i] = f"worker {i} did not answer a step within {self.step_timeout:g} s"
                    continue
                result, ok = pipe.recv()
            except (EOFError, ConnectionResetError, BrokenPipeError, OSError):
                faults[i] = f"worker {i} died (exit code {self.processes[i].exitcode})"
                continue
            if ok:
                results[i] = result
            else:  # the worker raised; it has queued (index, type, value, trace) and exited
                faults[i] = f"worker {i} raised {self._worker_error(i)}"
        self._state = AsyncState.DEFAULT
        for i, why in faults.items():
            results[i] = self._replace_worker(i, why)
        obs, rewards, terms, truncs, infos = [], [], [], [], {}
        for i, (o, r, te, tr, info) in enumerate(results):
            obs.append(o)
            rewards.append(r)
            terms.append(te)
            truncs.append(tr)
            infos = self._add_info(infos, info, i)
        self.observations = concatenate(self.single_observation_space, obs, self.observations)
        return (deepcopy(self.observations) if self.copy else self.observations, np.array(rewards, dtype=np.float64),
                np.array(terms, dtype=np.bool_), np.array(truncs, dtype=np.bool_), infos)

    def call(self, name: str, *args, **kwargs) -> tuple:
        """Like AsyncVectorEnv.call, but a worker that is gone answers None instead of breaking the
        other pipes' protocol (it is replaced at the next step)."""
        self._assert_is_running()
        sent = []
        for pipe in self.parent_pipes:
            try:
                pipe.send(("_call", (name, args, kwargs)))
                sent.append(True)
            except (BrokenPipeError, ConnectionResetError, OSError, AttributeError):
                sent.append(False)
        results = []
        for i, (pipe, ok_sent) in enumerate(zip(self.parent_pipes, sent)):
            result = None
            if ok_sent:
                try:
                    result, ok = pipe.recv()
                    if not ok:
                        log.warning("training env %d: call %s raised %s", i, name, self._worker_error(i))
                        result = None
                except (EOFError, ConnectionResetError, BrokenPipeError, OSError):
                    result = None
            results.append(result)
        return tuple(results)

    def close_extras(self, timeout: float | None = None, terminate: bool = False) -> None:
        try:
            super().close_extras(timeout=timeout, terminate=terminate)
        except (BrokenPipeError, EOFError, ConnectionResetError, OSError, AttributeError):
            for proc in self.processes:  # a worker died since the last step: stop the rest
                if proc.is_alive():
                    proc.kill()
                proc.join(timeout=10)

    def _worker_error(self, index: int) -> str:
        pending, found = [], None
        try:
            while True:
                item = self.error_queue.get(timeout=1.0)
                if item[0] == index and found is None:
                    found = item
                else:
                    pending.append(item)
        except Exception:  # queue empty
            pass
        for item in pending:
            self.error_queue.put(item)
        return f"{found[1].__name__}: {found[2]}" if found else "an exception"

    def _replace_worker(self, index: int, why: str):
        """Kill worker ``index``, start a new one, begin a new seeded episode; the step result that
        reports the lost episode: truncated, no reward, fault=True."""
        old, pipe = self.processes[index], self.parent_pipes[index]
        if old.is_alive():
            old.kill()
        old.join(timeout=10)
        if pipe is not None:
            pipe.close()
        ctx = multiprocessing.get_context(self.context)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_async_worker, name=f"Worker<{type(self).__name__}>-{index}", daemon=True,
                           args=(index, CloudpickleWrapper(self.env_fns[index]), child, parent, None, self.error_queue,
                                 self.autoreset_mode, None))
        proc.start()
        child.close()
        self.processes[index], self.parent_pipes[index] = proc, parent
        seed = int(self.restart_seed(index, self.restarts))
        self.restarts += 1
        log.warning("training env %d: %s; restarted it (restart %d), its episode counts as truncated; "
                    "new episode seeded %d", index, why, self.restarts, seed)
        parent.send(("reset", {"seed": seed}))
        (obs, reset_info), ok = parent.recv()
        if not ok:
            raise WorkerError(f"worker {index} failed again after a restart: {self._worker_error(index)}")
        n_steps, action_dim = self.single_action_space.shape
        lost = {"chunk_rewards": np.zeros(n_steps, np.float32), "executed_actions": np.zeros((n_steps, action_dim), np.float32),
                "n_executed": 0, "success": False, "episode_length": 0, "fault": True}
        return obs, 0.0, False, True, {"final_info": lost, **reset_info, "fault": True}


def make_vector_env(config: RolloutEnvConfig, n_envs: int, asynchronous: bool | None = None,
                    context: str = "forkserver", autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                    restart_failed: bool = False, step_timeout: float | None = None, restart_seed=None):
    """``n_envs`` copies of the rollout env; asynchronous defaults to ``n_envs > 1``.

    autoreset_mode: gymnasium's (NextStep, SameStep, Disabled). The evaluation runner uses
    Disabled together with MultiStepWrapper's no-op steps after an episode ends.
    restart_failed: replace workers that die, raise or hang past ``step_timeout`` seconds
    (FaultTolerantVectorEnv; with one env in this process, there is no worker to replace).
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if asynchronous is None:
        asynchronous = n_envs > 1
    if asynchronous:
        fns = [EnvFactory(config, stand_in_here=True) for _ in range(n_envs)]
        if restart_failed:
            return FaultTolerantVectorEnv(fns, step_timeout=step_timeout, context=context, restart_seed=restart_seed,
                                          autoreset_mode=autoreset_mode)
        return RolloutAsyncVectorEnv(fns, context=context, shared_memory=True, autoreset_mode=autoreset_mode)
    fns = [EnvFactory(config, stand_in_here=False) for _ in range(n_envs)]
    return SyncVectorEnv(fns, autoreset_mode=autoreset_mode)



class EnvGroups:
    """The training envs as groups of worker processes that step independently (``training.env_groups``).

    Each group is its own vector env, so one group can simulate a chunk while the main process computes
    another group's next chunk (zprl/workspace/online_collect.py). Towards the rest of the loop it is one batch
    of envs in a fixed order, group 0's envs first: ``reset(seed=[...])``, ``call``, ``set_attr`` and
    ``close`` split their per-env arguments by group and join the answers in that order.
    """

    def __init__(self, envs: list):
        self.envs = list(envs)
        bounds = np.cumsum([0] + [e.num_envs for e in self.envs])
        self.groups = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self.num_envs = int(bounds[-1])

    def reset(self, seed: list[int]):
        parts = [e.reset(seed=list(seed[g])) for e, g in zip(self.envs, self.groups)]
        return join_obs([obs for obs, _ in parts]), {}

    def step_async(self, group: int, actions) -> None:
        self.envs[group].step_async(actions)

    def step_wait(self, group: int):
        return self.envs[group].step_wait()

    def call(self, name: str, *args, **kwargs) -> tuple:
        return tuple(x for e in self.envs for x in e.call(name, *args, **kwargs))

    def set_attr(self, name: str, values) -> None:
        for e, g in zip(self.envs, self.groups):
            e.set_attr(name, list(values[g]))

    def close(self, **kwargs) -> None:
        for e in self.envs:
            e.close(**kwargs)


def join_obs(parts: list[dict]) -> dict:
    """Observation dicts of consecutive groups of envs as one (env axis first)."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def final_obs(info: dict, n_envs: int) -> list:
    """Each env's last observation of the episode that ended at this step (SameStep autoreset), else None."""
    values, mask = info.get("final_obs"), info.get("_final_obs")
    if values is None:
        return [None] * n_envs
    return [values[i] if mask is None or mask[i] else None for i in range(n_envs)]


STEP_INFO_KEYS = ("chunk_rewards", "executed_actions", "n_executed", "success", "episode_length", "fault")


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
        template = next((v for v, _ in sources[::-1] if v is not None), None)
        if template is None:  # "fault" from envs that do not report it
            template = np.zeros(len(out["success"]), bool)
        values = np.zeros_like(np.asarray(template))
        for value, mask in sources:  # final_info last: it wins for the envs that just ended
            if value is not None:
                mask = np.ones(len(values), bool) if mask is None else np.asarray(mask, bool)
                values[mask] = np.asarray(value)[mask]
        out[key] = values
    return out
