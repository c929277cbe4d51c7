"""The one exception type that reaches users as a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a missing file, a wrong checkpoint, an impossible option.

    The command line prints ``error: <message>`` and exits with code 2. Messages name the
    offending file or option and say what was expected.
    """


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


# ----------------------------------------------------------------------------- messages for library callers
import contextvars as _contextvars
import functools as _functools
import re as _re

_FROM_COMMAND_LINE = _contextvars.ContextVar("saliency_from_command_line", default=False)
_FLAG = _re.compile(r"--(?:no-)?([a-z][a-z0-9]*(?:-[a-z0-9]+)*)(?:(?= [^\s:,;)(]+(?::|\s/|$))( )|)")


def as_keywords(message: str) -> str:
    """``"--batch-size 0: must be ..."`` -> ``"batch_size=0: must be ..."``: a message in the caller's terms."""
    return _FLAG.sub(lambda m: m.group(1).replace("-", "_") + ("=" if m.group(2) else ""), message)


def command_line_call():
    """Context manager the command line wraps a call in: errors then keep their ``--flag`` spelling."""
    import contextlib

    @contextlib.contextmanager
    def scope():
        token = _FROM_COMMAND_LINE.set(True)
        try:
            yield
        finally:
            _FROM_COMMAND_LINE.reset(token)

    return scope()


def library_call(function):
    """Decorator of the stage functions: called from Python, their UserErrors name keyword arguments, not flags."""

    @_functools.wraps(function)
    def wrapper(*args, **kwargs):
        if _FROM_COMMAND_LINE.get():
            return function(*args, **kwargs)
        try:
            return function(*args, **kwargs)
        except UserError as exc:
            raise UserError(as_keywords(str(exc))) from None

    return wrapper
