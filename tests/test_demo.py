"""`python -m zprl.demo`: each stage's completeness check on real artefacts, skip/redo, the curve."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import run_records
from zprl import demo
from zprl.common.checkpoint import load_checkpoint, weights_sha256
from zprl.common.logging import JsonLinesLogger

COMPARE = os.path.join(os.path.dirname(__file__), "..", "scripts", "compare_demos.py")


def _truncate(path, keep=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


def test_data_stage_skips_a_complete_file_and_redoes_a_truncated_one(tmp_path):
    paths = demo.DemoPaths(str(tmp_path / "demo"))
    plan = dataclasses.replace(demo.FAST, num_demos=2)
    data_stage = demo.stages(paths, plan)[:1]

    first = demo.run_stages(paths, plan, data_stage)
    assert [r["status"] for r in first.values()] == ["ran"]
    assert demo.dataset_problem(paths.dataset, plan) is None
    delta = os.path.join(os.path.dirname(paths.dataset), "low_dim_v141_subset.hdf5")
    delta_mtime, abs_mtime = os.path.getmtime(delta), os.path.getmtime(paths.dataset)

    again = demo.run_stages(paths, plan, data_stage)
    assert [r["status"] for r in again.values()] == ["skipped"]
    assert os.path.getmtime(paths.dataset) == abs_mtime

    # a different demo count is not "complete", whatever the file looks like
    assert "has 2 demos, not 3" in demo.dataset_problem(paths.dataset, dataclasses.replace(plan, num_demos=3))

    _truncate(paths.dataset)
    assert demo.dataset_problem(paths.dataset, plan) is not None
    redo = demo.run_stages(paths, plan, data_stage)
    assert [r["status"] for r in redo.values()] == ["ran"]
    assert demo.dataset_problem(paths.dataset, plan) is None
    assert os.path.getmtime(delta) == delta_mtime  # the complete delta-action file was reused, only converted again


def test_offline_check_reads_the_checkpoint_counters(tiny_base_run, tmp_path):
    # the shared tiny run: 2 epochs (training.debug) -> latest.ckpt says epoch 2 of 2
    assert demo.offline_problem(tiny_base_run, 2) == (None, True)
    why, resumable = demo.offline_problem(tiny_base_run, 5)
    assert "planned for 2 epochs, not 5" in why and not resumable

    run = tmp_path / "offline"
    shutil.copytree(tiny_base_run, run)
    latest = run / "checkpoints" / "latest.ckpt"
    after_first = next((run / "checkpoints").glob("epoch_0000-*.ckpt"))
    shutil.copy(after_first, latest)  # as if interrupted after the first epoch
    why, resumable = demo.offline_problem(str(run), 2)
    assert why == "stopped after epoch 1 of 2" and resumable

    _truncate(latest)
    why, resumable = demo.offline_problem(str(run), 2)
    assert "does not load" in why and not resumable
    os.remove(latest)
    assert "does not exist" in demo.offline_problem(str(run), 2)[0]


def test_eval_check_wants_every_episode_of_this_checkpoint(tiny_base_ckpt, tmp_path):
    import eval_base

    out = tmp_path / "eval"
    assert eval_base.main(["-c", tiny_base_ckpt, "-o", str(out), "-d", "cpu", "-n", "2", "--n_vis", "0",
                           "--n_envs", "1"]) == 0
    assert demo.eval_problem(str(out), 2, tiny_base_ckpt) is None
    assert "not seeds 100000..+3" in demo.eval_problem(str(out), 3, tiny_base_ckpt)
    assert "evaluated" in demo.eval_problem(str(out), 2, str(tmp_path / "other.ckpt"))

    log = out / "eval_log.json"
    data = json.loads(log.read_text())
    old = {k: v for k, v in data.items() if k not in ("max_steps", "n_envs")}
    log.write_text(json.dumps(old))  # an older zprl's log: the online stage could not read it as its step 0
    assert "older zprl" in demo.eval_problem(str(out), 2, tiny_base_ckpt)
    data["episodes"] = data["episodes"][:1]
    log.write_text(json.dumps(data))
    assert "lists 1 episodes" in demo.eval_problem(str(out), 2, tiny_base_ckpt)
    _truncate(log)
    assert "does not parse" in demo.eval_problem(str(out), 2, tiny_base_ckpt)


def test_a_redone_stage_makes_every_later_stage_run_again(tmp_path):
    """The driver's rule, on marker files: complete stages are skipped until one upstream of them runs."""
    paths = demo.DemoPaths(str(tmp_path / "d"))
    ran = []

    def stage(name):
        marker = tmp_path / name

        def run():
            ran.append(name)
            marker.write_text("done")

        return name, (lambda: None if marker.exists() else f"{marker} missing"), run

    stage_list = [stage("a"), stage("b"), stage("c")]
    demo.run_stages(paths, demo.FAST, stage_list)
    assert ran == ["a", "b", "c"]
    ran.clear()
    report = demo.run_stages(paths, demo.FAST, stage_list)
    assert ran == [] and [r["status"] for r in report.values()] == ["skipped"] * 3
    assert all(r["seconds"] is not None for r in report.values())  # wall times of the run that made them
    os.remove(tmp_path / "b")
    demo.run_stages(paths, demo.FAST, stage_list)
    assert ran == ["b", "c"]

    def broken():
        pass  # "finishes" without writing its output

    with pytest.raises(RuntimeError, match="output is incomplete"):
        demo.run_stages(paths, demo.FAST, [("x", lambda: "never made", broken)])


def test_learning_curve_from_online_logs(tmp_path):
    from zprl.demo_plot import eval_curve, plot_learning_curve

    logs = tmp_path / "logs.json.txt"
    logger = JsonLinesLogger(str(logs), "agent_steps").start()
    logger.log({"agent_steps": 0, "env_steps": 0, "eval/success_rate": 0.25, "eval/base_only": 1})
    logger.log({"agent_steps": 16, "env_steps": 64, "sac/critic_loss": 0.1})
    logger.log({"agent_steps": 32, "env_steps": 128, "eval/success_rate": 0.5, "eval/base_only": 0})
    logger.close()
    assert eval_curve(str(logs)) == ([0, 128], [0.25, 0.5])
    png = plot_learning_curve(str(logs), 0.3, str(tmp_path / "curve.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_fast_demo_end_to_end_then_resumes_only_what_is_missing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--fast", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_episodes"] == demo.FAST.eval_episodes
    assert summary["env_steps"] == demo.FAST.total_agent_steps * 4
    assert 0.0 <= summary["base_success"] <= 1.0 and 0.0 <= summary["zprl_success"] <= 1.0
    assert all(r["status"] == "ran" for r in summary["stages"].values())
    assert os.path.getsize(out / "learning_curve.png") > 0
    assert os.listdir(out / "eval_base" / "media") and os.listdir(out / "eval_zprl" / "media")

    # twice from nothing gives the same figures: every evaluated episode, every online record, the base
    out2 = tmp_path / "again"
    assert demo.main(["--fast", "--out", str(out2)]) == 0
    for stage in ("eval_base", "eval_zprl"):
        first, second = ([{k: v for k, v in e.items() if k != "video"}  # the videos' paths differ
                          for e in json.loads((o / stage / "eval_log.json").read_text())["episodes"]]
                         for o in (out, out2))
        assert first == second, stage
    assert run_records(out / "online") == run_records(out2 / "online")
    assert weights_sha256(load_checkpoint(str(out / "offline/checkpoints/latest.ckpt"))["state"]["ema_model"]) == \
        weights_sha256(load_checkpoint(str(out2 / "offline/checkpoints/latest.ckpt"))["state"]["ema_model"])
    # the same comparison as a user runs it on two full demos (scripts/compare_demos.py): every stage the same
    compared = subprocess.run([sys.executable, COMPARE, str(out), str(out2)], capture_output=True, text=True)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert compared.stdout.count("yes") == 5

    paths = demo.DemoPaths(str(out))
    assert "planned for 32 agent steps, not 64" in demo.online_problem(paths.online, 64, paths.base_ckpt)[0]
    # cut the last evaluation short: only that stage runs again
    _truncate(os.path.join(paths.eval_zprl, "eval_log.json"))
    capsys.readouterr()
    assert demo.main(["--fast", "--out", str(out)]) == 0
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert [r["status"] for r in stages.values()] == ["skipped"] * 4 + ["ran"]


def test_stage_commands_run_with_cpu_kernels_pinned_where_the_cpu_has_avx2(tmp_path, capfd, monkeypatch):
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    older = tmp_path / "older"
    older.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx\n")
    assert demo.kernel_pins(str(avx2)) == demo.AVX2_KERNEL_PINS
    assert demo.kernel_pins(str(older)) == {}
    assert demo.kernel_pins(str(tmp_path / "none")) == {}
    # the stage's process sees the pins; a value the user set is left alone
    monkeypatch.setattr(demo, "kernel_pins", lambda: dict(demo.AVX2_KERNEL_PINS))
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    demo._run(["python", "-c", "import os; print(os.environ['ATEN_CPU_CAPABILITY'], os.environ['MKL_CBWR'])"])
    assert capfd.readouterr().out.splitlines()[-1] == "avx2 COMPATIBLE"


def test_compare_demos_refuses_an_unfinished_output_in_one_line(tmp_path):
    (tmp_path / "a").mkdir()
    out = subprocess.run([sys.executable, COMPARE, str(tmp_path / "a"), str(tmp_path / "b")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "has no summary.json" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
