"""Errors meant for people: one line naming the file, key or value, and what to do about it."""


class UserInputError(Exception):
    """Bad input from the user (missing file, wrong format, unknown key).

    Entry points print ``str(err)`` as a single line and exit with status 2; nothing has been
    written when this is raised.
    """


def run_cli(main, *args, **kwargs):
    """Call ``main`` and turn a UserInputError into one line on stderr and exit status 2."""
    import sys

    try:
        return main(*args, **kwargs)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
