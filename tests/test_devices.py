"""training.device / -d: a device that does not exist here is one line, before anything is written."""

import pytest
import torch

from zprl.common.errors import UserInputError
from zprl.devices import resolve_device


@pytest.mark.parametrize("spec, count, expected", [
    ("cpu", 0, torch.device("cpu")),
    ("cuda", 1, torch.device("cuda:0")),      # bare cuda pinned to cuda:0
    ("cuda:1", 2, torch.device("cuda:1")),
    (torch.device("cuda:3"), 4, torch.device("cuda:3")),
])
def test_devices_that_exist(spec, count, expected):
    assert resolve_device(spec, cuda_count=count) == expected


@pytest.mark.parametrize("spec, count, words", [
    ("cuda:2", 2, r"training.device=cuda:2 does not exist: 2 CUDA GPU\(s\) visible here.*cuda:0..cuda:1"),
    ("cuda:0", 0, "training.device=cuda:0: no CUDA GPU is visible here"),
    ("gpu0", 1, "training.device='gpu0' is not a torch device"),
])
def test_devices_that_do_not_exist(spec, count, words, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    with pytest.raises(UserInputError, match=words) as err:
        resolve_device(spec, cuda_count=count)
    assert "\n" not in str(err.value)
    if spec.startswith("cuda"):  # says what this process sees
        assert "CUDA_VISIBLE_DEVICES='4,5'" in str(err.value)


def test_checkpoint_loading_checks_the_device_first(tmp_path):
    """eval_base.py, eval_sum.py and the online workspace load the base through load_base_policy."""
    from zprl.policy.checkpoint import load_base_policy

    with pytest.raises(UserInputError, match="device=cuda:7"):
        load_base_policy(str(tmp_path / "missing.ckpt"), device="cuda:7")


def test_no_code_pins_a_gpu_of_its_own(repo_root):
    """training.device=cuda:N reaches every tensor: nothing in the package or entry points moves work to
    an implicit GPU (.cuda(), a bare "cuda" device, torch.cuda.current_device / set_device)."""
    import pathlib
    import re

    root = pathlib.Path(repo_root)
    files = [*root.joinpath("zprl").rglob("*.py"), root / "train.py", root / "eval_base.py", root / "eval_sum.py"]
    pattern = re.compile(r"\.cuda\(|device=[\"']cuda[\"']|torch\.device\([\"']cuda[\"']\)|current_device\(|set_device\(")
    hits = [f"{f.relative_to(root)}:{i}: {line.strip()}" for f in files
            for i, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
