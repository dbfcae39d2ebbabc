"""The online (RL steering) loop: SAC on a steering interface of a frozen base policy.

One loop for every task and steering interface. Counting: one agent step is one action chunk,
i.e. ``n_action_steps`` env steps; every logged record carries ``env_steps`` =
agent_steps x n_action_steps (and the control steps actually executed, which are fewer when
episodes end inside a chunk).

``run`` reads top to bottom: each iteration collects one chunk in every training env
(``_collect``), settles the round's update debt (``_owe_updates``) and does the periodic work
(``_periodic``: updates due, log, evaluation, checkpoint). Everything the loop carries from one
iteration to the next is an attribute listed in ``LOOP_STATE`` (plus the counters, SAC, replay
and RNGs), and the checkpoint saves all of it, including each training env's episode in flight,
so ``training.resume=True`` continues the very run that was interrupted. Three rooms beside this one:
the training envs and what one iteration collects from them in zprl/workspace/online_collect.py
(``OnlineCollection``, mixed in here); what is saved and how it is restored in
zprl/workspace/online_state.py (``OnlineCheckpointing``, mixed in too); the debug sizes and the
base-fits-task check in zprl/workspace/online_setup.py.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import time

import hydra
import numpy as np
import torch
import tqdm
from omegaconf import DictConfig

from zprl.common.checkpoint import BASE_SHA_FILE, file_sha256, weights_sha256
from zprl.common.errors import NonFiniteLoss, UserInputError
from zprl.common.seeding import set_seed
from zprl.devices import resolve_device
from zprl.policy.checkpoint import load_base_policy
from zprl.policy.steered import SteeredPolicy
from zprl.policy.steering import Encoded
from zprl.rl.chunk import env_steps
from zprl.rl.replay import EmbeddingReplayBuffer
from zprl.rl.smoothness import SmoothnessTracker
from zprl.workspace.base import BaseWorkspace, last_good_state
from zprl.workspace.online_collect import OnlineCollection
from zprl.workspace.online_setup import apply_debug_overrides, check_base_fits_task, read_base_eval_log
from zprl.workspace.online_state import OnlineCheckpointing, process_cpu_seconds

log = logging.getLogger("zprl")

# SAC's losses: a non-finite one stops the run (NonFiniteLoss)
LOSS_TERMS = ("critic_loss", "actor_loss", "alpha_loss")


class OnlineWorkspace(OnlineCollection, OnlineCheckpointing, BaseWorkspace):
    step_key = "agent_steps"

    def __init__(self, cfg: DictConfig, output_dir: str | None = None):
        super().__init__(cfg, output_dir)
        if cfg.training.debug:
            apply_debug_overrides(cfg)
        if cfg.training.bootstrap not in ("never", "truncation"):
            raise UserInputError(f"training.bootstrap={cfg.training.bootstrap!r} must be 'never' or 'truncation'")
        self.n_env_groups = cfg.training.get("env_groups", 1)
        if not isinstance(self.n_env_groups, int) or not 1 <= self.n_env_groups <= cfg.online_task.n_envs:
            raise UserInputError(f"training.env_groups={self.n_env_groups!r}: must be an integer from 1 to "
                                 f"online_task.n_envs ({cfg.online_task.n_envs})")
        self.device = resolve_device(cfg.training.device)
        set_seed(cfg.training.seed)
        base_ckpt = cfg.online_task.base_ckpt
        policy, self.base_cfg, payload = load_base_policy(base_ckpt, device=self.device)
        self.base_ckpt_path = os.path.abspath(base_ckpt)
        self.base_ckpt_sha256 = file_sha256(base_ckpt)
        self.base_policy_sha256 = weights_sha256(policy.state_dict())
        self.env_meta = payload["state"]["env_meta"]
        check_base_fits_task(cfg.online_task, self.base_cfg, self.env_meta, base_ckpt)
        if cfg.online_task.n_action_steps is not None:
            room = policy.horizon - policy.n_obs_steps + 1
            if not 1 <= int(cfg.online_task.n_action_steps) <= room:
                raise UserInputError(f"online_task.n_action_steps={cfg.online_task.n_action_steps}: must be between 1 "
                                     f"and {room} (the base policy's horizon {policy.horizon}, n_obs_steps "
                                     f"{policy.n_obs_steps}); or null for the trained {policy.n_action_steps}")
            policy.n_action_steps = int(cfg.online_task.n_action_steps)
        self.n_action_steps = policy.n_action_steps
        # eval_base.py's evaluation of this base on the same seeds, logged as the step-0 evaluation
        self.base_eval = None
        if cfg.training.get("base_eval_log"):
            self.base_eval = read_base_eval_log(str(cfg.training.base_eval_log), self.base_policy_sha256,
                                                cfg.evaluator, self.n_action_steps)
        self.steering = hydra.utils.instantiate(cfg.steering, policy=policy)
        # built from the config node (partial: the runtime objects are passed as they are, not via OmegaConf)
        self.sac = hydra.utils.instantiate(cfg.sac, _partial_=True)(
            steering=self.steering, n_action_steps=self.n_action_steps, device=self.device, seed=cfg.training.seed)
        self.buffer = EmbeddingReplayBuffer(cfg.training.buffer_size, self.steering.state_dim,
                                            self.steering.action_dim, device="cpu", sample_device=self.device)
        self.sample_generator = torch.Generator().manual_seed(cfg.training.seed)
        # counters
        self.agent_steps = 0
        self.executed_env_steps = 0
        self.episodes_done = 0
        self.successes_done = 0
        self.updates = 0
        self.env_faults = 0  # training episodes lost to an env fault (counted apart from the episodes)
        # the loop's state (LOOP_STATE): all of it is in the checkpoint
        self.collected = 0        # transitions collected in the current round of training_freq
        self.pending = 0          # updates owed and not run yet
        self.metrics = {}         # the latest value of every sac/* and steering diagnostic, logged with the next record
        self.recent_success = []  # outcomes of the training episodes finished since the last log
        self.warm = True          # whether the latest chunk was collected in warm-up
        self.next_log = self.next_eval = self.next_ckpt = None  # agent steps of the next periodic work
        self.last_eval = {}
        # the authors' training success: the last 100 finished training episodes
        self.success_last100 = collections.deque(maxlen=100)
        self.smooth = SmoothnessTracker(cfg.online_task.n_envs, self.steering.policy.action_dim)
        self.enc: Encoded | None = None  # the training envs' current observations, encoded
        self._in_flight = None           # their episodes as a loaded checkpoint left them (resume)
        self.envs = self.evaluator = None
        # run time, summed over resumed segments: (wall, CPU) at this segment's start and before it
        self._clock_start, self._clock_offset = (time.monotonic(), process_cpu_seconds()), (0.0, 0.0)
        self._cpu_reported = 0.0

    @property
    def env_steps(self) -> int:
        return env_steps(self.agent_steps, self.n_action_steps)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict:
        t = self.cfg.training
        resumed = self.resume_if_requested()
        # before any output: may read the dataset (steering.res_scale=auto) and fail on it
        prepared = self.steering.prepare(self.base_cfg) if resumed is None else {}
        self.start_logging(resumed, self.agent_steps if resumed else None)
        # beside the logs, so a results page built from the logs alone names the base it steered
        with open(os.path.join(self.output_dir, BASE_SHA_FILE), "w") as f:
            f.write(self.base_policy_sha256 + "\n")
        if prepared:
            self.log_metrics({**self._counters(), **prepared}, step=self.agent_steps)
        self._make_envs()
        try:
            if resumed is None:
                self.last_eval = self._evaluate(base_only=True) if self.base_eval is None else self._log_base_eval()
            self._start_episodes()
            self._schedule()
            bar = tqdm.tqdm(total=t.total_agent_steps, initial=self.agent_steps, desc="agent steps",
                            mininterval=t.tqdm_interval_sec)
            while self.agent_steps < t.total_agent_steps:
                self._collect()
                bar.update(self.cfg.online_task.n_envs)
                self._owe_updates()
                self._periodic()
            bar.close()
        finally:
            self._close_envs()
            self.finish_logging()
        return self.last_eval

    def _schedule(self) -> None:
        """The next periodic work, unless a checkpoint restored it."""
        t = self.cfg.training
        for name, every in (("next_log", t.log_every), ("next_eval", t.eval_every), ("next_ckpt", t.checkpoint_every)):
            if getattr(self, name) is None:
                setattr(self, name, self._next_multiple(every))

    def _owe_updates(self) -> None:
        """Rounds of training_freq transitions; a round after warm-up owes utd updates per transition.
        The warm-up's rounds owe nothing except its last, whose updates run right after it (the
        authors' schedule: learning starts at warm-up end)."""
        t = self.cfg.training
        if self.collected >= t.training_freq:
            if self.agent_steps >= t.warmup_agent_steps:
                self.pending += int(self.collected * t.utd)
            self.collected = 0

    def _periodic(self) -> None:
        """Updates due, then log, evaluation and checkpoint, each at its own cadence and at the end.
        Serial: a round's updates run as soon as it is owed; overlapped: whatever is still owed runs
        before evaluations and checkpoints, so they see every update (and resume stays exact)."""
        t = self.cfg.training
        finished = self.agent_steps >= t.total_agent_steps
        if not self.overlap or finished or self.agent_steps >= min(self.next_eval, self.next_ckpt):
            self._run_owed()
        if self.agent_steps >= self.next_log:
            self._log_train()  # `updates` counts the ones run so far
            self.next_log = self._next_multiple(t.log_every)
        # the end is evaluated, cadence or not, unless eval_sum.py will score the final checkpoint (the demo)
        if (t.get("eval_at_end", True) if finished else self.agent_steps >= self.next_eval):
            self.last_eval = self._evaluate()
            self.next_eval = self._next_multiple(t.eval_every)
        if self.agent_steps >= self.next_ckpt or finished:
            self.next_ckpt = self._next_multiple(t.checkpoint_every)
            self.save_step_checkpoint()

    def _next_multiple(self, every: int) -> int:
        return (self.agent_steps // every + 1) * every

    def _run_owed(self, at_most: int | None = None) -> None:
        """Run the updates owed (all, or at most ``at_most``). While the buffer holds less than one
        batch they stay owed (and are saved with the checkpoint): they run once it does."""
        if not self.pending or len(self.buffer) < self.cfg.training.batch_size:
            return
        n = self.pending if at_most is None else min(self.pending, at_most)
        self.metrics.update(self._update(n))
        self.pending -= n

    def _update(self, n_updates: int) -> dict:
        sums = {}
        for _ in range(n_updates):
            m = self.sac.update(self.buffer.sample(self.cfg.training.batch_size, generator=self.sample_generator))
            bad = [f"sac/{k}={m[k]}" for k in LOSS_TERMS if k in m and not math.isfinite(m[k])]
            if bad:  # no checkpoint is written from here on: latest.ckpt stays the last good state
                raise NonFiniteLoss(f"non-finite loss at update {self.updates + 1} (agent step {self.agent_steps}, "
                                    f"env step {self.env_steps}): {', '.join(bad)}; stopped. "
                                    + last_good_state(self.latest_path))
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            self.updates += 1
        return {f"sac/{k}": v / n_updates for k, v in sums.items()}

    # -- logging and evaluation -------------------------------------------------------------------
    def _counters(self) -> dict:
        return {"agent_steps": self.agent_steps, "env_steps": self.env_steps,
                "executed_env_steps": self.executed_env_steps, "updates": self.updates,
                "episodes": self.episodes_done}

    def _log_train(self) -> None:
        record = {**self._counters(), **self.metrics, **{f"train/{k}": v for k, v in self.smooth.pop().items()},
                  "train/warmup": int(self.warm), "buffer_size": len(self.buffer)}
        if self.recent_success:
            record["train/success_rate"] = float(np.mean(self.recent_success))
            self.recent_success = []
        if self.env_faults:  # (only once there was one: runs without faults log what they always did)
            record["train/env_faults"] = self.env_faults
        if len(self.success_last100) == self.success_last100.maxlen:  # only once 100 episodes have finished
            record["train/success_rate_last100"] = float(np.mean(self.success_last100))
        record["alpha"] = float(self.sac.alpha)
        record.update(self._run_times())
        self.log_metrics(record, step=self.agent_steps)

    def _evaluate(self, base_only: bool = False) -> dict:
        policy = SteeredPolicy(self.steering, None if base_only else self.sac.actor, deterministic=True)
        result = self.evaluator.run(policy)
        # keep each evaluation's videos apart: media/eval_<agent_steps>_test_<seed>.mp4
        videos = []
        for path in result.get("videos", []):
            new = os.path.join(os.path.dirname(path), f"eval_{self.agent_steps:06d}_{os.path.basename(path)}")
            os.replace(path, new)
            videos.append(new)
        record = self._log_eval(result, base_only)
        if self.wandb_run is not None:
            import wandb

            for v in videos:
                self.wandb_run.log({f"media/{os.path.basename(v)[:-4]}": wandb.Video(v, format="mp4")},
                                   step=self.agent_steps)
        log.info("eval at %d env steps: success %.3f%s", self.env_steps, record["eval/success_rate"],
                 " (base policy)" if base_only else "")
        return record

    def _log_eval(self, result: dict, base_only: bool, extra: dict | None = None) -> dict:
        record = {**self._counters(), "eval/success_rate": result["test/mean_score"],
                  "eval/mean_length": result["test/mean_length"], "eval/base_only": int(base_only),
                  # smoothness of the actions executed in evaluation, pooled over its episodes
                  **{f"eval/{k}": result[f"test/{k}"] for k in ("action_delta", "action_jerk")
                     if result.get(f"test/{k}") is not None},
                  **(extra or {}), **self._run_times()}
        self.log_metrics(record, step=self.agent_steps)
        return record

    def _log_base_eval(self) -> dict:
        """The step-0 evaluation from eval_base.py's log (training.base_eval_log), as the evaluator reports it."""
        b = self.base_eval
        result = {"test/mean_score": float(b["mean_score"]),
                  "test/mean_length": float(np.mean([e["length"] for e in b["episodes"]])),
                  "test/action_delta": b.get("action_delta"), "test/action_jerk": b.get("action_jerk")}
        record = self._log_eval(result, base_only=True, extra={"eval/from_base_eval_log": 1})
        log.info("eval at 0 env steps: success %.3f (base policy; read from %s)", record["eval/success_rate"],
                 self.cfg.training.base_eval_log)
        return record
