"""Errors meant for people: one line naming the file, key or value, and what to do about it."""


class UserInputError(Exception):
    """Bad input from the user (missing file, wrong format, unknown key).

    Entry points print ``str(err)`` as a single line and exit with status 2; nothing has been
    written when this is raised.
    """


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss. The message is one line naming the step and the loss term;
    the run stopped before the bad value reached a checkpoint, so latest.ckpt is the last good state."""


def run_cli(main, *args, **kwargs):
    """Call ``main`` and turn a UserInputError into one line on stderr and exit status 2."""
    import sys

    try:
        return main(*args, **kwargs)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def find_user_error(err: BaseException) -> UserInputError | None:
    """The UserInputError behind ``err``, if any (Hydra's instantiate wraps what constructors raise)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserInputError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
