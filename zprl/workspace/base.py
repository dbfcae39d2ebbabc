"""What every workspace shares: the output directory, logs, W&B, and atomic checkpoints."""

from __future__ import annotations

import logging
import os

from omegaconf import DictConfig, OmegaConf

from zprl.common.checkpoint import atomic_save, load_checkpoint, remove_partial_saves
from zprl.common.config import reused_run_dir_message
from zprl.common.errors import UserInputError
from zprl.common.logging import JsonLinesLogger, init_wandb, setup_text_log
from zprl.common.machine import append_machine_record

log = logging.getLogger("zprl")


class BaseWorkspace:
    """Owns the run directory; subclasses own one training loop and say what a checkpoint holds."""

    step_key = "global_step"

    def __init__(self, cfg: DictConfig, output_dir: str | None = None):
        self.cfg = cfg
        self._output_dir = output_dir
        if cfg.training.get("num_threads"):
            import torch

            # On a busy CPU, intra-op threads that spin-wait for each other cost more than they give.
            torch.set_num_threads(int(cfg.training.num_threads))
        if cfg.training.get("keep_freed_memory", True):
            from zprl.common.memory import keep_freed_memory

            keep_freed_memory()  # a step's tensors reuse the last step's pages instead of faulting in new ones
        self.wandb_run = None
        self.json_logger: JsonLinesLogger | None = None

    @property
    def output_dir(self) -> str:
        if self._output_dir is None:
            from hydra.core.hydra_config import HydraConfig

            self._output_dir = HydraConfig.get().runtime.output_dir
        return self._output_dir

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.output_dir, "checkpoints")

    @property
    def latest_path(self) -> str:
        return os.path.join(self.checkpoint_dir, "latest.ckpt")

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def save_checkpoint(self, path: str | None = None) -> str:
        payload = {
            "cfg": OmegaConf.to_container(self.cfg, resolve=True),
            "workspace": type(self).__name__,
            "state": self.state_dict(),
            "wandb_id": getattr(self.wandb_run, "id", None),
        }
        return atomic_save(payload, path or self.latest_path)

    def resume_if_requested(self, tidy: bool = True) -> dict | None:
        """With training.resume=True and a latest.ckpt in the output dir, restore it exactly.

        Without it, an output dir that already holds a run is refused (before anything is written):
        continuing it by accident would mix two runs' logs and overwrite its checkpoints.
        tidy=False leaves partial saves for another process (the main one of several) to remove."""
        exists = os.path.isfile(self.latest_path)
        if not self.cfg.training.get("resume", False):
            if exists:
                raise UserInputError(reused_run_dir_message(self.output_dir))
            return None
        if not exists:
            return None
        if tidy:
            remove_partial_saves(self.checkpoint_dir)
        payload = load_checkpoint(self.latest_path, mmap=True)  # the replay buffer is copied in page by page
        self.check_resumable(payload)
        self.load_state_dict(payload["state"])
        log.info("resumed from %s", self.latest_path)
        return payload

    def check_resumable(self, payload: dict) -> None:
        """Raise one clear line when ``payload`` cannot continue this run (subclasses add checks)."""

    # -- logging -----------------------------------------------------------------------------
    def start_logging(self, resume_payload: dict | None, resume_step: int | None) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        os.makedirs(os.path.join(self.output_dir, "media"), exist_ok=True)
        setup_text_log(os.path.join(self.output_dir, "train.log"))
        self.json_logger = JsonLinesLogger(os.path.join(self.output_dir, "logs.json.txt"), self.step_key)
        # a fresh start (also after a kill before the first checkpoint) begins a new log
        self.json_logger.start(resume_step if resume_payload is not None else None, fresh=resume_payload is None)
        append_machine_record(self.output_dir, resume_step if resume_payload is not None and resume_step else 0,
                              fresh=resume_payload is None)
        run_id = resume_payload.get("wandb_id") if resume_payload else None
        self.wandb_run = init_wandb(self.cfg.logging, self.output_dir,
                                    OmegaConf.to_container(self.cfg, resolve=True), run_id=run_id)

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.json_logger.log(metrics)
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in metrics.items() if not isinstance(v, str)}, step=step)

    def finish_logging(self) -> None:
        if self.json_logger is not None:
            self.json_logger.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def last_good_state(latest_path: str) -> str:
    """What a run stopped by a fault leaves to continue from, as the end of its one-line message."""
    if os.path.isfile(latest_path):
        return f"The last good checkpoint is {latest_path}: rerun with training.resume=True to continue from it."
    return "No checkpoint had been written yet: rerun to start over."

