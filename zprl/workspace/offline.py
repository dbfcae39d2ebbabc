"""The offline (imitation) loop: one workspace for every task and observation type."""

from __future__ import annotations

import contextlib
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
from zprl.model.batch_shard import batch_shard
from zprl.workspace import distributed
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
        r.n_train, r.n_test = 1, 1
        # at most one video each: 0 stays 0 (a machine without ffmpeg, or no videos wanted)
        r.n_train_vis, r.n_test_vis = min(r.n_train_vis, 1), min(r.n_test_vis, 1)
        r.max_steps = min(r.max_steps, 60)


class OfflineWorkspace(BaseWorkspace):
    """One process, or N under ``accelerate launch`` (zprl/workspace/distributed.py): N processes
    train on slices of one global batch of ``dataloader.batch_size x N``; the main process alone
    validates, rolls out, logs and checkpoints."""

    step_key = "global_step"
    multi_process = True  # train.py lets accelerate launch start this workspace in N processes

    def __init__(self, cfg: DictConfig, output_dir: str | None = None):
        super().__init__(cfg, output_dir)
        if cfg.training.debug:
            apply_debug_overrides(cfg)
        device = resolve_device(cfg.training.device)  # before anything is built or written
        self.accel = accel = distributed.make_accelerator(cfg, device)
        # one process: training.device as always; N: one device per process (cuda:<local rank>, or cpu)
        self.device = device if accel.num_processes == 1 else (
            torch.device("cpu") if accel.device.type == "cpu" else accel.device)
        if accel.num_processes > 1:
            # the main process's run dir for all (the others' Hydra made none: train.py)
            self._output_dir = distributed.broadcast_object(accel, self.output_dir if accel.is_main_process else None)
            if not accel.is_main_process:
                log.setLevel(logging.WARNING)  # train.log and the console hear the main process only
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
            "num_processes": self.accel.num_processes,
            **({"grad_scaler": self.accel.scaler.state_dict()} if self.accel.scaler is not None else {}),
        }

    def check_resumable(self, payload: dict) -> None:
        from omegaconf import OmegaConf

        from zprl.policy.checkpoint import require_current_sampler

        require_current_sampler(OmegaConf.create(payload["cfg"]), self.latest_path)
        saved, now = payload["state"].get("num_processes", 1), self.accel.num_processes
        if saved != now:
            from zprl.common.errors import UserInputError

            raise UserInputError(
                f"{self.latest_path} was trained by {saved} process(es) and this run has {now}: the global batch "
                f"(dataloader.batch_size x processes) and the data order would change; resume with "
                f"{'python train.py' if saved == 1 else f'accelerate launch --num_processes {saved}'}")

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
        if self.accel.scaler is not None and state.get("grad_scaler") is not None:
            self.accel.scaler.load_state_dict(state["grad_scaler"])
        set_rng_states(state["rng"])

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        accel, main = self.accel, self.accel.is_main_process
        # Everything that can fail on bad input happens before the first file is written.
        dataset = hydra.utils.instantiate(cfg.task.dataset)  # N processes: the cache is built under a file lock
        val_dataset = dataset.get_validation_dataset()
        self.env_meta = env_meta = read_env_meta(cfg.task.dataset.dataset_path)

        from diffusers.optimization import get_scheduler

        from zprl.model.ema import make_ema

        train_loader = distributed.train_loader(dataset, cfg.dataloader, accel)
        # validation, like rollouts, runs in the main process only, on the whole validation split
        val_loader = torch.utils.data.DataLoader(val_dataset, **cfg.val_dataloader) if len(val_dataset) and main else None
        # computed once, by the main process; every process gets exactly its values
        normalizer = distributed.broadcast_object(accel, dataset.get_normalizer() if main else None)
        device = self.device
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

        # every process loads the same checkpoint; only the main one tidies the directory
        resumed = self.resume_if_requested(tidy=main)
        if resumed is not None and main:
            self.topk.prune()  # files a kill left between a top-k save and the checkpoint naming it
        _optimizer_to(self.optimizer, device)
        # DDP around the loss (N processes); autocast and loss scaling (training.mixed_precision); else as is
        self._loss_module, self._optimizer = accel.prepare(distributed.LossModule(self.model), self.optimizer)
        env_runner = None
        if main:
            self.start_logging(resumed, self.global_step - 1 if resumed else None)
            log.info("output dir %s; %d training samples, %d validation samples", self.output_dir, len(dataset), len(val_dataset))
            if accel.num_processes > 1:
                log.info("accelerate: %d processes (%s) on %s, global batch %d = %d per process, mixed precision %s",
                         accel.num_processes, accel.distributed_type.value, device,
                         cfg.dataloader.batch_size * accel.num_processes, cfg.dataloader.batch_size, accel.mixed_precision)
            env_runner = hydra.utils.instantiate(cfg.task.env_runner, output_dir=self.output_dir, env_meta=env_meta)
        distributed.sync_rng_from_main(accel)

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
                if main and self._due(cfg.training.rollout_every):
                    epoch_log.update(self._rollout(env_runner, policy))
                policy.train()
                is_ckpt_epoch = self._due(cfg.training.checkpoint_every)
                self.epoch += 1
                self.log_metrics(epoch_log, step=self.global_step)
                if is_ckpt_epoch and main:
                    self._checkpoint(epoch_log)
                # the others wait here for the main process, then continue on its random stream
                distributed.sync_rng_from_main(accel)
                last = epoch_log
        finally:
            if env_runner is not None:
                env_runner.close()
            self.finish_logging()
        return last

    def log_metrics(self, metrics: dict, step: int) -> None:
        if self.accel.is_main_process:
            super().log_metrics(metrics, step)

    def _due(self, every: int) -> bool:
        return (self.epoch + 1) % every == 0 or self.epoch + 1 == self.cfg.training.num_epochs

    def _train_epoch(self, loader, device, steps_per_epoch) -> dict:
        cfg = self.cfg
        accumulate = cfg.training.gradient_accumulate_every
        accel = self.accel
        losses = []
        self._loss_module.train()
        with tqdm.tqdm(loader, total=steps_per_epoch, desc=f"epoch {self.epoch}", leave=False,
                       mininterval=cfg.training.tqdm_interval_sec, disable=not accel.is_main_process) as bar:
            for i, batch in enumerate(bar):
                batch = to_device(batch, device)
                stepping = self.global_step % accumulate == 0
                # N processes: gradients are averaged over them (DDP) only on steps that update the weights
                with (contextlib.nullcontext() if stepping else accel.no_sync(self._loss_module)):
                    with batch_shard(accel.num_processes, accel.process_index):
                        loss, metrics = self._loss_module(batch)
                    value, metrics = self._mean_over_processes(loss, metrics)
                    if not math.isfinite(value):  # stop before it reaches the weights; latest.ckpt stays the last good one
                        raise NonFiniteLoss(self._non_finite_message(value, metrics))
                    accel.backward(loss / accumulate)
                if stepping:
                    self._optimizer.step()
                    self._optimizer.zero_grad(set_to_none=True)
                    self.lr_scheduler.step()
                if self.ema is not None:
                    self.ema.step(self.model)
                losses.append(value)
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
                step_log = {"train_loss": value, "global_step": self.global_step, "epoch": self.epoch,
                            "lr": self.lr_scheduler.get_last_lr()[0],
                            **{f"train/{k}": float(v) for k, v in metrics.items()}}
                if i + 1 < steps_per_epoch:  # the epoch's last step is logged with the epoch summary
                    self.log_metrics(step_log, step=self.global_step)
                self.global_step += 1
                if i + 1 >= steps_per_epoch:
                    break
        step_log["train_loss"] = sum(losses) / max(len(losses), 1)
        return step_log

    def _mean_over_processes(self, loss, metrics: dict) -> tuple[float, dict]:
        """The loss's value and metrics for logs and the non-finite check. N processes: their means over
        the processes' slices, which (equal slices) are the global batch's, and the same on every
        process, so all stop together on a non-finite loss."""
        if self.accel.num_processes == 1:
            return loss.item(), metrics
        local = torch.tensor([loss.item(), *(float(v) for v in metrics.values())], dtype=torch.float64,
                             device=self.device)
        values = self.accel.reduce(local, reduction="mean").tolist()
        return values[0], dict(zip(metrics, values[1:]))

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
        result = env_runner.run(policy)
        # "test/mean_score" -> "test_mean_score": the name top-k checkpointing monitors.
        out = {k.replace("/", "_"): v for k, v in result.items() if isinstance(v, (int, float))}
        for path in result.get("videos", []):
            name = os.path.splitext(os.path.basename(path))[0]
            if self.wandb_run is not None:
                import wandb

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
