"""OmegaConf resolvers our configs use (imported by the entry points and tests before composing), and
train.py's checks of its command line before Hydra starts a run."""

from __future__ import annotations

from omegaconf import OmegaConf

from zprl.data.paths import repo_root

# Default dataset paths are relative to the repository, wherever train.py is launched from.
if not OmegaConf.has_resolver("repo_root"):
    OmegaConf.register_new_resolver("repo_root", repo_root)

CONFIG_DIR = repo_root() + "/config"


def composition_error(config_name: str, overrides: list[str]) -> str | None:
    """One line for a command line Hydra cannot compose (a mistyped key, an unknown task or other
    config group option, an unparsable override), or None. Checked before Hydra's run starts, so
    nothing is written; Hydra's own report takes several lines and a stack-trace hint."""
    import difflib
    import re

    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException

    def compose_with(ovs):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
            return compose(config_name=config_name, overrides=ovs)

    try:
        compose_with(overrides)
        return None
    except MissingConfigException as err:
        missing = str(getattr(err, "missing_cfg_file", "") or "")
        group, _, option = missing.rpartition("/")
        if not group:
            return str(err).splitlines()[0]
        choices = ", ".join(getattr(err, "options", None) or [])
        return f"{group}={option}: there is no config/{group}/{option}.yaml; choose one of {choices}"
    except HydraException as err:
        first = str(err).splitlines()[0]
        bad = re.match(r"Could not override '([^']+)'\.( No match in the defaults list\.)?", first)
        if bad is None:
            return f"{first}: write each override as key=value"
        key = bad.group(1)
        given = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), key)
        if bad.group(2):
            return f"{given}: {key} is not a config group of {config_name}; check the name"
        parent, _, leaf = key.rpartition(".")
        try:
            node = compose_with([o for o in overrides if o is not given])
            siblings = list((OmegaConf.select(node, parent) if parent else node).keys())
        except Exception:
            siblings = []
        close = difflib.get_close_matches(leaf, [str(s) for s in siblings], n=1)
        hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
        return f"{given}: {config_name} has no key {key}; {hint}(a new key is added with +{given})"


def reused_run_dir_message(output_dir: str) -> str:
    return (f"{output_dir} already holds a run (checkpoints/latest.ckpt); pass training.resume=True to continue "
            "it, or choose a new hydra.run.dir")


def command_line_error(argv: list[str]) -> str | None:
    """train.py's checks of its command line before Hydra starts the run (and writes .hydra/ into the
    run dir): the overrides compose, and a hydra.run.dir that holds a run is only reused with
    training.resume=True (else Hydra would overwrite that run's .hydra/ files). None when fine or
    when the command line is not a plain run (multirun, --help, another config dir): Hydra decides."""
    import os

    config_name, overrides, args = None, [], list(argv)
    while args:
        a = args.pop(0)
        if a.startswith("--config-name="):
            config_name = a.split("=", 1)[1]
        elif a in ("--config-name", "-cn") and args:
            config_name = args.pop(0)
        elif a.startswith("-"):
            return None
        else:
            overrides.append(a)
    opts = dict(o.lstrip("+").split("=", 1) for o in overrides if "=" in o)
    run_dir = opts.get("hydra.run.dir")
    resume = opts.get("training.resume", "false").strip().lower() in ("true", "yes", "on", "1")
    if run_dir is not None and not resume and os.path.isfile(os.path.join(run_dir, "checkpoints", "latest.ckpt")):
        return reused_run_dir_message(run_dir)
    if config_name is None or not os.path.isfile(os.path.join(CONFIG_DIR, f"{config_name}.yaml")):
        return None
    return composition_error(config_name, overrides)
