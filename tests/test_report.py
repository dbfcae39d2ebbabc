"""zprl.report on run directories in the real formats (Hydra's .hydra/config.yaml, JSON-lines logs,
online checkpoints): statistics, grouping, the figure, and refusals of incomparable runs."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from zprl.common.checkpoint import atomic_save, file_sha256
from zprl.common.config import CONFIG_DIR
from zprl.common.errors import UserInputError, run_cli
from zprl.report import load_run, main, normalized_auc, t_interval, write_report

# success at env steps 0 (base), 400, 800 per (method, seed)
CURVES = {
    ("zprl", 0): [0.2, 0.5, 0.8], ("zprl", 1): [0.2, 0.6, 0.9], ("zprl", 2): [0.2, 0.4, 0.7],
    ("action_residual", 0): [0.2, 0.3, 0.4], ("action_residual", 1): [0.2, 0.3, 0.6],
}


def online_cfg(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="train_online_vib_robomimic_workspace", overrides=list(overrides))


@pytest.fixture
def base_file(tmp_path):
    path = tmp_path / "base.ckpt"
    path.write_bytes(b"base policy weights")
    return str(path)


def make_run(root, name, method, seed, curve, base_ckpt, extra=(), delta=0.01, steps=(0, 400, 800)):
    """A run directory as train.py leaves it: .hydra/config.yaml (unresolved) + logs.json.txt."""
    run = os.path.join(str(root), name)
    os.makedirs(os.path.join(run, ".hydra"))
    cfg = online_cfg(["online_task=lift_lowdim_abs", f"online_task.base_ckpt={base_ckpt}", f"steering={method}",
                      f"training.seed={seed}", *extra])
    OmegaConf.save(cfg, os.path.join(run, ".hydra", "config.yaml"))
    with open(os.path.join(run, "logs.json.txt"), "w") as f:
        for i, (s, v) in enumerate(zip(steps, curve)):
            f.write(json.dumps({"agent_steps": s // 4, "env_steps": s, "eval/success_rate": v,
                                "eval/mean_length": 100.0, "eval/base_only": int(i == 0)}) + "\n")
            f.write(json.dumps({"agent_steps": s // 4 + 10, "env_steps": s + 40, "train/warmup": int(i == 0),
                                "train/action_delta": 99.0 if i == 0 else delta * (i + 1),
                                "train/action_jerk": 2 * delta}) + "\n")
    return run


def test_t_interval_and_auc_math():
    mean, half = t_interval([0.2, 0.4, 0.6])
    assert mean == pytest.approx(0.4)
    assert half == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-6)  # t_{0.975, 2} = 4.302653
    assert t_interval([0.7, 0.7])[1] == 0.0
    m1, h1 = t_interval([0.3])
    assert m1 == 0.3 and math.isnan(h1)
    assert normalized_auc([0, 100, 300], [0.0, 1.0, 1.0]) == pytest.approx(250 / 300)
    assert normalized_auc([50], [0.4]) == 0.4


def test_report_groups_by_method(tmp_path, base_file):
    runs = [make_run(tmp_path / "runs", f"{m}_{s}", m, s, c, base_file) for (m, s), c in CURVES.items()]
    out = str(tmp_path / "out")
    summary = write_report(runs, out)
    assert list(summary) == ["zprl", "action_residual"]
    z, a = summary["zprl"], summary["action_residual"]
    assert z["n"] == 3 and z["seeds"] == [0, 1, 2] and a["n"] == 2
    assert z["final_success"][0] == pytest.approx(0.8)
    assert z["final_success"][1] == pytest.approx(t_interval([0.8, 0.9, 0.7])[1])
    # AUC of seed 0: (0.5*(0.2+0.5) + 0.5*(0.5+0.8)) over the span = 0.5
    assert load_run(runs[0]).auc == pytest.approx(0.5)
    assert z["auc"][0] == pytest.approx(np.mean([0.5, 0.575, 0.425]))
    assert z["base_success"] == pytest.approx(0.2) and z["env_steps"] == (800, 800)
    # smoothness averages the post-warm-up records only (the warm-up record's 99 is left out)
    assert z["train/action_delta"] == pytest.approx(np.mean([0.02, 0.03]))
    assert z["train/action_jerk"] == pytest.approx(0.02)

    text = open(os.path.join(out, "report.md")).read()
    assert "# Steering comparison: lift_lowdim" in text and "seeds 100000..100049 (50 episodes" in text
    assert f"| zprl | 3 (0, 1, 2) | 0.800 ± {z['final_success'][1]:.3f} |" in text
    assert "| action_residual | 2 (0, 1) | 0.500 ± " in text and "Student-t" in text
    assert f"sha256:{file_sha256(base_file)}" in text
    import matplotlib.image

    img = matplotlib.image.imread(os.path.join(out, "success_vs_env_steps.png"))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300


def test_mean_curve_interpolates_to_the_shortest_run(tmp_path, base_file):
    from zprl.report_plot import mean_curve

    long = load_run(make_run(tmp_path, "a", "noise", 0, [0.0, 0.5, 1.0], base_file, steps=(0, 400, 800)))
    short = load_run(make_run(tmp_path, "b", "noise", 1, [0.0, 0.2], base_file, steps=(0, 200)))
    steps, mean, half = mean_curve([long, short])
    assert steps.tolist() == [0, 200]
    assert mean.tolist() == pytest.approx([0.0, (0.25 + 0.2) / 2])
    assert half[0] == 0.0 and half[1] > 0


def test_sweep_directory_and_checkpoint_config(tmp_path, base_file):
    sweep = tmp_path / "sweep"
    make_run(sweep, "0", "zprl", 0, [0.1, 0.3], base_file, steps=(0, 400))
    run = make_run(sweep, "1", "noise", 0, [0.1, 0.2], base_file, extra=["training.debug=true"], steps=(0, 400))
    # a debug run evaluates 2 episodes: .hydra says 50, the debug overrides (and the checkpoint) say 2
    assert load_run(run).identity["online_task.n_eval_episodes"] == 2
    # with a checkpoint, its resolved config and recorded base sha256 are what count
    cfg = OmegaConf.to_container(online_cfg(["online_task=lift_lowdim_abs", f"online_task.base_ckpt={base_file}",
                                             "steering=noise"]), resolve=True)
    state = {"steering": {"name": "noise", "noise_bound": 1.5}, "base_ckpt_sha256": file_sha256(base_file)}
    atomic_save({"cfg": cfg, "state": state}, os.path.join(run, "checkpoints", "step_000100.ckpt"))
    loaded = load_run(run)
    assert loaded.method == "noise" and loaded.identity["online_task.n_eval_episodes"] == 50
    out = str(tmp_path / "out")
    assert main([str(sweep), "-o", out]) == 0
    text = open(os.path.join(out, "report.md")).read()
    assert "| zprl | 1 (0) | 0.300 |" in text and "| noise | 1 (0) | 0.200 |" in text


@pytest.mark.parametrize("extra, field", [
    (["online_task.eval_start_seed=5"], "online_task.eval_start_seed"),
    (["online_task.n_eval_episodes=10"], "online_task.n_eval_episodes"),
    (["online_task=can_lowdim_abs"], "online_task.name"),
])
def test_refuses_incomparable_runs(tmp_path, base_file, extra, field, capsys):
    a = make_run(tmp_path, "a", "zprl", 0, [0.1, 0.2, 0.3], base_file)
    b = make_run(tmp_path, "b", "noise", 0, [0.1, 0.2, 0.3], base_file, extra=extra)
    out = str(tmp_path / "out")
    with pytest.raises(UserInputError) as err:
        write_report([a, b], out)
    msg = str(err.value)
    assert msg.startswith(f"cannot compare {b}: {field} is ") and a in msg and "\n" not in msg
    assert not os.path.exists(out)
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, [a, b, "-o", out])
    assert exit_.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_refuses_different_base_checkpoints(tmp_path, base_file):
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"another base policy")
    a = make_run(tmp_path, "a", "zprl", 0, [0.1, 0.2, 0.3], base_file)
    b = make_run(tmp_path, "b", "zprl", 1, [0.1, 0.2, 0.3], str(other))
    with pytest.raises(UserInputError, match=f"cannot compare {b}: base checkpoint is sha256:{file_sha256(str(other))}"):
        write_report([a, b], str(tmp_path / "out"))


def test_refuses_runs_without_evaluation_or_config(tmp_path, base_file):
    run = make_run(tmp_path, "a", "zprl", 0, [], base_file, steps=())
    with pytest.raises(UserInputError, match="no eval/success_rate record"):
        load_run(run)
    with pytest.raises(UserInputError, match="not found"):
        write_report([str(tmp_path / "missing")], str(tmp_path / "out"))
    os.remove(os.path.join(run, ".hydra", "config.yaml"))
    with pytest.raises(UserInputError, match="neither checkpoints"):
        load_run(run)


def test_cli_name_sets_the_file_stem(tmp_path, base_file, capsys):
    from zprl.common.errors import run_cli
    from zprl.report import main

    runs = [make_run(tmp_path / "runs", f"{m}_{s}", m, s, c, base_file) for (m, s), c in CURVES.items()]
    out = tmp_path / "docs"
    assert main([*map(str, runs), "-o", str(out), "--name", "results"]) == 0
    assert sorted(os.listdir(out)) == ["results.md", "results_success_vs_env_steps.png"]
    assert "](results_success_vs_env_steps.png)" in (out / "results.md").read_text()
    with pytest.raises(SystemExit):
        run_cli(main, [str(runs[0]), "-o", str(out), "--name", "sub/results"])
    assert "--name 'sub/results'" in capsys.readouterr().err
