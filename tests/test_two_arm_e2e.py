"""The two-arm path from data to steering on TwoArmTransport: a generated demo (14-D delta actions)
converted to 20-D absolute actions, an offline debug run, eval_base.py, a ZPRL online debug run with
20-D chunks executed by both arms, and eval_sum.py on its checkpoint, with low-dim observations and
with the task's four cameras."""

import json
import os

import pytest

from conftest import OFFLINE_CONFIG, compose_config, run_online, tiny_offline_overrides

pytestmark = pytest.mark.slow  # transport episodes are long and two Pandas step slowly


def _transport_file(tmp_path_factory, obs: str) -> str:
    from zprl.data.convert_abs import convert_file
    from zprl.data.generate_demos import generate_demos

    d = tmp_path_factory.mktemp(f"transport_{obs}")
    s = generate_demos("transport", 1, quality="expert", obs=obs, seed=0, output=str(d / "delta.hdf5"),
                       show_progress=False)
    assert s["kept"] == 1
    convert_file(str(d / "delta.hdf5"), str(d / "abs.hdf5"), check=False, show_progress=False)
    return str(d / "abs.hdf5")


def _assert_pipeline(dataset: str, task: str, online_task: str, tmp_path, extra_offline=None):
    import eval_base
    import eval_sum
    from zprl.common.checkpoint import load_checkpoint

    from omegaconf import OmegaConf

    from zprl.workspace.offline import OfflineWorkspace

    overrides = tiny_offline_overrides(dataset, task=task, **{"task.env_runner.max_steps": 24, **(extra_offline or {})})
    if "image" in task:  # the task's own image encoder (ResNet18 per camera); the tiny MLP sizes are low-dim only
        overrides = [o for o in overrides if not o.startswith("task.obs_encoder.")]
    cfg = compose_config(OFFLINE_CONFIG, overrides)
    OmegaConf.resolve(cfg)
    workspace = OfflineWorkspace(cfg, output_dir=str(tmp_path / "offline"))
    workspace.run()
    base = os.path.join(tmp_path / "offline", "checkpoints", "latest.ckpt")
    assert workspace.model.action_dim == 20  # two arms x (pos 3, rot6d 6, gripper 1)

    assert eval_base.main(["-c", base, "-o", str(tmp_path / "eval_base"), "-d", "cpu", "-n", "2", "--n_vis", "1",
                           "--n_envs", "2"]) == 0
    eb = json.load(open(tmp_path / "eval_base" / "eval_log.json"))
    assert [e["seed"] for e in eb["episodes"]] == [100000, 100001] and eb["max_steps"] == 24
    assert os.path.isfile(tmp_path / "eval_base" / "media" / "test_100000.mp4")

    online, last = run_online(base, tmp_path / "online", online_task=online_task,
                              **{"online_task.max_steps": 24, "training.base_eval_log": tmp_path / "eval_base" / "eval_log.json"})
    assert online.steering.policy.action_dim == 20 and last["agent_steps"] == 64
    # one transition per env and chunk (2 envs x 32 chunks, no faults)
    assert len(online.buffer) == 64
    ckpt = os.path.join(tmp_path / "online", "checkpoints", "latest.ckpt")
    assert load_checkpoint(ckpt)["state"]["counters"]["agent_steps"] == 64

    assert eval_sum.main(["-c", ckpt, "-o", str(tmp_path / "eval_sum"), "-d", "cpu", "-n", "2", "--n_vis", "0",
                          "--n_envs", "2"]) == 0
    es = json.load(open(tmp_path / "eval_sum" / "eval_log.json"))
    assert es["n_episodes"] == 2 and es["agent_steps"] == 64 and es["steering"]["name"] == "zprl"


def test_two_arm_lowdim_e2e(tmp_path_factory, tmp_path):
    _assert_pipeline(_transport_file(tmp_path_factory, "low_dim"), "transport_lowdim_abs", "transport_lowdim_abs", tmp_path)


def test_two_arm_image_e2e(tmp_path_factory, tmp_path):
    # four 84x84 cameras, as robomimic's transport image files have them
    _assert_pipeline(_transport_file(tmp_path_factory, "image"), "transport_image_abs", "transport_image_abs", tmp_path,
              extra_offline={"dataloader.batch_size": 8, "val_dataloader.batch_size": 8})
