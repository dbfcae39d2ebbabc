"""benchmarks/peer_check_bc.py: robomimic BC and our base policy compared like for like.

The fast tests pin what makes the comparison fair (robomimic's own BC config with the shared
budget, one BC action per env step from the last observation); the slow one runs the whole
script at smoke sizes and checks both methods got the same gradient steps and the same seeds.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module():
    return load_script("benchmarks/peer_check_bc.py")


def test_bc_config_is_robomimic_default_with_the_shared_budget(tmp_path):
    pc = _module()
    plan = pc.Plan(steps=3000, batch_size=100)
    cfg = pc.bc_config("/x/demos.hdf5", str(tmp_path), plan)
    assert cfg["algo_name"] == "bc"
    # robomimic's BC as a new user gets it: MLP 1024x1024, plain L2, lr 1e-4, no GMM/RNN
    assert list(cfg["algo"]["actor_layer_dims"]) == [1024, 1024]
    assert cfg["algo"]["optim_params"]["policy"]["learning_rate"]["initial"] == 1e-4
    assert not cfg["algo"]["gmm"]["enabled"] and not cfg["algo"]["rnn"]["enabled"]
    # the comparison's settings: 30 x 100 = 3,000 steps at batch 100, our low-dim keys, all demos
    assert cfg["train"]["batch_size"] == 100
    assert cfg["train"]["num_epochs"] * cfg["experiment"]["epoch_every_n_steps"] == 3000
    assert cfg["observation"]["modalities"]["obs"]["low_dim"] == pc.LOW_DIM_KEYS
    assert cfg["train"]["hdf5_filter_key"] is None
    assert not cfg["experiment"]["rollout"]["enabled"]  # rolled out afterwards on the shared seeds
    assert cfg["experiment"]["save"]["epochs"] == [30]
    with pytest.raises(SystemExit):
        pc.bc_config("/x/demos.hdf5", str(tmp_path), pc.Plan(steps=3050))


def test_adapter_runs_one_bc_action_per_env_from_the_last_obs():
    pc = _module()

    class FakeRolloutPolicy:
        started = 0

        def start_episode(self):
            self.started += 1

        def __call__(self, ob):
            return np.concatenate([ob["robot0_eef_pos"], ob["object"][:4]])  # 7-d

    fake = FakeRolloutPolicy()
    adapter = pc.RobomimicPolicyAdapter(fake)
    obs = {"robot0_eef_pos": torch.arange(12.0).view(2, 2, 3), "object": torch.arange(40.0).view(2, 2, 10)}
    action = adapter.predict_action(obs)["action"]
    assert fake.started == 1
    assert action.shape == (2, 1, 7) and action.dtype == torch.float32
    np.testing.assert_array_equal(action[1, 0, :3].numpy(), [9.0, 10.0, 11.0])  # env 1, last obs step


@pytest.mark.slow
def test_smoke_run_compares_both_on_the_same_budget_and_seeds(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "peer_check_bc.py"), "--smoke",
                          "--out", str(tmp_path), "--variants", "no_vib_eval"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    res = json.load(open(tmp_path / "results.json"))
    steps = res["plan"]["steps"]
    assert res["bc_train"]["steps"] == res["ours_train/base"]["steps"] == steps
    for key in ("bc_eval", "ours_eval/base", "ours_eval/no_vib_eval"):
        assert res[key]["n"] == res["plan"]["episodes"]
    seeds = [[e["seed"] for e in json.load(open(tmp_path / d / "eval_log.json"))["episodes"]]
             for d in ("eval_bc", "eval_ours_base")]
    assert seeds[0] == seeds[1] == list(range(100000, 100000 + res["plan"]["episodes"]))
    table = out.stdout.splitlines()
    assert any(line.startswith("robomimic BC") for line in table)
    assert any(line.startswith("zprl flow U-Net") for line in table)
    assert table[-1].startswith("headline: ours_minus_bc=")
