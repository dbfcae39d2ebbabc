"""`python -m zprl.data.prepare`: leaves finished datasets alone, refuses wrong ones, writes nothing on bad input."""

import hashlib
import os

import numpy as np
import pytest
from test_convert_abs import scripted_lift, write_robomimic

from zprl.common.errors import UserInputError
from zprl.data.convert_abs import convert_file, make_replay_env
from zprl.data.prepare import delta_path_for, prepare
from zprl.env.robomimic_env import make_env_meta


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-demo lift dataset at the default layout, made without the generator."""
    root = tmp_path_factory.mktemp("data")
    meta = make_env_meta("lift", abs_action=False)
    env = make_replay_env(meta, abs_action=False)
    scratch = root / "scratch.hdf5"
    write_robomimic(scratch, meta, [scripted_lift(env, np.random.default_rng(3), 20, 0.2, solve=False)])
    out = root / "robomimicv030" / "lift" / "mh" / "low_dim_v141_subset_abs.hdf5"
    convert_file(scratch, out, check=False, show_progress=False)
    return str(out)


def test_complete_output_is_left_alone(finished, capsys):
    before = (_digest(finished), os.path.getmtime(finished), sorted(os.listdir(os.path.dirname(finished))))
    assert prepare("lift", "low_dim", num_demos=1, output=finished) == os.path.abspath(finished)
    assert "already complete" in capsys.readouterr().out
    # Nothing generated or rewritten: same bytes, same mtime, no delta file appeared.
    after = (_digest(finished), os.path.getmtime(finished), sorted(os.listdir(os.path.dirname(finished))))
    assert after == before
    assert not os.path.exists(delta_path_for(finished, "low_dim"))


@pytest.mark.parametrize("kwargs, needle", [
    (dict(task="lift", obs="low_dim", num_demos=2), "has 1 demos, not 2"),
    (dict(task="can", obs="low_dim", num_demos=1), "Lift demos, not PickPlaceCan"),
    (dict(task="lift", obs="image", num_demos=1), "observations are low_dim, not image"),
])
def test_existing_but_different_output_is_refused(finished, kwargs, needle):
    before = _digest(finished)
    with pytest.raises(UserInputError) as exc:
        prepare(output=finished, **kwargs)
    msg = str(exc.value)
    assert needle in msg and "--overwrite" in msg and finished in msg and "\n" not in msg
    assert _digest(finished) == before


@pytest.mark.parametrize("kwargs, needle", [
    (dict(task="stack", obs="low_dim"), "--task 'stack' is unknown"),
    (dict(task="lift", obs="depth"), "--obs 'depth' is unknown"),
    (dict(task="lift", obs="low_dim", num_demos=0), "--num-demos 0"),
])
def test_bad_arguments_write_nothing(tmp_path, kwargs, needle):
    with pytest.raises(UserInputError, match=needle):
        prepare(output=str(tmp_path / "x" / "out.hdf5"), **kwargs)
    assert os.listdir(tmp_path) == []


def test_output_cannot_take_the_delta_files_name(tmp_path):
    with pytest.raises(UserInputError, match="delta-action file"):
        prepare("lift", "low_dim", output=str(tmp_path / "low_dim_v141_subset.hdf5"))
    assert os.listdir(tmp_path) == []


def test_prepare_generates_converts_and_then_skips(tmp_path, capsys):
    from zprl.data.robomimic_file import check_robomimic_file

    out = str(tmp_path / "robomimicv030" / "lift" / "mh" / "low_dim_v141_subset_abs.hdf5")
    assert prepare("lift", "low_dim", num_demos=2, seed=1, output=out) == out
    printed = capsys.readouterr().out
    assert "replay success with absolute actions: 2/2" in printed and f"dataset ready: {out}" in printed
    delta = delta_path_for(out, "low_dim")
    assert os.path.basename(delta) == "low_dim_v141_subset.hdf5"
    info = check_robomimic_file(out, abs_action=True, action_dim=7, need_obs_keys=["object", "robot0_eef_pos"])
    assert info["num_demos"] == 2 and info["generated"]["seed"] == 1
    assert check_robomimic_file(delta, abs_action=False)["num_demos"] == 2

    stamp = (os.path.getmtime(out), _digest(out), os.path.getmtime(delta))
    assert prepare("lift", "low_dim", num_demos=2, seed=1, output=out) == out
    assert "already complete" in capsys.readouterr().out
    assert (os.path.getmtime(out), _digest(out), os.path.getmtime(delta)) == stamp

    # A run that stopped after generating resumes with the conversion only.
    os.remove(out)
    prepare("lift", "low_dim", num_demos=2, seed=1, output=out)
    assert "reusing delta-action demos" in capsys.readouterr().out
    assert os.path.getmtime(delta) == stamp[2]
    assert check_robomimic_file(out, abs_action=True)["num_demos"] == 2

    # A different seed is a different dataset: refused without --overwrite.
    with pytest.raises(UserInputError, match="seed=1, not 2"):
        prepare("lift", "low_dim", num_demos=2, seed=2, output=out)
