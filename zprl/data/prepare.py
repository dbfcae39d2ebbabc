"""Make a task's default dataset: scripted mixed-quality demos, converted to absolute actions.

    python -m zprl.data.prepare --task can --obs low_dim [--num-demos 100] [--seed 0]
                                [--quality mixed] [--output PATH] [--overwrite] [--workers N]

Writes ``<obs>_v141_subset_abs.hdf5`` (what the task configs read) and keeps the delta-action file
it was converted from next to it as ``<obs>_v141_subset.hdf5``, as in robomimic's layout. A complete
output is left alone, so running the command twice costs nothing.
"""

from __future__ import annotations

import argparse
import os

from zprl.common.errors import UserInputError, run_cli
from zprl.data.paths import OBS_TYPES, TASKS, default_dataset_path
from zprl.data.robomimic_file import check_robomimic_file


def delta_path_for(output: str, obs: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(output)), f"{obs}_v141_subset.hdf5")


def _has_images(info: dict) -> bool:
    return any(k.endswith("_image") for k in info["obs_keys"])


def file_problem(path: str, task: str, obs: str, num_demos: int, absolute: bool, made_with=None) -> str | None:
    """Why ``path`` is not the finished file this request would make (None if it is)."""
    from zprl.env.robomimic_env import ENV_NAMES

    try:
        info = check_robomimic_file(path, abs_action=absolute)
    except UserInputError as err:
        return str(err)
    if info["env_meta"].get("env_name") != ENV_NAMES[task]:
        return f"it holds {info['env_meta'].get('env_name')} demos, not {ENV_NAMES[task]}"
    if _has_images(info) != (obs == "image"):
        return f"its observations are {'image' if _has_images(info) else 'low_dim'}, not {obs}"
    if info["num_demos"] != num_demos:
        return f"it has {info['num_demos']} demos, not {num_demos}"
    for key, want in (made_with or {}).items():
        have = (info["generated"] or {}).get(key, want)
        if have != want:
            return f"it was generated with {key}={have!r}, not {want!r}"
    if absolute:
        record = (info["generated"] or {}).get("conversion") or info["converted"]
        if not record:
            return "it carries no record of a finished conversion"
    return None


def _generate(task, obs, num_demos, quality, seed, delta_path):
    from zprl.data.generate_demos import generate_demos, summary_line

    # The generator writes to a temporary file and renames it, so delta_path is never half-written.
    summary = generate_demos(task, num_demos, quality, obs, image_size=84, seed=seed, output=delta_path,
                             overwrite=True, show_progress=True)
    print(summary_line(summary))
    return summary


def prepare(task, obs, num_demos=100, seed=0, quality="mixed", output=None, overwrite=False, workers=1) -> str:
    """Generate + convert (or find already done) the dataset; returns the absolute-action file's path."""
    from zprl.data.convert_abs import convert_file, format_summary

    if task not in TASKS:
        raise UserInputError(f"--task {task!r} is unknown; choose one of {', '.join(TASKS)}")
    if obs not in OBS_TYPES:
        raise UserInputError(f"--obs {obs!r} is unknown; choose one of {', '.join(OBS_TYPES)}")
    if int(num_demos) < 1:
        raise UserInputError(f"--num-demos {num_demos} must be at least 1")
    num_demos = int(num_demos)
    output = os.path.abspath(output or default_dataset_path(task, obs))
    delta_path = delta_path_for(output, obs)
    if output == delta_path:
        raise UserInputError(f"--output {output} is where the delta-action file goes; choose another name")

    made_with = {"task": task, "quality": quality, "seed": int(seed)}
    if os.path.exists(output) and not overwrite:
        why = file_problem(output, task, obs, num_demos, absolute=True, made_with=made_with)
        if why is None:
            print(f"{output} is already complete ({num_demos} {task} demos, {obs}, absolute actions); "
                  "nothing to do (pass --overwrite to remake it)")
            return output
        raise UserInputError(f"{output} exists but is not the requested dataset: {why}; pass --overwrite to remake it")

    reuse = False
    if os.path.exists(delta_path) and not overwrite:
        why = file_problem(delta_path, task, obs, num_demos, absolute=False, made_with=made_with)
        if why is not None:
            raise UserInputError(f"{delta_path} exists but is not the requested delta-action file: {why}; "
                                 "pass --overwrite to remake it")
        reuse = True
    if reuse:  # a previous run stopped after generating: only the conversion is left
        print(f"reusing delta-action demos in {delta_path}")
    else:
        print(f"generating {num_demos} {quality} {task} demos ({obs}, seed {seed}) -> {delta_path}")
        _generate(task, obs, num_demos, quality, seed, delta_path)
    summary = convert_file(delta_path, output, overwrite=True, check=True, show_progress=True, workers=workers)
    for line in format_summary(summary):
        print(line)
    print(f"delta-action demos kept in {delta_path}")
    print(f"dataset ready: {output}")
    return output


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m zprl.data.prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--obs", required=True, choices=OBS_TYPES)
    p.add_argument("--num-demos", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", default="mixed", help="demo quality mix passed to the generator")
    p.add_argument("--output", default=None, help="absolute-action file to write (default: the task configs' path)")
    p.add_argument("--overwrite", action="store_true", help="remake the files even if they are complete")
    p.add_argument("--workers", type=int, default=1, help="processes for the conversion check")
    args = p.parse_args(argv)
    return prepare(args.task, args.obs, num_demos=args.num_demos, seed=args.seed, quality=args.quality,
                   output=args.output, overwrite=args.overwrite, workers=args.workers)


if __name__ == "__main__":
    run_cli(main)
