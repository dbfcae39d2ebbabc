"""The offline (imitation) loop: one workspace for every task and observation type."""

from __future__ import annotations

import copy
import logging
import math
import os

import hydra
import torch
import tqdm
from omegaconf import DictConfig, open_dict

from zprl.common.checkpoint import TopKCheckpoints
from zprl.common.errors import NonFiniteLoss
from zprl.common.seeding import get_rng_states, set_rng_states, set_seed
from zprl.devices import resolve_device
from zprl.workspace.base import BaseWorkspace, last_good_state

log = logging.getLogger("zprl")


def to_device(batch, device):
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


def apply_debug_overrides(cfg: DictConfig) -> None:
    """training.debug=True: a minutes-long smoke run through every stage of the loop."""
    with open_dict(cfg):
        t = cfg.training
        t.num_epochs, t.max_train_steps, t.max_val_steps = 2, 3, 3
        t.rollout_every = t.checkpoint_every = t.val_every = 1
        t.lr_warmup_steps = 1
        for key in ("dataloader", "val_dataloader"):
            cfg[key].batch_size = min(cfg[key].batch_size, 16)
            cfg[key].num_workers = 0
            cfg[key].persistent_workers = False
        r = cfg.task.env_runner
        r.n_train, r.n_train_vis, r.n_test, r.n_test_vis = 1, 1, 1, 1
        r.max_steps = min(r.max_steps, 60)


class OfflineWorkspace(BaseWorkspace):
    step_key = "global_step"

    def __init__(self, cfg: DictConfig, output_dir: str | None = None):
        super().__init__(cfg, output_dir)
        if cfg.training.debug:
            apply_debug_overrides(cfg)
        resolve_device(cfg.training.device)  # before anything is built or written
        set_seed(cfg.training.seed)
        self.model = hydra.utils.instantiate(cfg.policy)
        self.ema_model = copy.deepcopy(self.model) if cfg.training.use_ema else None
        self.optimizer = hydra.utils.instantiate(cfg.optimizer, params=self.model.parameters())
        self.lr_scheduler = None  # these three need the dataset's size or normalizer: built in run()
        self.ema = None
        self.topk = None
        self.global_step = 0
        self.epoch = 0
        self.env_meta = None  # saved in checkpoints so evaluation needs no dataset

    # -- checkpoint contents ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema_model": self.ema_model.state_dict() if self.ema_model is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "topk": self.topk.state_dict() if self.topk is not None else None,
            "global_step": self.global_step,
            "epoch": self.epoch,
            "rng": get_rng_states(),
            "env_meta": self.env_meta,
        }

    def check_resumable(self, payload: dict) -> None:
        from omegaconf import OmegaConf

        from zprl.policy.checkpoint import require_current_sampler

        require_current_sampler(OmegaConf.create(payload["cfg"]), self.latest_path)

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema_model is not None and state["ema_model"] is not None:
            self.ema_model.load_state_dict(state["ema_model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.topk.load_state_dict(state["topk"])
        self.global_step, self.epoch = state["global_step"], state["epoch"]
        set_rng_states(state["rng"])

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        # Everything that can fail on bad input happens before the first file is written.
        dataset = hydra.utils.instantiate(cfg.task.dataset)
        val_dataset = dataset.get_validation_dataset()
        self.env_meta = env_meta = read_env_meta(cfg.task.dataset.dataset_path)

        from diffusers.optimization import get_scheduler

        from zprl.model.ema import make_ema

        train_loader = torch.utils.data.DataLoader(dataset, **cfg.dataloader)
        val_loader = torch.utils.data.DataLoader(val_dataset, **cfg.val_dataloader) if len(val_dataset) else None
        normalizer = dataset.get_normalizer()
        device = resolve_device(cfg.training.device)
        self.model.set_normalizer(normalizer)
        self.model.to(device)
        if self.ema_model is not None:
            self.ema_model.set_normalizer(normalizer)
            self.ema_model.to(device)
            # built after the normalizer exists and on the training device (its shadow weights live there)
            self.ema = make_ema(self.model, power=cfg.ema.power, max_value=cfg.ema.max_value)
        steps_per_epoch = len(train_loader) if cfg.training.max_train_steps is None else min(
            len(train_loader), cfg.training.max_train_steps)
        self.lr_scheduler = get_scheduler(
            cfg.training.lr_scheduler, optimizer=self.optimizer,
            num_warmup_steps=cfg.training.lr_warmup_steps,
            num_training_steps=math.ceil(steps_per_epoch * cfg.training.num_epochs / cfg.training.gradient_accumulate_every),
        )
        tk = cfg.checkpoint.topk
        self.topk = TopKCheckpoints(self.checkpoint_dir, k=tk.k, mode=tk.mode, format_str=tk.format_str)

        resumed = self.resume_if_requested()
        if resumed is not None:
            self.topk.prune()  # files a kill left between a top-k save and the checkpoint naming it
        _optimizer_to(self.optimizer, device)
        self.start_logging(resumed, self.global_step - 1 if resumed else None)
        log.info("output dir %s; %d training samples, %d validation samples", self.output_dir, len(dataset), len(val_dataset))
        env_runner = hydra.utils.instantiate(cfg.task.env_runner, output_dir=self.output_dir, env_meta=env_meta)

        last = {}
        try:
            while self.epoch < cfg.training.num_epochs:
                epoch_log = self._train_epoch(train_loader, device, steps_per_epoch)
                policy = self.model
                if self.ema is not None:
                    policy = self.ema.copy_to(self.ema_model)  # rollouts, validation and checkpoints use EMA weights
                policy.eval()
                # Periodic work happens after every k-th completed epoch and after the last one.
                if val_loader is not None and self._due(cfg.training.val_every):
                    epoch_log["val_loss"] = self._validate(policy, val_loader, device)
                if self._due(cfg.training.rollout_every):
                    epoch_log.update(self._rollout(env_runner, policy))
                policy.train()
                is_ckpt_epoch = self._due(cfg.training.checkpoint_every)
                self.epoch += 1
                self.log_metrics(epoch_log, step=self.global_step)
                if is_ckpt_epoch:
                    self._checkpoint(epoch_log)
                last = epoch_log
        finally:
            env_runner.close()
            self.finish_logging()
        return last

    def _due(self, every: int) -> bool:
        return (self.epoch + 1) % every == 0 or self.epoch + 1 == self.cfg.training.num_epochs

    def _train_epoch(self, loader, device, steps_per_epoch) -> dict:
        cfg = self.cfg
        accumulate = cfg.training.gradient_accumulate_every
        losses = []
        self.model.train()
        with tqdm.tqdm(loader, total=steps_per_epoch, desc=f"epoch {self.epoch}", leave=False,
                       mininterval=cfg.training.tqdm_interval_sec) as bar:
            for i, batch in enumerate(bar):
                batch = to_device(batch, device)
                loss, metrics = self.model.compute_loss(batch)
                if not torch.isfinite(loss):  # stop before it reaches the weights; latest.ckpt stays the last good one
                    raise NonFiniteLoss(self._non_finite_message(loss, metrics))
                (loss / accumulate).backward()
                if self.global_step % accumulate == 0:
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.lr_scheduler.step()
                if self.ema is not None:
                    self.ema.step(self.model)
                losses.append(loss.item())
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
                step_log = {"train_loss": loss.item(), "global_step": self.global_step, "epoch": self.epoch,
                            "lr": self.lr_scheduler.get_last_lr()[0],
                            **{f"train/{k}": float(v) for k, v in metrics.items()}}
                if i + 1 < steps_per_epoch:  # the epoch's last step is logged with the epoch summary
                    self.log_metrics(step_log, step=self.global_step)
                self.global_step += 1
                if i + 1 >= steps_per_epoch:
                    break
        step_log["train_loss"] = sum(losses) / max(len(losses), 1)
        return step_log

    def _non_finite_message(self, loss, metrics) -> str:
        terms = [f"train/{k}={float(v)}" for k, v in metrics.items() if not math.isfinite(float(v))]
        return (f"non-finite loss at global step {self.global_step} (epoch {self.epoch}): train_loss={float(loss)}"
                f"{' from ' + ', '.join(terms) if terms else ''}; stopped before the weights changed. "
                + last_good_state(self.latest_path))

    @torch.no_grad()
    def _validate(self, policy, loader, device) -> float:
        losses = []
        for i, batch in enumerate(loader):
            if self.cfg.training.max_val_steps is not None and i >= self.cfg.training.max_val_steps:
                break
            loss, _ = policy.compute_loss(to_device(batch, device))
            losses.append(loss.item())
        return sum(losses) / max(len(losses), 1)

    def _rollout(self, env_runner, policy) -> dict:
        import wandb

        result = env_runner.run(policy)
        # "test/mean_score" -> "test_mean_score": the name top-k checkpointing monitors.
        out = {k.replace("/", "_"): v for k, v in result.items() if isinstance(v, (int, float))}
        for path in result.get("videos", []):
            name = os.path.splitext(os.path.basename(path))[0]
            if self.cfg.logging.mode != "disabled":
                self.wandb_run.log({f"media/{name}": wandb.Video(path, format="mp4")}, step=self.global_step)
        return out

    def _checkpoint(self, epoch_log: dict) -> None:
        # The top-k slot is decided first, so latest.ckpt carries the updated table; the new top-k
        # file is written before latest.ckpt names it and the displaced one is deleted after, so a
        # kill anywhere leaves a table whose files exist (an extra file is pruned on resume).
        monitor = self.cfg.checkpoint.topk.monitor_key
        topk_path = self.topk.path_for(self.epoch - 1, float(epoch_log[monitor])) if monitor in epoch_log else None
        if topk_path is not None:
            self.save_checkpoint(topk_path)
        if self.cfg.checkpoint.save_last_ckpt:
            self.save_checkpoint()
        self.topk.prune()


def read_env_meta(dataset_path: str) -> dict:
    import zprl.env.robomimic_env  # noqa: F401  (makes robomimic importable)
    import robomimic.utils.file_utils as FileUtils

    return FileUtils.get_env_metadata_from_dataset(dataset_path)


def _optimizer_to(optimizer, device) -> None:
    for state in optimizer.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                state[k] = v.to(device)
