"""Undo Hydra's run directory when a run stops on bad input before writing anything of its own."""

import os
import shutil

_HYDRA_ONLY = {".hydra", "train.log", "eval.log"}


def remove_if_only_hydra_files(output_dir: str) -> bool:
    if not os.path.isdir(output_dir):
        return False
    entries = set(os.listdir(output_dir))
    if not entries <= _HYDRA_ONLY:
        return False
    shutil.rmtree(output_dir)
    return True
