"""Roll a policy out on seeded robomimic episodes and report success, lengths and videos.

Every episode has its own seed (train: train_start_seed + i, test: test_start_seed + i) and
``reset(seed)`` fixes its initial state, so which envs run together (n_envs) does not change the
scenes. Train episodes use seeds rather than the dataset's initial states: it keeps the runner
independent of the dataset file and the two sets disjoint (test seeds start at 100000).
A stochastic policy still draws its own noise per batch; seed it if you need bitwise repeats.

Success of an episode = max reward over the episode (reward is 1.0 on the success step, which
also ends the episode). Videos of the first ``n_train_vis`` / ``n_test_vis`` episodes go to
``<output_dir>/media/<prefix>_<seed>.mp4``.

Smoothness of the actions each episode EXECUTED (zprl/rl/smoothness.py: commanded end-effector
position, differences never across episodes): per episode ``action_delta``/``action_jerk`` and,
pooled over a prefix's episodes, ``<prefix>/action_delta``/``<prefix>/action_jerk``.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import tqdm as tqdm_lib
from gymnasium.vector import AutoresetMode

from zprl.common.errors import UserInputError
from zprl.env.vector_env import RolloutEnvConfig, make_vector_env
from zprl.rl.smoothness import SmoothnessTracker, smoothness_means


def policy_device_dtype(policy) -> tuple[torch.device, torch.dtype]:
    device = getattr(policy, "device", None)
    dtype = getattr(policy, "dtype", None)
    if device is None or dtype is None:
        param = next(iter(policy.parameters()), None) if hasattr(policy, "parameters") else None
        device = device or (param.device if param is not None else torch.device("cpu"))
        dtype = dtype or (param.dtype if param is not None else torch.float32)
    return torch.device(device), dtype


def effective_n_envs(n_envs: int | None, n_episodes: int) -> int:
    """Env processes a runner starts: n_envs (None: one per CPU), at most one per episode. Episodes run
    in batches of this many and each batch seeds the policy's noise, so it is part of what an
    evaluation is (training.base_eval_log checks it)."""
    if n_envs is None:
        n_envs = min(n_episodes, os.cpu_count() or 1)
    return max(1, min(n_envs, max(n_episodes, 1)))


class RobomimicEnvRunner:
    """``run(policy) -> dict`` with ``train/mean_score``, ``test/mean_score``, ``test/mean_length``,
    ``test/action_delta``, ``test/action_jerk`` (and the train counterparts), ``episodes`` (seed,
    success, length, prefix, video, action_delta, action_jerk) and ``videos`` (mp4 paths). The
    worker processes are started on the first run and reused."""

    def __init__(self, output_dir: str, env_meta: dict, shape_meta: dict, n_train: int = 6, n_test: int = 50,
                 train_start_seed: int = 0, test_start_seed: int = 100000, max_steps: int = 400,
                 n_obs_steps: int = 1, n_action_steps: int = 4, n_envs: int | None = None, n_train_vis: int = 1,
                 n_test_vis: int = 2, render_size=(256, 256), fps: int = 10, abs_action: bool = True,
                 render_camera: str = "agentview", tqdm: bool = True, context: str = "forkserver",
                 asynchronous: bool | None = None):
        if max_steps is None or int(max_steps) < 1:
            raise UserInputError(f"env_runner.max_steps={max_steps}: set a positive episode step limit")
        self.output_dir = output_dir
        self.episodes = ([("train", train_start_seed + i, i < n_train_vis) for i in range(n_train)]
                         + [("test", test_start_seed + i, i < n_test_vis) for i in range(n_test)])
        wants_video = any(vis for _, _, vis in self.episodes)
        self.config = RolloutEnvConfig(
            env_meta=_plain(env_meta), shape_meta=_plain(shape_meta), n_obs_steps=n_obs_steps,
            n_action_steps=n_action_steps,
            max_steps=max_steps, abs_action=abs_action, render_camera=render_camera,
            render_size=tuple(render_size) if (wants_video and render_size is not None) else None, fps=fps)
        self.n_envs = effective_n_envs(n_envs, len(self.episodes))
        self.max_steps = max_steps
        self.tqdm = tqdm
        self.context = context
        self.asynchronous = asynchronous
        self._venv = None

    def _vector_env(self, device=None):
        if self._venv is None:
            # workers render on the policy's GPU (unless MUJOCO_EGL_DEVICE_ID names one)
            self.config.render_device = str(device) if device is not None and device.type == "cuda" else None
            self._venv = make_vector_env(self.config, self.n_envs, asynchronous=self.asynchronous,
                                         context=self.context, autoreset_mode=AutoresetMode.DISABLED)
        return self._venv

    def close(self) -> None:
        if self._venv is not None:
            self._venv.close()
            self._venv = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _video_path(self, prefix: str, seed: int) -> str:
        return os.path.join(self.output_dir, "media", f"{prefix}_{seed}.mp4")

    @torch.no_grad()
    def run(self, policy) -> dict:
        device, dtype = policy_device_dtype(policy)
        records = []
        bar = tqdm_lib.tqdm(total=len(self.episodes), desc="rollout", disable=not self.tqdm, leave=False)
        # The policy's own sampling (flow noise) draws from torch's global RNG: seed it per batch from
        # the batch's first episode seed, so the same policy on the same seeds gives the same result
        # in every evaluation (eval_base.py, the online loop, eval_sum.py) and the caller's RNG is untouched.
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                for start in range(0, len(self.episodes), self.n_envs):
                    batch = self.episodes[start: start + self.n_envs]
                    torch.manual_seed(batch[0][1])
                    records.extend(self._run_batch(policy, batch, device, dtype, bar))
        finally:
            bar.close()
        return summarize(records)

    def _run_batch(self, policy, batch, device, dtype, bar) -> list[dict]:
        venv = self._vector_env(device)
        n, pad = len(batch), self.n_envs - len(batch)
        seeds = [seed for _, seed, _ in batch] + [0] * pad
        paths = [self._video_path(prefix, seed) if vis else None for prefix, seed, vis in batch] + [None] * pad
        if self.config.render_size is not None:
            venv.set_attr("video_path", paths)
        venv.set_attr("idle", [False] * n + [True] * pad)
        obs, _ = venv.reset(seed=seeds)
        done = np.array([False] * n + [True] * pad)
        reward_max = np.zeros(self.n_envs)
        length = np.zeros(self.n_envs, dtype=int)
        smooth = None  # one tracker per env: this batch's episode in that env
        while not done.all():
            obs_t = {k: torch.from_numpy(np.asarray(v)).to(device=device, dtype=dtype) for k, v in obs.items()}
            action = policy.predict_action(obs_t)["action"]
            action = action.detach().to("cpu", torch.float32).numpy()
            obs, reward, terminated, truncated, info = venv.step(action)
            live = ~done
            reward_max[live] = np.maximum(reward_max[live], np.asarray(reward)[live])
            length[live] = np.asarray(info["episode_length"])[live]
            ended = live & (np.asarray(terminated) | np.asarray(truncated))
            if "executed_actions" in info:  # the actions run, up to the episode's end inside the chunk
                executed, n_exec = np.asarray(info["executed_actions"]), np.asarray(info["n_executed"])
                if smooth is None:
                    smooth = [SmoothnessTracker(1, executed.shape[-1]) for _ in range(self.n_envs)]
                for i in np.flatnonzero(live):
                    smooth[i].add(executed[i: i + 1], n_exec[i: i + 1], ended[i: i + 1])
            done |= ended
            bar.update(int(ended.sum()))
            bar.set_postfix(step=int(length[live].max()) if live.any() else 0, refresh=False)
        if self.config.render_size is not None:
            venv.call("close_video")
        records = []
        for i, (prefix, seed, vis) in enumerate(batch):
            rec = {"prefix": prefix, "seed": int(seed), "success": bool(reward_max[i] >= 1.0),
                   "reward": float(reward_max[i]), "length": int(length[i]), **({"video": paths[i]} if vis else {})}
            if smooth is not None:
                totals = smooth[i].totals()
                rec.update(smoothness_means([totals]), _smoothness=totals)
            records.append(rec)
        return records


def summarize(records: list[dict]) -> dict:
    """Per prefix: mean score and length, and smoothness pooled over the episodes' executed actions
    (``_smoothness`` totals are taken out of the episode records here)."""
    totals = [r.pop("_smoothness", None) for r in records]
    out = {"episodes": records, "videos": [r["video"] for r in records if "video" in r]}
    for prefix in ("train", "test"):
        group = [i for i, r in enumerate(records) if r["prefix"] == prefix]
        if group:
            out[f"{prefix}/mean_score"] = float(np.mean([records[i]["reward"] for i in group]))
            out[f"{prefix}/mean_length"] = float(np.mean([records[i]["length"] for i in group]))
            pooled = smoothness_means([totals[i] for i in group if totals[i] is not None])
            out.update({f"{prefix}/{k}": v for k, v in pooled.items()})
    return out


def _plain(node) -> dict:
    """OmegaConf node -> plain dict (picklable and cheap to send to workers)."""
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
