"""Run logging: JSON lines in logs.json.txt, a plain-text train.log, and optional W&B."""

from __future__ import annotations

import json
import logging
import math
import numbers
import os


class JsonLinesLogger:
    """Appends one JSON object per call to ``logs.json.txt``.

    On resume, lines whose ``step_key`` value is beyond the checkpoint's step are dropped first,
    so the file matches the state the run continues from.
    """

    def __init__(self, path: str, step_key: str = "global_step"):
        self.path, self.step_key = path, step_key
        self._file = None

    def start(self, resume_step: int | None = None, fresh: bool = False) -> "JsonLinesLogger":
        """resume_step: keep the records up to it; fresh: begin an empty file."""
        if fresh and os.path.exists(self.path):
            os.remove(self.path)
        if resume_step is not None and os.path.exists(self.path):
            kept = []
            with open(self.path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a crash
                    if rec.get(self.step_key, -1) <= resume_step:
                        kept.append(line if line.endswith("\n") else line + "\n")
            with open(self.path, "w") as f:
                f.writelines(kept)
        self._file = open(self.path, "a")
        return self

    def log(self, data: dict) -> None:
        clean = {k: _plain(v) for k, v in data.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _plain(v):
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        v = float(v)
        return v if math.isfinite(v) else str(v)
    if hasattr(v, "item"):
        return _plain(v.item())
    return v


def read_json_lines(path: str) -> list[dict]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def setup_text_log(path: str) -> logging.Logger:
    """The run's ``train.log``: everything the zprl loggers say, with timestamps."""
    logger = logging.getLogger("zprl")
    logger.setLevel(logging.INFO)
    target = os.path.abspath(path)
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == target for h in logging.getLogger().handlers):
        return logger  # Hydra's job logging already writes <job>.log there
    for h in list(logger.handlers):
        if isinstance(h, logging.FileHandler):
            logger.removeHandler(h)
            h.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


def init_wandb(cfg_logging, output_dir: str, config: dict, run_id: str | None = None):
    """W&B run with mode online / offline, or None with mode disabled: wandb is then never imported, so
    a machine without it (e.g. a GPU node with only the training stack) runs with logs.json.txt alone."""
    mode = cfg_logging.get("mode", "disabled")
    if mode not in ("online", "offline", "disabled"):
        from zprl.common.errors import UserInputError

        raise UserInputError(f"logging.mode={mode!r} is not one of online, offline, disabled")
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(
        mode=mode,
        project=cfg_logging.get("project", "zprl"),
        name=cfg_logging.get("name"),
        group=cfg_logging.get("group"),
        tags=list(cfg_logging.get("tags") or []),
        dir=output_dir,
        config=config,
        id=run_id,
        resume="allow" if run_id else None,
    )
