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
so ``training.resume=True`` continues the very run that was interrupted. What is saved and how it is
restored lives in zprl/workspace/online_state.py (``OnlineCheckpointing``, mixed in here); the debug
sizes and the base-fits-task check in zprl/workspace/online_setup.py.
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
from gymnasium.vector import AutoresetMode
from omegaconf import DictConfig, OmegaConf

from zprl.common.checkpoint import BASE_SHA_FILE, file_sha256, weights_sha256
from zprl.common.errors import NonFiniteLoss, UserInputError
from zprl.common.seeding import set_seed
from zprl.devices import resolve_device
from zprl.env.vector_env import EnvGroups, RolloutEnvConfig, final_obs, join_obs, make_vector_env, step_info
from zprl.policy.checkpoint import load_base_policy
from zprl.policy.steered import SteeredPolicy
from zprl.policy.steering import Encoded
from zprl.rl.chunk import discounted_chunk_reward, env_steps
from zprl.rl.replay import EmbeddingReplayBuffer
from zprl.rl.smoothness import SmoothnessTracker
from zprl.workspace.base import BaseWorkspace, last_good_state
from zprl.workspace.online_setup import apply_debug_overrides, check_base_fits_task, read_base_eval_log
from zprl.workspace.online_state import OnlineCheckpointing, process_cpu_seconds

log = logging.getLogger("zprl")

# first seed of the episodes that replace ones lost to env faults (training seeds count up from
# online_task.train_start_seed, evaluation seeds from 100000)
FAULT_SEED_BASE = 10 ** 9

# SAC's losses: a non-finite one stops the run (NonFiniteLoss)
LOSS_TERMS = ("critic_loss", "actor_loss", "alpha_loss")


def fault_seeds(group: int, n_groups: int):
    """restart_seed(index, restarts) for the training envs of ``group``: the first seeds of the episodes
    that replace ones lost to env faults, from FAULT_SEED_BASE, disjoint between groups (one group:
    FAULT_SEED_BASE + restarts)."""
    return lambda index, restarts: FAULT_SEED_BASE + restarts * n_groups + group


def obs_to_torch(obs: dict, device, dtype=torch.float32) -> dict:
    return {k: torch.as_tensor(np.asarray(v), device=device, dtype=dtype) for k, v in obs.items()}


class OnlineWorkspace(OnlineCheckpointing, BaseWorkspace):
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

    def _make_envs(self) -> None:
        o = self.cfg.online_task
        shape_meta = OmegaConf.to_container(self.base_cfg.shape_meta, resolve=True)
        n_obs_steps = self.steering.policy.n_obs_steps
        train_cfg = RolloutEnvConfig(env_meta=self.env_meta, shape_meta=shape_meta, n_obs_steps=n_obs_steps,
                                     n_action_steps=self.n_action_steps, max_steps=o.max_steps, render_size=None,
                                     # image tasks render in the workers: on the policy's GPU, as the evaluator's
                                     render_device=str(self.device) if self.device.type == "cuda" else None)
        # a worker that dies, raises or hangs is replaced and its episode counted as a fault (truncated);
        # replacements start from seeds no training episode uses (and no other group's replacements)
        n_groups = self.n_env_groups
        sizes = [len(a) for a in np.array_split(np.arange(o.n_envs), n_groups)]
        envs = [make_vector_env(train_cfg, n, asynchronous=o.n_envs > 1, autoreset_mode=AutoresetMode.SAME_STEP,
                                restart_failed=True,
                                step_timeout=self.cfg.training.get("env_step_timeout_s"),
                                restart_seed=fault_seeds(g, n_groups))
                for g, n in enumerate(sizes)]
        self.envs = envs[0] if n_groups == 1 else EnvGroups(envs)
        self.evaluator = hydra.utils.instantiate(self.cfg.evaluator, _partial_=True)(
            output_dir=self.output_dir, env_meta=self.env_meta, shape_meta=shape_meta, n_obs_steps=n_obs_steps,
            n_action_steps=self.n_action_steps)

    def _close_envs(self) -> None:
        for name in ("envs", "evaluator"):
            if getattr(self, name) is not None:
                getattr(self, name).close()
                setattr(self, name, None)

    def _start_episodes(self) -> None:
        """Seeded first episodes; on resume, the episodes the checkpoint left in flight."""
        o = self.cfg.online_task
        seed0 = o.train_start_seed + self.agent_steps  # a checkpoint without episodes: fresh ones, still seeded
        obs, _ = self.envs.reset(seed=[seed0 + i for i in range(o.n_envs)])
        if self._in_flight is None:
            self.enc = self.steering.encode(obs_to_torch(obs, self.device))
            return
        self.envs.set_attr("restore_record", self._in_flight["episodes"])
        lengths = self.envs.call("restore_episode")  # replays each episode to where it was (checks its sim state)
        lost = [i for i, n in enumerate(lengths) if n is None]
        if lost:  # (a worker whose replay missed its recorded state is replaced at the next step, as a fault)
            log.warning("training env(s) %s could not replay their episode in flight: they start new ones, "
                        "counted as env faults; the rest of the resume is exact", lost)
        self.enc = Encoded(self._in_flight["enc_state"].to(self.device).clone(),
                           {k: v.to(self.device).clone() for k, v in self._in_flight["enc_parts"].items()})
        self._in_flight = None

    def _schedule(self) -> None:
        """The next periodic work, unless a checkpoint restored it."""
        t = self.cfg.training
        for name, every in (("next_log", t.log_every), ("next_eval", t.eval_every), ("next_ckpt", t.checkpoint_every)):
            if getattr(self, name) is None:
                setattr(self, name, self._next_multiple(every))

    @property
    def overlap(self) -> bool:
        """Overlapped updates: a round's updates are not run at once but spread over the next round's
        chunks, n_envs * utd of them while the workers simulate each chunk (the rate they accrue at),
        so the main process computes while the envs step. Same updates on the same buffer; the actor
        collecting round r+1 is part-way through round r's updates instead of past them."""
        return bool(self.cfg.training.get("overlap_updates", False)) and hasattr(self.envs, "step_async")

    def _collect(self) -> None:
        """One chunk in every training env, stored as one transition per env."""
        self.warm = self.agent_steps < self.cfg.training.warmup_agent_steps
        if isinstance(self.envs, EnvGroups):
            rl_action, step = self._act_and_step_groups()
        else:
            rl_action, step = self._act_and_step()
        self._store(self.enc, rl_action, *step)

    def _rl_action(self, enc: Encoded) -> torch.Tensor:
        t = self.cfg.training
        if self.warm:
            return self.steering.warmup_action(len(enc.state))
        # progressive exploration counts from the END of warm-up (0 on the first step after it)
        return self.steering.explore(self.sac.act(enc.state), self.agent_steps - t.warmup_agent_steps)

    def _owed_share(self) -> int:
        """Overlapped updates run per chunk: n_envs * utd of them, the rate they accrue at."""
        return max(1, int(round(self.cfg.online_task.n_envs * self.cfg.training.utd)))

    def _act_and_step(self):
        """All envs act on the current observations and step together."""
        rl_action = self._rl_action(self.enc)
        chunk = self.steering.act(self.enc, rl_action).cpu().numpy()
        if self.overlap:
            # the workers simulate this chunk while this chunk's share of owed updates runs
            self.envs.step_async(chunk)
            self._run_owed(at_most=self._owed_share())
            obs, _, term, trunc, raw_info = self.envs.step_wait()
        else:
            obs, _, term, trunc, raw_info = self.envs.step(chunk)
        next_enc = self.steering.encode(obs_to_torch(obs, self.device))
        return rl_action, (obs, term, trunc, step_info(raw_info), final_obs(raw_info, len(term)), next_enc)

    def _act_and_step_groups(self):
        """training.env_groups > 1: each group's chunk is computed and sent in turn, so group g+1's
        inference runs while group g simulates; after the owed updates, each group's new observations
        are encoded as it answers, while the later groups still simulate. Same data per iteration as
        one group; the SAC actor samples per group, so the random draws differ from the ungrouped loop."""
        rl_actions, parts = [], []
        for g, idx in enumerate(self.envs.groups):
            enc = self.enc.index(idx)
            rl_actions.append(self._rl_action(enc))
            self.envs.step_async(g, self.steering.act(enc, rl_actions[-1]).cpu().numpy())
        if self.overlap:
            self._run_owed(at_most=self._owed_share())
        for g in range(len(self.envs.groups)):
            obs, _, term, trunc, raw_info = self.envs.step_wait(g)
            parts.append((obs, term, trunc, step_info(raw_info), final_obs(raw_info, len(term)),
                          self.steering.encode(obs_to_torch(obs, self.device))))
        obs, term, trunc, info, finals, encs = zip(*parts)
        info = {k: np.concatenate([i[k] for i in info]) for k in info[0]}
        return torch.cat(rl_actions), (join_obs(list(obs)), np.concatenate(term), np.concatenate(trunc), info,
                                       [f for fs in finals for f in fs], Encoded.cat(list(encs)))

    def _store(self, enc: Encoded, rl_action, obs, term, trunc, info: dict, finals: list, next_enc: Encoded) -> None:
        """The transitions of one chunk in every env, the episode bookkeeping, the counters."""
        o = self.cfg.online_task
        reward = discounted_chunk_reward(info["chunk_rewards"], self.cfg.sac.gamma_step)
        term, trunc = np.asarray(term), np.asarray(trunc)
        done = term | trunc
        # a fault (worker replaced, non-finite step) truncated that env's episode: no transition is kept
        fault = np.asarray(info["fault"], bool)
        next_state, terminal = self._bootstrap_view(next_enc.state, done, term, trunc & ~fault, finals, obs)
        rows = (enc.state, rl_action, torch.as_tensor(reward, dtype=torch.float32), next_state, torch.as_tensor(terminal))
        if fault.any():
            rows = tuple(r[torch.as_tensor(~fault, device=r.device)] for r in rows)
        self.buffer.add(*rows)
        self.metrics.update(self.steering.diagnostics(enc, rl_action))
        n_exec = np.asarray(info["n_executed"])
        self.smooth.add(np.asarray(info["executed_actions"]), n_exec, done)
        self._count_episodes(np.asarray(info["success"]), done & ~fault)
        self.env_faults += int(fault.sum())
        self.enc = next_enc
        self.agent_steps += o.n_envs
        self.executed_env_steps += int(n_exec.sum())
        self.collected += int((~fault).sum())

    def _bootstrap_view(self, next_state, done, term, trunc, finals: list, obs):
        """(next_state, terminal) as stored. bootstrap=never: every episode end is terminal.
        bootstrap=truncation: a time-out bootstraps from the timed-out episode's final frame
        (``finals``; with SAME_STEP autoreset ``obs`` holds the new episode's first frame)."""
        if self.cfg.training.bootstrap != "truncation" or not (trunc & ~term).any():
            return next_state, done.astype(np.float32)
        # (a fault's truncation is not passed in as one: its episode has no final frame to bootstrap from)
        idx = np.flatnonzero(trunc & ~term)
        final = {k: np.stack([finals[i][k] for i in idx]) for k in obs}
        next_state = next_state.clone()
        next_state[torch.as_tensor(idx)] = self.steering.encode(obs_to_torch(final, self.device)).state
        return next_state, term.astype(np.float32)

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

    def _count_episodes(self, success: np.ndarray, done: np.ndarray) -> None:
        ended = np.flatnonzero(done)
        if len(ended):
            self.episodes_done += len(ended)
            self.successes_done += int(success[ended].sum())
            self.recent_success.extend(bool(s) for s in success[ended])
            self.success_last100.extend(bool(s) for s in success[ended])

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
