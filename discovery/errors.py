"""The one exception type that reaches users as a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a missing file, a wrong checkpoint, an impossible option.

    The command line prints ``error: <message>`` and exits with code 2. Messages name the
    offending file or option and say what was expected.
    """


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)
