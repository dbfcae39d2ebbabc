"""What an online run saves and restores: the checkpoint half of ``OnlineWorkspace``.

``OnlineCheckpointing`` is mixed into the workspace (zprl/workspace/online.py) and reads the attributes
its ``__init__`` sets: the base checkpoint's identity, steering, SAC, replay buffer, sample generator,
counters, the attributes named in ``LOOP_STATE``, the smoothness tracker, the training envs and their
encoded observations, and the run clock. Everything one loop iteration leaves for the next is saved,
including each training env's episode in flight, so ``training.resume=True`` continues the very run
that was interrupted (tests/test_kill_resume.py, slow).
"""

from __future__ import annotations

import copy
import logging
import os
import time

from omegaconf import OmegaConf

from zprl.common.checkpoint import atomic_save
from zprl.common.errors import UserInputError
from zprl.common.seeding import get_rng_states, set_rng_states

log = logging.getLogger("zprl")

# The loop's own state besides counters, SAC, replay and RNGs: what one iteration leaves for the next.
LOOP_STATE = ("collected", "pending", "metrics", "recent_success", "warm", "next_log", "next_eval", "next_ckpt",
              "last_eval")


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


class OnlineCheckpointing:
    """State, run clock and checkpoints of an online run (mixed into OnlineWorkspace)."""

    def _run_times(self) -> dict:
        """``time/wall_s`` and ``time/cpu_s`` of the run so far (resumed segments summed); CPU time
        counts this process and its env worker processes, so cpu_s / wall_s is the cores it kept busy."""
        (wall0, cpu0), (wall_off, cpu_off) = self._clock_start, self._clock_offset
        # A worker that exited but is not yet reaped is in neither of process_cpu_seconds' sums, so
        # the raw figure can step back; the reported clock never does.
        cpu = max(cpu_off + process_cpu_seconds() - cpu0, self._cpu_reported)
        self._cpu_reported = cpu
        return {"time/wall_s": wall_off + time.monotonic() - wall0, "time/cpu_s": cpu}

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
                         "episodes": self.episodes_done, "successes": self.successes_done, "updates": self.updates,
                         "env_faults": self.env_faults},
            "success_last100": [bool(x) for x in self.success_last100],
            "loop": {**{name: getattr(self, name) for name in LOOP_STATE},
                     "smoothness": {k: v for k, v in vars(self.smooth).items()}},
            "in_flight": self._episodes_in_flight(),
            "time": self._run_times(),
            "rng": get_rng_states(),
        }

    def _episodes_in_flight(self) -> dict | None:
        """Each training env's episode so far (its reset RNG state and executed actions) and the
        encoded current observations: what resume needs to continue those very episodes."""
        if self.envs is None or self.enc is None:
            return None
        episodes = list(self.envs.call("episode_record"))
        if any(e is None for e in episodes):  # a worker died since the last step: resume would start fresh
            log.warning("an env worker did not answer for the checkpoint; a resume from it starts fresh episodes")
            return None
        return {"episodes": episodes,
                "enc_state": self.enc.state.cpu(), "enc_parts": {k: v.cpu() for k, v in self.enc.parts.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["base_ckpt_sha256"] != self.base_ckpt_sha256:
            raise UserInputError(f"cannot resume: {self.base_ckpt_path} is not the base checkpoint this run started "
                                 f"from (sha256 differs); pass the original online_task.base_ckpt")
        self.steering.load_extra_state(state["steering"])
        self.sac.load_state_dict(state["sac"])
        if state["replay"] is not None:
            self.buffer.load_state_dict(state["replay"])
        else:  # a step_XXXXXX.ckpt copied over latest.ckpt (to go back): the weights, not the data
            log.warning("the checkpoint holds no replay buffer (step_XXXXXX.ckpt files do not): the run goes on "
                        "from agent step %d with an empty buffer, so it is not the run it was; only latest.ckpt "
                        "continues a run exactly", state["counters"]["agent_steps"])
        self.sample_generator.set_state(state["sample_generator"])
        c = state["counters"]
        self.agent_steps, self.executed_env_steps = c["agent_steps"], c["executed_env_steps"]
        self.episodes_done, self.successes_done, self.updates = c["episodes"], c["successes"], c["updates"]
        self.env_faults = c.get("env_faults", 0)
        self.success_last100.clear()
        self.success_last100.extend(state.get("success_last100", []))  # absent in older checkpoints
        loop = state.get("loop")  # absent in older checkpoints: a new round, fresh episodes
        if loop is not None:
            for name in LOOP_STATE:
                setattr(self, name, copy.deepcopy(loop[name]))
            if len(loop["smoothness"]["history"]) == len(self.smooth.history):  # (same n_envs)
                self.smooth.__dict__.update(copy.deepcopy(loop["smoothness"]))
        in_flight = state.get("in_flight")
        if in_flight is not None and len(in_flight["episodes"]) != self.cfg.online_task.n_envs:
            log.warning("the checkpoint has %d training episodes in flight, this run has online_task.n_envs=%d: "
                        "starting fresh episodes", len(in_flight["episodes"]), self.cfg.online_task.n_envs)
            in_flight = None
        self._in_flight = in_flight
        saved = state.get("time", {})
        self._clock_start = (time.monotonic(), process_cpu_seconds())
        self._clock_offset = (float(saved.get("time/wall_s", 0.0)), float(saved.get("time/cpu_s", 0.0)))
        self._cpu_reported = self._clock_offset[1]
        set_rng_states(state["rng"])

    def save_step_checkpoint(self) -> str:
        """checkpoints/step_XXXXXX.ckpt (no replay buffer: it lives in latest.ckpt) + latest.ckpt."""
        state = self.state_dict(with_buffer=False)
        payload = {"cfg": OmegaConf.to_container(self.cfg, resolve=True), "workspace": type(self).__name__,
                   "state": state, "wandb_id": getattr(self.wandb_run, "id", None)}
        path = atomic_save(payload, os.path.join(self.checkpoint_dir, f"step_{self.agent_steps:06d}.ckpt"))
        payload["state"] = {**state, "replay": self.buffer.state_dict()}
        atomic_save(payload, self.latest_path)
        return path
