"""Why an open-loop replay of a generated demo can leave its recording: five replays of each new demo.

    python scripts/replay_fidelity.py --task transport --episodes 30 [--quality mixed] [--seed 0]

Each episode is recorded as `python -m zprl.data.generate_demos` records it (same env, same seeds,
same operator tiers, attempt by attempt), kept in memory, then its delta actions are replayed open
loop from its first state in five ways:

- ``env/f64``: in the recording env, with the float64 actions the expert handed to ``env.step``;
- ``env/f32``: in the recording env, with the actions as the hdf5 file stores them (float32);
- ``xml/f64``: in a model rebuilt from the demo's stored model XML (MuJoCo's own XML writer, about
  six significant digits), as ``zprl.data.convert_abs`` and robomimic's ``reset_to`` do, float64;
- ``xml/f32``: the same with float32 actions: exactly ``convert_abs``'s replay check;
- ``src/f32``: float32 actions in a model rebuilt from the XML robosuite compiled the recording
  env from (its own MJCF, numbers at full precision), which the file does not hold.

For each it prints whether the replay succeeds and the largest deviation of the simulator state
(time, qpos, qvel) from the recorded one, then the success counts. The controllers are set up as
the generator's (`zprl.data.convert_abs._start_episode` with the noiseless ``init_qpos`` posture).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KINDS = ("env/f64", "env/f32", "xml/f64", "xml/f32", "src/f32")


def _replay(env, first_state, actions, model_xml=None):
    """(success, recorded-state array) of an open-loop replay; ``model_xml`` rebuilds the model first."""
    from zprl.data.convert_abs import _start_episode

    _start_episode(env, first_state, model_xml, init_qpos_posture=True)
    sim = env.env.sim
    states, success = [], False
    for a in actions:
        states.append(np.array(sim.get_state().flatten()))
        env.env.step(a)
        success = success or bool(env.is_success()["task"])
    return success, np.array(states)


@contextlib.contextmanager
def _source_xml(last: dict):
    """Within the block, remember the XML robosuite compiles each model from (before MuJoCo's writer
    rounds it into the file's model XML)."""
    from robosuite.utils.binding_utils import MjSim

    original = MjSim.__dict__["from_xml_string"]

    def compiling(cls, xml):
        last["xml"] = xml
        return original.__func__(cls, xml)

    MjSim.from_xml_string = classmethod(compiling)
    try:
        yield
    finally:
        MjSim.from_xml_string = original


def replay_fidelity(task: str, episodes: int, quality: str = "mixed", seed: int = 0, log=print,
                    replay_attempts: set[int] | None = None) -> list[dict]:
    """One row per successful recording: its tier, length and, per kind, (success, max |state deviation|).

    ``replay_attempts``: replay only these attempts (all are still recorded, in order, as the generator does).
    """
    from zprl.data.convert_abs import make_replay_env
    from zprl.data.generate_demos import operator_tiers, record_attempt, recording_env

    source = {}
    with _source_xml(source):
        env, meta, keys = recording_env(task, "low_dim", seed=seed)
    xml_env = make_replay_env(meta, abs_action=False)
    tiers = operator_tiers(episodes, quality, seed)
    rows, kept = [], 0
    for attempt in range(episodes):
        start = time.perf_counter()
        tier = tiers[kept]
        rec = record_attempt(env, task, keys, seed, attempt, tier)
        if not rec["success"]:
            log(f"attempt {attempt} ({tier}): the expert failed, nothing to replay")
            continue
        kept += 1
        if replay_attempts is not None and attempt not in replay_attempts:
            continue
        recorded = np.array(rec["states"])
        executed = np.array(rec["actions"], dtype=np.float64)
        row = {"attempt": attempt, "tier": tier, "length": len(executed)}
        # the recording env keeps the model compiled from source["xml"] for every episode (no hard resets)
        models = {"env": None, "xml": rec["model_file"], "src": source["xml"]}
        for kind in KINDS:
            where, dtype = kind.split("/")
            acts = executed.astype(np.float32) if dtype == "f32" else executed
            ok, states = _replay(env if where == "env" else xml_env, recorded[0], acts, models[where])
            row[kind] = (ok, float(np.abs(states - recorded).max()))
        rows.append(row)
        log(f"attempt {attempt} ({tier}, {row['length']} steps): " + ", ".join(
            f"{k} {'ok' if row[k][0] else 'FAILED'} max|ds| {row[k][1]:.2e}" for k in KINDS)
            + f"  ({time.perf_counter() - start:.0f} s)")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="transport", help="lift, can, square or transport")
    p.add_argument("--episodes", type=int, default=30, help="recording attempts (failed ones are not replayed)")
    p.add_argument("--quality", default="mixed", help="expert or mixed, as generate_demos")
    p.add_argument("--seed", type=int, default=0, help="generate_demos' --seed")
    p.add_argument("--replay-attempts", default=None,
                   help="comma-separated attempt numbers to replay (default: all); every attempt is still recorded")
    args = p.parse_args(argv)
    only = None if args.replay_attempts is None else {int(a) for a in args.replay_attempts.split(",")}
    print(f"# python scripts/replay_fidelity.py --task {args.task} --episodes {args.episodes} "
          f"--quality {args.quality} --seed {args.seed}"
          + (f" --replay-attempts {args.replay_attempts}" if only else ""), flush=True)
    rows = replay_fidelity(args.task, args.episodes, args.quality, args.seed,
                           log=lambda line: print(line, flush=True), replay_attempts=only)
    n = len(rows)
    print(f"\n{args.task} {args.quality}: {n} recorded successes replayed open loop from their first state")
    print("| replay | model | actions | success | max state deviation (median over demos) |")
    print("|---|---|---|---|---|")
    for kind in KINDS:
        where, dtype = kind.split("/")
        ok = sum(r[kind][0] for r in rows)
        dev = float(np.median([r[kind][1] for r in rows])) if rows else float("nan")
        model = {"env": "recording env", "xml": "rebuilt from stored XML", "src": "rebuilt from robosuite's XML"}[where]
        print(f"| {kind} | {model} | "
              f"{'float64 (executed)' if dtype == 'f64' else 'float32 (stored)'} | {ok}/{n} | {dev:.2e} |")


if __name__ == "__main__":
    main()
