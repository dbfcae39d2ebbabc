"""Collection for the online loop: the training envs, one chunk in each per iteration, and its transitions.

``OnlineCollection`` is the collecting half of ``OnlineWorkspace`` (zprl/workspace/online.py), mixed in as
``OnlineCheckpointing`` is; it reads the attributes the workspace's ``__init__`` sets (steering, SAC,
replay buffer, counters, smoothness tracker, ``enc``) and advances them. One iteration (``_collect``):
every training env acts on its current observations (warm-up action or the SAC actor's, through the
steering interface), steps one chunk (all envs together, or in ``training.env_groups`` groups whose
inference and simulation interleave), and each env's chunk is stored as one transition, with the
episode bookkeeping that the logs and the checkpoint read.
"""

from __future__ import annotations

import logging

import hydra
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from omegaconf import OmegaConf

from zprl.env.vector_env import EnvGroups, RolloutEnvConfig, final_obs, join_obs, make_vector_env, step_info
from zprl.policy.steering import Encoded
from zprl.rl.chunk import discounted_chunk_reward

log = logging.getLogger("zprl")

# first seed of the episodes that replace ones lost to env faults (training seeds count up from
# online_task.train_start_seed, evaluation seeds from 100000)
FAULT_SEED_BASE = 10 ** 9

def fault_seeds(group: int, n_groups: int):
    """restart_seed(index, restarts) for the training envs of ``group``: the first seeds of the episodes
    that replace ones lost to env faults, from FAULT_SEED_BASE, disjoint between groups (one group:
    FAULT_SEED_BASE + restarts)."""
    return lambda index, restarts: FAULT_SEED_BASE + restarts * n_groups + group


def obs_to_torch(obs: dict, device, dtype=torch.float32) -> dict:
    return {k: torch.as_tensor(np.asarray(v), device=device, dtype=dtype) for k, v in obs.items()}


class OnlineCollection:
    """The training envs and what one loop iteration collects from them (mixed into OnlineWorkspace)."""

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
        # a fault's chunk (e.g. non-finite actions decoded from a blown-up latent) is not a smoothness sample
        self.smooth.add(np.asarray(info["executed_actions"]), np.where(fault, 0, n_exec), done)
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

    def _count_episodes(self, success: np.ndarray, done: np.ndarray) -> None:
        ended = np.flatnonzero(done)
        if len(ended):
            self.episodes_done += len(ended)
            self.successes_done += int(success[ended].sum())
            self.recent_success.extend(bool(s) for s in success[ended])
            self.success_last100.extend(bool(s) for s in success[ended])
