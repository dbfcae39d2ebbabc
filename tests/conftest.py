import os

# Headless rendering and quiet, deterministic CPU runs for every test.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

import zprl.common.config  # noqa: E402,F401  (OmegaConf resolvers used by the configs)

torch.set_num_threads(2)


@pytest.fixture
def repo_root():
    from zprl.data.paths import repo_root as root

    return root()
