"""training.base_eval_log: eval_base.py's evaluation of the base stands in for the online run's step-0
evaluation (the demo evaluates its base once, not twice), only when it is that same evaluation."""

import json

import pytest

from conftest import run_online, run_records
from test_bad_input import online_run, refused, tree

# the tiny base's rollouts are cut at 24 env steps (task.env_runner.max_steps); the online run's must be too
SAME_CUT = {"online_task.max_steps": 24}


@pytest.fixture(scope="module")
def base_eval_log(tiny_base_ckpt, tmp_path_factory):
    import eval_base

    out = tmp_path_factory.mktemp("eval_base") / "run"
    # debug online runs evaluate 2 episodes in 2 env processes, from seed 100000 as eval_base.py does
    assert eval_base.main(["-c", tiny_base_ckpt, "-o", str(out), "-d", "cpu", "-n", "2", "--n_vis", "0",
                           "--n_envs", "2"]) == 0
    return str(out / "eval_log.json")


@pytest.mark.slow  # two online debug runs
def test_the_log_is_logged_as_the_step0_evaluation_and_the_run_is_unchanged(tiny_base_ckpt, base_eval_log,
                                                                             tmp_path):
    run_online(tiny_base_ckpt, tmp_path / "rolled", **SAME_CUT)
    run_online(tiny_base_ckpt, tmp_path / "read", **SAME_CUT, **{"training.base_eval_log": base_eval_log})
    rolled, read = run_records(tmp_path / "rolled"), run_records(tmp_path / "read")
    evals = lambda recs: [r for r in recs if "eval/success_rate" in r]  # noqa: E731
    first_rolled, first_read = evals(rolled)[0], evals(read)[0]
    assert first_read.pop("eval/from_base_eval_log") == 1 and "eval/from_base_eval_log" not in first_rolled
    logged = json.load(open(base_eval_log))
    assert first_read["eval/success_rate"] == logged["mean_score"]
    assert first_read["agent_steps"] == 0 and first_read["eval/base_only"] == 1
    # the rollout it replaces gives the same figures (the same seeds, the same deterministic base) ...
    for key in ("eval/success_rate", "eval/mean_length", "eval/action_delta", "eval/action_jerk"):
        assert first_read[key] == pytest.approx(first_rolled[key], rel=1e-9), key
    # ... and skipping it changes nothing that follows: every later record is the same
    assert [r for r in read if r is not first_read] == [r for r in rolled if r is not first_rolled]


def test_a_log_of_another_evaluation_is_refused(tiny_base_ckpt, base_eval_log, tmp_path):
    other = dict(json.load(open(base_eval_log)), base_policy_sha256="0" * 64)
    (tmp_path / "other.json").write_text(json.dumps(other))
    probe = dict(json.load(open(base_eval_log)), noise_scale=0.0)  # eval_base.py --noise_scale 0
    (tmp_path / "probe.json").write_text(json.dumps(probe))
    (tmp_path / "junk.json").write_text("[1, 2")
    (tmp_path / "list.json").write_text("[1, 2]")
    before = tree(tmp_path)
    # the debug run cuts episodes at 80 env steps, the base's evaluation at 24
    refused(online_run(tiny_base_ckpt, tmp_path / "run", **{"training.base_eval_log": base_eval_log}),
            f"training.base_eval_log={base_eval_log} is not the evaluation", "max_steps 24 (this run: 80)")
    refused(online_run(tiny_base_ckpt, tmp_path / "run", **SAME_CUT,
                       **{"training.base_eval_log": str(tmp_path / "other.json")}),
            "base_policy_sha256 '0000", "rerun eval_base.py with this run's base")
    refused(online_run(tiny_base_ckpt, tmp_path / "run", **SAME_CUT,
                       **{"training.base_eval_log": str(tmp_path / "probe.json")}),
            "noise_scale 0.0 (this run: 1.0)")
    refused(online_run(tiny_base_ckpt, tmp_path / "run", **{"training.base_eval_log": str(tmp_path / "nope.json")}),
            "nope.json: no such file")
    refused(online_run(tiny_base_ckpt, tmp_path / "run", **{"training.base_eval_log": str(tmp_path / "junk.json")}),
            "not an eval_log.json written by eval_base.py (not JSON")
    refused(online_run(tiny_base_ckpt, tmp_path / "run", **{"training.base_eval_log": str(tmp_path / "list.json")}),
            "not an eval_log.json written by eval_base.py (no mean_score, episodes)")
    assert tree(tmp_path) == before and not (tmp_path / "run").exists()
