"""The online (RL steering) loop: SAC on a steering interface of a frozen base policy.

One loop for every task and steering interface. Counting: one agent step is one action chunk,
i.e. ``n_action_steps`` env steps; every logged record carries ``env_steps`` =
agent_steps x n_action_steps (and the control steps actually executed, which are fewer when
episodes end inside a chunk).
"""

from __future__ import annotations

import collections
import logging
import os
import time

import hydra
import numpy as np
import torch
import tqdm
from gymnasium.vector import AutoresetMode
from omegaconf import DictConfig, OmegaConf, open_dict

from zprl.common.checkpoint import atomic_save, file_sha256
from zprl.common.errors import UserInputError
from zprl.common.seeding import get_rng_states, set_rng_states, set_seed
from zprl.env.runner import RobomimicEnvRunner
from zprl.env.vector_env import RolloutEnvConfig, make_vector_env, step_info
from zprl.policy.checkpoint import load_base_policy
from zprl.policy.steered import SteeredPolicy
from zprl.rl.chunk import chunk_gamma, discounted_chunk_reward, env_steps
from zprl.rl.replay import EmbeddingReplayBuffer
from zprl.rl.sac import SAC
from zprl.rl.smoothness import SmoothnessTracker
from zprl.workspace.base import BaseWorkspace

log = logging.getLogger("zprl")


def apply_debug_overrides(cfg: DictConfig) -> None:
    """training.debug=True: 2 training envs, a few hundred env steps, one 2-episode evaluation."""
    with open_dict(cfg):
        t, o = cfg.training, cfg.online_task
        o.n_envs, o.n_eval_envs, o.n_eval_episodes, o.n_eval_vis = 2, 2, 2, 1
        o.max_steps = min(o.max_steps, 80)
        t.total_agent_steps, t.warmup_agent_steps, t.training_freq = 64, 16, 16
        t.batch_size, t.buffer_size = 32, 1000
        t.eval_every = t.checkpoint_every = 64
        t.log_every = 16
        if "progressive_steps" in cfg.steering:  # action residual: full residual use within the run
            # (the ramp counts from the end of warm-up)
            cfg.steering.progressive_steps = min(cfg.steering.progressive_steps,
                                                 t.total_agent_steps - t.warmup_agent_steps)


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its descendants: exited ones (os.times'
    children fields, once reaped) and live ones (psutil, e.g. the env worker processes)."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    try:
        import psutil
    except ImportError:  # live workers then count only once they exit
        return total
    for child in psutil.Process().children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
        except psutil.Error:  # exited meanwhile: counted by its parent once reaped
            pass
    return total


def obs_to_torch(obs: dict, device, dtype=torch.float32) -> dict:
    return {k: torch.as_tensor(np.asarray(v), device=device, dtype=dtype) for k, v in obs.items()}


class OnlineWorkspace(BaseWorkspace):
    step_key = "agent_steps"

    def __init__(self, cfg: DictConfig, output_dir: str | None = None):
        super().__init__(cfg, output_dir)
        if cfg.training.debug:
            apply_debug_overrides(cfg)
        set_seed(cfg.training.seed)
        self.device = torch.device(cfg.training.device)
        base_ckpt = cfg.online_task.base_ckpt
        policy, self.base_cfg, payload = load_base_policy(base_ckpt, device=self.device)
        self.base_ckpt_path = os.path.abspath(base_ckpt)
        self.base_ckpt_sha256 = file_sha256(base_ckpt)
        self.env_meta = payload["state"]["env_meta"]
        if cfg.online_task.n_action_steps is not None:
            policy.n_action_steps = int(cfg.online_task.n_action_steps)
        self.n_action_steps = policy.n_action_steps
        self.steering = hydra.utils.instantiate(cfg.steering, policy=policy)
        s = cfg.sac
        log_std_min, log_std_max = self.steering.log_std_bounds(s)  # sac.log_std_min/max null: the interface's
        self.sac = SAC(self.steering.state_dim, self.steering.action_dim, self.device,
                       gamma=chunk_gamma(s.gamma_step, self.n_action_steps), tau=s.tau, actor_lr=s.actor_lr,
                       critic_lr=s.critic_lr, alpha_lr=s.alpha_lr, alpha_init=s.alpha_init,
                       target_entropy=s.target_entropy, n_critics=s.n_critics, n_target_min=s.n_target_min,
                       actor_update_every=s.actor_update_every, grad_clip=s.grad_clip,
                       backup_entropy=s.backup_entropy, actor_hidden=tuple(s.actor_hidden),
                       critic_hidden=tuple(s.critic_hidden),
                       log_std_min=log_std_min, log_std_max=log_std_max,
                       critic_view=self.steering.critic_input, seed=cfg.training.seed)
        self.buffer = EmbeddingReplayBuffer(cfg.training.buffer_size, self.steering.state_dim,
                                            self.steering.action_dim, device="cpu", sample_device=self.device)
        self.sample_generator = torch.Generator().manual_seed(cfg.training.seed)
        self.agent_steps = 0
        self.executed_env_steps = 0
        self.episodes_done = 0
        self.successes_done = 0
        self.updates = 0
        # the authors' training success: the last 100 finished training episodes (kept on resume)
        self.success_last100 = collections.deque(maxlen=100)
        # run time, summed over resumed segments: (wall, CPU) at this segment's start and before it
        self._clock_start, self._clock_offset = (time.monotonic(), process_cpu_seconds()), (0.0, 0.0)
        if cfg.training.bootstrap not in ("never", "truncation"):
            raise UserInputError(f"training.bootstrap={cfg.training.bootstrap!r} must be 'never' or 'truncation'")

    @property
    def env_steps(self) -> int:
        return env_steps(self.agent_steps, self.n_action_steps)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self, with_buffer: bool = True) -> dict:
        return {
            "base_ckpt": self.base_ckpt_path,
            "base_ckpt_sha256": self.base_ckpt_sha256,
            "env_meta": self.env_meta,
            "n_action_steps": self.n_action_steps,
            "steering": {"name": self.steering.name, **self.steering.extra_state()},
            "sac": self.sac.state_dict(),
            "replay": self.buffer.state_dict() if with_buffer else None,
            "sample_generator": self.sample_generator.get_state(),
            "counters": {"agent_steps": self.agent_steps, "executed_env_steps": self.executed_env_steps,
                         "episodes": self.episodes_done, "successes": self.successes_done, "updates": self.updates},
            "success_last100": [bool(x) for x in self.success_last100],
            "time": self._run_times(),
            "rng": get_rng_states(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["base_ckpt_sha256"] != self.base_ckpt_sha256:
            raise UserInputError(f"cannot resume: {self.base_ckpt_path} is not the base checkpoint this run started "
                                 f"from (sha256 differs); pass the original online_task.base_ckpt")
        self.steering.load_extra_state(state["steering"])
        self.sac.load_state_dict(state["sac"])
        if state["replay"] is not None:
            self.buffer.load_state_dict(state["replay"])
        self.sample_generator.set_state(state["sample_generator"])
        c = state["counters"]
        self.agent_steps, self.executed_env_steps = c["agent_steps"], c["executed_env_steps"]
        self.episodes_done, self.successes_done, self.updates = c["episodes"], c["successes"], c["updates"]
        self.success_last100.clear()
        self.success_last100.extend(state.get("success_last100", []))  # absent in older checkpoints
        saved = state.get("time", {})
        self._clock_start = (time.monotonic(), process_cpu_seconds())
        self._clock_offset = (float(saved.get("time/wall_s", 0.0)), float(saved.get("time/cpu_s", 0.0)))
        set_rng_states(state["rng"])

    def save_step_checkpoint(self) -> str:
        """checkpoints/step_XXXXXX.ckpt (no replay buffer: it lives in latest.ckpt) + latest.ckpt."""
        payload = {"cfg": OmegaConf.to_container(self.cfg, resolve=True), "workspace": type(self).__name__,
                   "state": self.state_dict(with_buffer=False), "wandb_id": getattr(self.wandb_run, "id", None)}
        path = atomic_save(payload, os.path.join(self.checkpoint_dir, f"step_{self.agent_steps:06d}.ckpt"))
        self.save_checkpoint()
        return path

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, t, o = self.cfg, self.cfg.training, self.cfg.online_task
        resumed = self.resume_if_requested()
        # before any output: may read the dataset (steering.res_scale=auto) and fail on it
        prepared = self.steering.prepare(self.base_cfg) if resumed is None else {}
        self.start_logging(resumed, self.agent_steps if resumed else None)
        if prepared:
            self.log_metrics({**self._counters(), **prepared}, step=self.agent_steps)
        shape_meta = OmegaConf.to_container(self.base_cfg.shape_meta, resolve=True)
        n_obs_steps = self.steering.policy.n_obs_steps
        train_cfg = RolloutEnvConfig(env_meta=self.env_meta, shape_meta=shape_meta, n_obs_steps=n_obs_steps,
                                     n_action_steps=self.n_action_steps, max_steps=o.max_steps, render_size=None)
        envs = make_vector_env(train_cfg, o.n_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        evaluator = RobomimicEnvRunner(
            os.path.join(self.output_dir), self.env_meta, shape_meta, n_train=0, n_test=o.n_eval_episodes,
            test_start_seed=o.eval_start_seed, max_steps=o.max_steps, n_obs_steps=n_obs_steps,
            n_action_steps=self.n_action_steps, n_envs=o.n_eval_envs, n_test_vis=o.n_eval_vis,
            render_size=o.render_size)
        smooth = SmoothnessTracker(o.n_envs, self.steering.policy.action_dim)
        last_eval = {}
        try:
            if resumed is None:
                last_eval = self._evaluate(evaluator, base_only=True)
            seed0 = o.train_start_seed + self.agent_steps  # fresh episodes on resume, still seeded
            obs, _ = envs.reset(seed=[seed0 + i for i in range(o.n_envs)])
            enc = self.steering.encode(obs_to_torch(obs, self.device))
            bar = tqdm.tqdm(total=t.total_agent_steps, initial=self.agent_steps, desc="agent steps",
                            mininterval=t.tqdm_interval_sec)
            collected, pending, metrics = 0, 0, {}
            # overlap: a round's updates are not run at once but spread over the next round's chunks,
            # n_envs * utd of them while the workers simulate each chunk (the rate they accrue at), so
            # the main process computes while the envs step. Same updates on the same buffer; the
            # actor collecting round r+1 is part-way through round r's updates instead of past them.
            overlap = bool(t.get("overlap_updates", False)) and hasattr(envs, "step_async")
            per_chunk = max(1, int(round(o.n_envs * t.utd)))
            next_log, next_eval, next_ckpt = (self._next_multiple(k) for k in (t.log_every, t.eval_every, t.checkpoint_every))
            while self.agent_steps < t.total_agent_steps:
                warm = self.agent_steps < t.warmup_agent_steps
                if warm:
                    rl_action = self.steering.warmup_action(o.n_envs)
                else:
                    # progressive exploration counts from the END of warm-up (0 on the first step after it)
                    rl_action = self.steering.explore(self.sac.act(enc.state), self.agent_steps - t.warmup_agent_steps)
                chunk = self.steering.act(enc, rl_action)
                if overlap:
                    # the workers simulate this chunk while this chunk's share of owed updates runs
                    envs.step_async(chunk.cpu().numpy())
                    if pending:
                        n = min(pending, per_chunk)
                        metrics.update(self._update(n))
                        pending -= n
                    obs, _, term, trunc, raw_info = envs.step_wait()
                else:
                    obs, _, term, trunc, raw_info = envs.step(chunk.cpu().numpy())
                info = step_info(raw_info)  # each env's chunk info, also for envs that just auto-reset
                reward = discounted_chunk_reward(info["chunk_rewards"], cfg.sac.gamma_step)
                term, trunc = np.asarray(term), np.asarray(trunc)
                done = term | trunc
                next_enc = self.steering.encode(obs_to_torch(obs, self.device))
                next_state = next_enc.state
                terminal = done.astype(np.float32)
                if t.bootstrap == "truncation" and (trunc & ~term).any():
                    # SAME_STEP autoreset: obs holds the new episode's first frame; the state to
                    # bootstrap from is the timed-out episode's final frame.
                    idx = np.flatnonzero(trunc & ~term)
                    final = {k: np.stack([raw_info["final_obs"][i][k] for i in idx]) for k in obs}
                    next_state = next_state.clone()
                    next_state[torch.as_tensor(idx)] = self.steering.encode(obs_to_torch(final, self.device)).state
                    terminal = term.astype(np.float32)
                self.buffer.add(enc.state, rl_action, torch.as_tensor(reward, dtype=torch.float32), next_state,
                                torch.as_tensor(terminal))
                metrics.update(self.steering.diagnostics(enc, rl_action))
                executed = np.asarray(info["executed_actions"])
                n_exec = np.asarray(info["n_executed"])
                smooth.add(executed, n_exec, done)
                self._count_episodes(info, done)
                enc = next_enc
                self.agent_steps += o.n_envs
                self.executed_env_steps += int(n_exec.sum())
                collected += o.n_envs
                bar.update(o.n_envs)
                # rounds of training_freq transitions; the warm-up's rounds owe nothing except its last,
                # whose updates run right after it (the authors' schedule: learning starts at warm-up end)
                if collected >= t.training_freq:
                    if self.agent_steps >= t.warmup_agent_steps:
                        pending += int(collected * t.utd)
                    collected = 0
                finished = self.agent_steps >= t.total_agent_steps
                # serial: the round runs now; overlapped: what is still owed runs before evaluations
                # and checkpoints, so they see every update (resume stays exact)
                if pending and (not overlap or finished or self.agent_steps >= min(next_eval, next_ckpt)):
                    metrics.update(self._update(pending))
                    pending = 0
                if self.agent_steps >= next_log:
                    self._log_train(metrics, smooth, warm)  # `updates` counts the ones run so far
                    next_log = self._next_multiple(t.log_every)
                if self.agent_steps >= next_eval or finished:
                    last_eval = self._evaluate(evaluator)
                    next_eval = self._next_multiple(t.eval_every)
                if self.agent_steps >= next_ckpt or finished:
                    self.save_step_checkpoint()
                    next_ckpt = self._next_multiple(t.checkpoint_every)
            bar.close()
        finally:
            envs.close()
            evaluator.close()
            self.finish_logging()
        return last_eval

    def _next_multiple(self, every: int) -> int:
        return (self.agent_steps // every + 1) * every

    def _count_episodes(self, info, done) -> None:
        ended = np.flatnonzero(done)
        if len(ended):
            success = np.asarray(info["success"])
            self.episodes_done += len(ended)
            self.successes_done += int(success[ended].sum())
            self._recent = getattr(self, "_recent", []) + [bool(s) for s in success[ended]]
            self.success_last100.extend(bool(s) for s in success[ended])

    def _update(self, n_updates: int) -> dict:
        if len(self.buffer) < self.cfg.training.batch_size:
            return {}
        sums = {}
        for _ in range(n_updates):
            m = self.sac.update(self.buffer.sample(self.cfg.training.batch_size, generator=self.sample_generator))
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            self.updates += 1
        return {f"sac/{k}": v / n_updates for k, v in sums.items()}

    def _counters(self) -> dict:
        return {"agent_steps": self.agent_steps, "env_steps": self.env_steps,
                "executed_env_steps": self.executed_env_steps, "updates": self.updates,
                "episodes": self.episodes_done}

    def _log_train(self, metrics: dict, smooth: SmoothnessTracker, warm: bool) -> None:
        recent = getattr(self, "_recent", [])
        record = {**self._counters(), **metrics, **{f"train/{k}": v for k, v in smooth.pop().items()},
                  "train/warmup": int(warm), "buffer_size": len(self.buffer)}
        if recent:
            record["train/success_rate"] = float(np.mean(recent))
            self._recent = []
        if len(self.success_last100) == self.success_last100.maxlen:  # only once 100 episodes have finished
            record["train/success_rate_last100"] = float(np.mean(self.success_last100))
        record["alpha"] = float(self.sac.alpha)
        record.update(self._run_times())
        self.log_metrics(record, step=self.agent_steps)

    def _run_times(self) -> dict:
        """``time/wall_s`` and ``time/cpu_s`` of the run so far (resumed segments summed); CPU time
        counts this process and its env worker processes, so cpu_s / wall_s is the cores it kept busy."""
        (wall0, cpu0), (wall_off, cpu_off) = self._clock_start, self._clock_offset
        return {"time/wall_s": wall_off + time.monotonic() - wall0,
                "time/cpu_s": cpu_off + process_cpu_seconds() - cpu0}

    def _evaluate(self, evaluator: RobomimicEnvRunner, base_only: bool = False) -> dict:
        import wandb

        policy = SteeredPolicy(self.steering, None if base_only else self.sac.actor, deterministic=True)
        result = evaluator.run(policy)
        # keep each evaluation's videos apart: media/eval_<agent_steps>_test_<seed>.mp4
        videos = []
        for path in result.get("videos", []):
            new = os.path.join(os.path.dirname(path), f"eval_{self.agent_steps:06d}_{os.path.basename(path)}")
            os.replace(path, new)
            videos.append(new)
        record = {**self._counters(), "eval/success_rate": result["test/mean_score"],
                  "eval/mean_length": result["test/mean_length"], "eval/base_only": int(base_only),
                  # smoothness of the actions executed in evaluation, pooled over its episodes
                  **{f"eval/{k}": result[f"test/{k}"] for k in ("action_delta", "action_jerk")
                     if f"test/{k}" in result},
                  **self._run_times()}
        self.log_metrics(record, step=self.agent_steps)
        if self.cfg.logging.mode != "disabled":
            for v in videos:
                self.wandb_run.log({f"media/{os.path.basename(v)[:-4]}": wandb.Video(v, format="mp4")},
                                   step=self.agent_steps)
        log.info("eval at %d env steps: success %.3f%s", self.env_steps, record["eval/success_rate"],
                 " (base policy)" if base_only else "")
        return record
