"""OmegaConf resolvers our configs use; imported by the entry points and tests before composing."""

from __future__ import annotations

from omegaconf import OmegaConf

from zprl.data.paths import repo_root

# Default dataset paths are relative to the repository, wherever train.py is launched from.
if not OmegaConf.has_resolver("repo_root"):
    OmegaConf.register_new_resolver("repo_root", repo_root)

CONFIG_DIR = repo_root() + "/config"
