"""zprl.report on run directories in the real formats (Hydra's .hydra/config.yaml, JSON-lines logs,
online checkpoints): statistics, grouping, the authors' summary protocol (thresholds, last-5 final
success, CIs, smoothness, wall time and CPU share), the figure, byte-identical regeneration, and
refusals of incomparable runs."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import ONLINE_CONFIG, compose_config
from zprl.common.checkpoint import BASE_CKPT_SHA_FILE, BASE_SHA_FILE, atomic_save, file_sha256
from zprl.common.errors import UserInputError, run_cli
from zprl.report import load_run, main, normalized_auc, t_interval, write_report

# success at env steps 0 (base), 400, 800 per (method, seed)
CURVES = {
    ("zprl", 0): [0.2, 0.5, 0.8], ("zprl", 1): [0.2, 0.6, 0.9], ("zprl", 2): [0.2, 0.4, 0.7],
    ("action_residual", 0): [0.2, 0.3, 0.4], ("action_residual", 1): [0.2, 0.3, 0.6],
}


def online_cfg(overrides):
    return compose_config(ONLINE_CONFIG, overrides)


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
    records = []
    for i, (s, v) in enumerate(zip(steps, curve)):
        train = {"agent_steps": s // 4, "env_steps": s, "train/warmup": int(i == 0),
                 "train/action_delta": 99.0 if i == 0 else delta * (i + 1), "train/action_jerk": 2 * delta}
        evaluation = {"agent_steps": s // 4, "env_steps": s, "eval/success_rate": v, "eval/mean_length": 100.0,
                      "eval/base_only": int(i == 0)}
        # the loop's order: the base evaluation first, then training records up to each evaluation
        records += [evaluation, {**train, "agent_steps": 10, "env_steps": 40}] if i == 0 else [train, evaluation]
    write_logs(run, records)
    return run


def write_logs(run, records):
    with open(os.path.join(run, "logs.json.txt"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


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
    # final success: mean of the (up to 5) learned evaluations, the base evaluation at 0 left out
    assert z["final_success"][0] == pytest.approx(np.mean([0.65, 0.75, 0.55]))
    assert z["final_success"][1] == pytest.approx(t_interval([0.65, 0.75, 0.55])[1])
    assert z["n_final"] == (2, 2)
    assert z["last_success"][0] == pytest.approx(0.8)
    assert z["last_success"][1] == pytest.approx(t_interval([0.8, 0.9, 0.7])[1])
    # AUC of seed 0: (0.5*(0.2+0.5) + 0.5*(0.5+0.8)) over the span = 0.5
    assert load_run(runs[0]).auc == pytest.approx(0.5)
    assert z["auc"][0] == pytest.approx(np.mean([0.5, 0.575, 0.425]))
    assert z["base_success"] == pytest.approx(0.2) and z["env_steps"] == (800, 800)
    # smoothness averages the post-warm-up records only (the warm-up record's 99 is left out)
    assert z["train/action_delta"][0] == pytest.approx(np.mean([0.02, 0.03]))
    assert z["train/action_jerk"] == pytest.approx((0.02, 0.0))
    # logs without the newer keys: no eval smoothness, times or training-success thresholds
    assert z["eval/action_delta"] is None and z["wall_s"] is None and z["cpu_share"] is None
    assert z["train_reach"][0.9] == ([], [800, 800, 800])

    text = open(os.path.join(out, "report.md")).read()
    assert "# Steering comparison: lift_lowdim" in text and "seeds 100000..100049 (50 episodes" in text
    assert (f"| zprl | 3 (0, 1, 2) | 0.650 ± {z['final_success'][1]:.3f} (only 2 evals) | "
            f"0.800 ± {z['last_success'][1]:.3f} |") in text
    assert "| action_residual | 2 (0, 1) | 0.400 ± " in text and "Student-t" in text
    assert "| zprl | not reached (budget 800 env steps) |" in text
    assert f"sha256:{file_sha256(base_file)}" in text
    import matplotlib.image

    img = matplotlib.image.imread(os.path.join(out, "success_vs_env_steps.png"))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300


def test_runs_of_one_interface_with_other_settings_are_separate_methods(tmp_path, base_file):
    root = tmp_path / "runs"
    runs = [make_run(root, "z02_0", "zprl", 0, [0.2, 0.5, 0.6], base_file, ["steering.res_scale=0.2"]),
            make_run(root, "z02_1", "zprl", 1, [0.2, 0.4, 0.6], base_file, ["steering.res_scale=0.2"]),
            make_run(root, "z08_0", "zprl", 0, [0.2, 0.7, 0.9], base_file, ["steering.res_scale=0.8"]),
            make_run(root, "ar_0", "action_residual", 0, [0.2, 0.3, 0.4], base_file),
            make_run(root, "ar_1", "action_residual", 1, [0.2, 0.3, 0.5], base_file, ["sac.n_critics=2"])]
    summary = write_report(runs, str(tmp_path / "out"))
    # only the settings that differ are named; variants sort with their interface
    assert list(summary) == ["zprl (res_scale=0.2)", "zprl (res_scale=0.8)",
                             "action_residual (sac.n_critics=10)", "action_residual (sac.n_critics=2)"]
    assert summary["zprl (res_scale=0.2)"]["n"] == 2 and summary["zprl (res_scale=0.8)"]["n"] == 1
    text = open(tmp_path / "out" / "report.md").read()
    assert "| zprl (res_scale=0.8) | 1 (0) | 0.800 (only 2 evals) | 0.900 |" in text
    # one setting for all runs of an interface: the plain name, as before
    assert list(write_report(runs[:2] + runs[3:4], str(tmp_path / "out2"))) == ["zprl", "action_residual"]


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
    assert "| zprl | 1 (0) | 0.300 (only 1 eval) |" in text and "| noise | 1 (0) | 0.200 (only 1 eval) |" in text


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


# -- the authors' summary protocol ---------------------------------------------------------------
def protocol_records(evals, train):
    """Logs as the online loop writes them. evals: (env_steps, success, eval action delta, wall_s, cpu_s);
    train: (env_steps, finished episodes, train/success_rate_last100 or None, wall_s, cpu_s). Records
    are written in env-step order, a step's training record before its evaluation."""
    records = []
    for s, n_eps, last100, wall, cpu in train:
        r = {"agent_steps": s // 4, "env_steps": s, "episodes": n_eps, "train/warmup": 0,
             "train/action_delta": 0.02, "train/action_jerk": 0.001, "time/wall_s": wall, "time/cpu_s": cpu}
        if last100 is not None:
            r["train/success_rate_last100"] = last100
        records.append(r)
    for i, (s, v, delta, wall, cpu) in enumerate(evals):
        r = {"agent_steps": s // 4, "env_steps": s, "eval/success_rate": v, "eval/mean_length": 50.0,
             "eval/base_only": int(i == 0), "eval/action_delta": delta, "eval/action_jerk": delta / 10}
        if wall is not None:
            r.update({"time/wall_s": wall, "time/cpu_s": cpu})
        records.append(r)
    return sorted(records, key=lambda r: (r["env_steps"], "eval/success_rate" in r))


# seed 0: eval success 0.5 at 2,000, 0.8 at 4,000, 0.9 at 5,000 env steps; the last 5 learned
# evaluations 0.6, 0.85, 0.9, 0.8, 0.95 (mean 0.82); training success (last 100 episodes) 0.5 at
# 3,000, 0.8 at 4,500, 0.9 at 6,000, never 0.95; 7,000 env steps in 700 s wall, 1,050 s CPU.
RUN_A = protocol_records(
    evals=[(0, 0.2, 0.010, 10.0, 12.0), (1000, 0.3, 0.011, 100.0, 140.0), (2000, 0.5, 0.012, 200.0, 290.0),
           (3000, 0.6, 0.013, 300.0, 440.0), (4000, 0.85, 0.014, 400.0, 590.0), (5000, 0.9, 0.015, 500.0, 740.0),
           (6000, 0.8, 0.016, 600.0, 900.0), (7000, 0.95, 0.017, 700.0, 1050.0)],
    train=[(500, 20, 0.99, 50.0, 70.0),  # fewer than 100 finished episodes: must not count
           (2500, 100, 0.45, 250.0, 360.0), (3000, 120, 0.55, 299.0, 439.0), (4500, 180, 0.82, 450.0, 660.0),
           (6000, 240, 0.91, 599.0, 899.0), (7000, 280, 0.93, 699.0, 1049.0)])
# seed 1: eval 0.5 at 3,000, never 0.8; last 5 = 0.4, 0.45, 0.5, 0.6, 0.7 (mean 0.53); training
# success 0.5 at 4,000; 5,000 env steps in 1,000 s wall and 1,000 s CPU.
RUN_B = protocol_records(
    evals=[(0, 0.2, 0.010, 10.0, 10.0), (1000, 0.4, 0.02, 200.0, 200.0), (2000, 0.45, 0.02, 400.0, 400.0),
           (3000, 0.5, 0.02, 600.0, 600.0), (4000, 0.6, 0.02, 800.0, 800.0), (5000, 0.7, 0.02, 1000.0, 1000.0)],
    train=[(2500, 100, 0.3, 500.0, 500.0), (4000, 160, 0.52, 799.0, 799.0)])
# an older log: no times, no training success over 100 episodes
RUN_C = protocol_records(evals=[(0, 0.2, 0.010, None, None), (1000, 0.3, 0.011, None, None)], train=[])


def protocol_runs(root, base_file):
    runs = []
    for name, method, seed, records in (("a", "zprl", 0, RUN_A), ("b", "zprl", 1, RUN_B),
                                        ("c", "action_residual", 0, RUN_C)):
        run = make_run(root, name, method, seed, [], base_file, steps=())
        write_logs(run, records)
        runs.append(run)
    return runs


def test_run_thresholds_last5_and_times(tmp_path, base_file):
    a, b, c = (load_run(r) for r in protocol_runs(tmp_path, base_file))
    assert a.final_success == pytest.approx(0.82) and a.n_final == 5 and a.last_success == 0.95
    assert [a.steps_to_eval(x) for x in (0.5, 0.8, 0.9)] == [2000, 4000, 5000]
    # the 0.99 logged after 20 episodes is left out: training thresholds need 100 finished episodes
    assert [a.steps_to_train(x) for x in (0.5, 0.8, 0.9, 0.95)] == [3000, 4500, 6000, None]
    assert a.env_steps == 7000 and a.wall_s == 700.0 and a.cpu_share == pytest.approx(1.5)
    assert a.wall_to_eval(0.8) == 400.0 and a.wall_to_eval(0.99) is None
    # evaluation smoothness over the evaluations final success uses; the base's apart
    assert a.final_eval_smoothness("action_delta") == pytest.approx(0.015)
    assert a.base_eval_smoothness("action_delta") == 0.010
    assert b.final_success == pytest.approx(0.53) and b.steps_to_eval(0.8) is None and b.cpu_share == 1.0
    assert [b.steps_to_train(x) for x in (0.5, 0.8)] == [4000, None]
    assert c.wall_s is None and c.cpu_share is None and c.steps_to_train(0.5) is None and c.n_final == 1


def test_summary_reports_the_authors_protocol(tmp_path, base_file):
    runs = protocol_runs(tmp_path / "runs", base_file)
    out = tmp_path / "out"
    summary = write_report(runs, str(out), name="results")
    z, r = summary["zprl"], summary["action_residual"]
    assert z["final_success"] == pytest.approx(t_interval([0.82, 0.53]))
    assert z["last_success"] == pytest.approx(t_interval([0.95, 0.7]))
    assert z["eval_reach"][0.5] == ([2000, 3000], []) and z["eval_reach"][0.8] == ([4000], [5000])
    assert z["train_reach"][0.5] == ([3000, 4000], []) and z["train_reach"][0.95] == ([], [7000, 5000])
    assert z["wall_s"] == pytest.approx(t_interval([700.0, 1000.0]))
    assert z["cpu_share"] == pytest.approx(t_interval([1.5, 1.0]))
    assert z["eval/action_delta"] == pytest.approx(t_interval([0.015, 0.02]))
    assert r["wall_s"] is None and r["eval_reach"][0.5] == ([], [1000])

    text = (out / "results.md").read_text()
    mean, half = t_interval([0.82, 0.53])
    assert f"| zprl | 2 (0, 1) | {mean:.3f} ± {half:.3f} | 0.825 ± " in text  # 5 learned evals each: no note
    steps_cell = "{:,.0f} ± {:,.0f}".format(*t_interval([2000, 3000]))
    assert steps_cell == "2,500 ± 6,353"
    train_cell = "{:,.0f} ± {:,.0f}".format(*t_interval([3000, 4000]))
    wall = "{:.1f} ± {:.1f} min".format(*(v / 60 for v in t_interval([700.0, 1000.0])))
    share = "{:.2f} ± {:.2f}".format(*t_interval([1.5, 1.0]))
    assert f"| 5,000–7,000 | {wall} | {share} |" in text
    assert (f"| zprl | {train_cell} | 4,500 (1 of 2 seeds); 1 not reached (budget 5,000 env steps) | "
            "6,000 (1 of 2 seeds); 1 not reached (budget 5,000 env steps) | "
            "not reached (budget 5,000–7,000 env steps) | "
            f"{steps_cell} | 4,000 (1 of 2 seeds); 1 not reached (budget 5,000 env steps) | "
            "5,000 (1 of 2 seeds); 1 not reached (budget 5,000 env steps) |") in text
    assert "| action_residual | " + " | ".join(["not reached (budget 1,000 env steps)"] * 7) + " |" in text
    # per run: thresholds, wall time, CPU share, wall time to 0.8 eval success
    assert (f"| {runs[0]} | zprl | 0 | 0.820 | 0.950 | ") in text
    assert ("| 3,000 | 4,500 | 6,000 | not reached (budget 7,000) | 2,000 | 4,000 | 5,000 | 11.7 min | 1.50 | "
            "6.7 min |") in text
    assert "| 4,000 | not reached (budget 5,000) | not reached (budget 5,000) | not reached (budget 5,000) | " \
           "3,000 | not reached (budget 5,000) | not reached (budget 5,000) | 16.7 min | 1.00 | not reached |" in text
    assert text.rstrip().endswith("| – | – | not reached |")
    assert "base policy in evaluation (mean over the 3 runs' base evaluations): action delta 0.01," in text
    for phrase in ("last 5 evaluations", "last 100 finished training episodes", "at least 100 episodes",
                   "time/cpu_s / time/wall_s", "never across episode boundaries", "95% Student-t"):
        assert phrase in text


def test_report_regenerates_byte_identically(tmp_path, base_file):
    runs = protocol_runs(tmp_path / "runs", base_file)
    first, second = tmp_path / "first", tmp_path / "second"
    assert main([*runs, "-o", str(first), "--name", "results"]) == 0
    assert main([*runs, "-o", str(second), "--name", "results"]) == 0
    names = ["results.md", "results_success_vs_env_steps.png"]
    assert sorted(os.listdir(first)) == sorted(os.listdir(second)) == names
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    png = (first / names[1]).read_bytes()
    assert png.startswith(b"\x89PNG") and b"Software" not in png and b"matplotlib" not in png


def test_recorded_base_weights_name_the_base_wherever_the_page_is_rebuilt(tmp_path, base_file):
    """A run's base_policy.sha256 (written by the online workspace) wins over the file on disk, so committed
    logs rebuild the same page where the base checkpoint is missing or was retrained (new timings, same
    weights); a malformed one is refused in one line."""
    weights = "ab" * 32
    a = make_run(tmp_path, "a", "zprl", 0, [0.1, 0.2, 0.3], base_file)
    b = make_run(tmp_path, "b", "zprl", 1, [0.1, 0.2, 0.3], str(tmp_path / "not_here.ckpt"))
    for run in (a, b):
        with open(os.path.join(run, BASE_SHA_FILE), "w") as f:
            f.write(weights + "\n")
    assert load_run(a).identity["base checkpoint"] == load_run(b).identity["base checkpoint"] == f"weights sha256:{weights}"
    write_report([a, b], str(tmp_path / "out"))
    with open(os.path.join(b, BASE_SHA_FILE), "w") as f:
        f.write("cd" * 32 + "\n")
    with pytest.raises(UserInputError, match=f"cannot compare {b}: base checkpoint is weights sha256:{'cd' * 32}"):
        write_report([a, b], str(tmp_path / "out2"))
    with open(os.path.join(b, BASE_SHA_FILE), "w") as f:
        f.write("not a hash\n")
    with pytest.raises(UserInputError, match="should hold one sha256"):
        load_run(b)
    # older runs: the base file's sha256 recorded by hand beside the logs beats the file now on disk
    os.remove(os.path.join(a, BASE_SHA_FILE))
    with open(os.path.join(a, BASE_CKPT_SHA_FILE), "w") as f:
        f.write("ef" * 32 + "\n")
    assert load_run(a).identity["base checkpoint"] == f"sha256:{'ef' * 32}" != f"sha256:{file_sha256(base_file)}"


def test_reading_states_ahead_behind_or_indistinguishable_with_its_numbers(tmp_path, base_file):
    from scipy import stats

    from zprl.report_reading import seeds_to_tell, verdict, welch_interval

    # Welch's interval by hand: finals zprl [0.65, 0.75, 0.55], action_residual [0.35, 0.45]
    za, ra = [0.65, 0.75, 0.55], [0.35, 0.45]
    va, vb = np.var(za, ddof=1) / 3, np.var(ra, ddof=1) / 2
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 1)
    diff, half = welch_interval(za, ra)
    assert diff == pytest.approx(0.25) and half == pytest.approx(stats.t.ppf(0.975, df) * math.sqrt(va + vb))
    assert verdict((0.3, 0.2)) == "ahead" and verdict((-0.3, 0.2)) == "behind"
    assert verdict((0.1, 0.2)) == "indistinguishable" and verdict(None) == "too few seeds for an interval"
    assert welch_interval([0.5], [0.4, 0.6]) is None
    # 2 * (1.96 + 0.8416)^2 * sd^2 / d^2 with sd 0.1 and d 0.1: 15.7 -> 16 seeds per method
    assert seeds_to_tell([0.6, 0.7, 0.8], [0.5, 0.6, 0.7]) == 16
    assert seeds_to_tell([0.5, 0.6], [0.5, 0.6]) is None

    runs = [make_run(tmp_path / "runs", f"{m}_{s}", m, s, c, base_file) for (m, s), c in CURVES.items()]
    write_report(runs, str(tmp_path / "out"))
    text = (tmp_path / "out" / "report.md").read_text()
    reading = text[text.index("## Reading"):text.index("## Definitions")]
    assert f"| zprl − action_residual | 3 vs 2 | +0.250 ± {half:.3f} | {verdict((diff, half))} |" in reading
    # gains over the base (0.2): zprl [0.45, 0.55, 0.35] -> above; action_residual [0.15, 0.25] -> its own interval
    g = stats.t.ppf(0.975, 2) * np.std([0.45, 0.55, 0.35], ddof=1) / math.sqrt(3)
    assert f"| zprl | 3 | +0.450 ± {g:.3f} | above |" in reading
    single = write_report(runs[:1] + runs[3:4], str(tmp_path / "one"))
    assert list(single) == ["zprl", "action_residual"]
    one = (tmp_path / "one" / "report.md").read_text()
    assert "| zprl − action_residual | 1 vs 1 | +0.300 (no interval) | too few seeds for an interval |" in one


def test_max_env_steps_reads_runs_up_to_one_budget(tmp_path, base_file, capsys):
    long = make_run(tmp_path / "runs", "zprl_long", "zprl", 0, [0.2, 0.5, 0.8, 1.0], base_file,
                    steps=(0, 400, 800, 1200))
    short = make_run(tmp_path / "runs", "ar_short", "action_residual", 0, [0.2, 0.3, 0.6], base_file)
    cut = load_run(long, max_env_steps=800)
    assert list(cut.steps) == [0, 400, 800] and cut.budget == 800 and cut.last_success == 0.8
    assert cut.steps_to_eval(0.9) is None  # reached at 1,200 only: past the budget
    assert load_run(long).steps_to_eval(0.9) == 1200
    out = str(tmp_path / "out")
    assert main([long, short, "-o", out, "--max-env-steps", "800"]) == 0
    text = open(os.path.join(out, "report.md")).read()
    assert "read up to 800 env steps" in text and "not reached (budget 800 env steps)" in text
    # without the cut the long run's 1,200-step evaluation counts
    assert main([long, short, "-o", str(tmp_path / "full")]) == 0
    assert "read up to" not in open(os.path.join(tmp_path, "full", "report.md")).read()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, [long, "-o", out, "--max-env-steps", "-5"])
    assert exit_.value.code == 2 and "--max-env-steps -5" in capsys.readouterr().err


def test_training_smoothness_leaves_out_non_finite_records_and_says_so(tmp_path, base_file):
    # a record whose window held an env fault's chunk logged train/action_delta "nan" (the logger's
    # form of a non-finite float): it must neither turn the method's mean into nan nor vanish silently
    run = make_run(tmp_path / "runs", "zprl_0", "zprl", 0, [0.2, 0.5, 0.8], base_file)
    records = [json.loads(line) for line in open(os.path.join(run, "logs.json.txt"))]
    train = [r for r in records if r.get("train/warmup") == 0]
    train[0]["train/action_delta"] = "nan"
    write_logs(run, records)
    loaded = load_run(run)
    assert loaded.smoothness_skipped == 1
    assert loaded.smoothness["train/action_delta"] == pytest.approx(0.03)  # the finite record alone
    out = str(tmp_path / "out")
    write_report([run], out)
    text = open(os.path.join(out, "report.md")).read()
    assert "| zprl | 0.03 | " in text and "nan" not in text.split("## Definitions")[0]
    assert f"leaves out records whose value is not finite (an env fault's chunk in their window): {run} (1)." in text


def test_sac_actor_loss_blowups_are_named_with_their_runs(tmp_path, base_file):
    # healthy runs keep |actor loss| within about 1; a window beyond 10 (can ZPRL's posterior blow-ups) is named
    run = make_run(tmp_path / "runs", "zprl_0", "zprl", 0, [0.2, 0.5, 0.8, 0.8, 0.9], base_file,
                   steps=(0, 400, 800, 1200, 1600))
    quiet = make_run(tmp_path / "runs", "ar_0", "action_residual", 0, [0.2, 0.3, 0.4, 0.4, 0.5], base_file,
                     steps=(0, 400, 800, 1200, 1600))
    for path, losses in ((run, (0.3, 3.7e8, -0.2, 2.1e4)), (quiet, (0.3, -0.9, 1.0, 0.2))):
        records = [json.loads(line) for line in open(os.path.join(path, "logs.json.txt"))]
        train = [r for r in records if "train/warmup" in r]
        for r, loss in zip(train, losses):
            r["sac/actor_loss"] = loss
        write_logs(path, records)
    loaded, other = load_run(run), load_run(quiet)
    train_steps = [r["env_steps"] for r in (json.loads(line) for line in open(os.path.join(run, "logs.json.txt")))
                   if "train/warmup" in r]
    assert loaded.sac_blowups == (train_steps[1], train_steps[3]) and other.sac_blowups == ()
    assert loaded.sac_records == 4
    out = str(tmp_path / "out")
    write_report([run, quiet], out)
    text = open(os.path.join(out, "report.md")).read()
    assert ("SAC actor loss beyond ±10 in a log window" in text
            and f"{run} (2 of {loaded.sac_records} training records, first at {train_steps[1]:,} env steps)" in text)
    assert f"{quiet} (" not in text.split("SAC actor loss beyond")[1].split("\n")[0]
