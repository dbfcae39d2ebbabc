"""scripts/replay_fidelity.py: a demo recorded the generator's way replays exactly in its own env."""

from conftest import load_script


def test_recording_env_and_executed_actions_retrace_the_demo_exactly():
    # Pins the generator's and convert_abs's controller set-up (the init_qpos posture, goals reset to
    # the pose): any drift there shows up as a non-zero deviation of the env/f64 replay.
    rows = load_script("scripts/replay_fidelity.py").replay_fidelity("lift", episodes=1, quality="expert", log=lambda line: None)
    assert len(rows) == 1
    row = rows[0]
    assert row["env/f64"] == (True, 0.0)
    # what the file stores replays the same task, a float32 rounding away from the recording
    ok, deviation = row["env/f32"]
    assert ok and deviation < 1e-4
    assert row["xml/f32"][0]
    # robosuite's own XML (full precision) rebuilds the recording env's model exactly
    assert row["src/f32"] == row["env/f32"]
