"""The package's two exception types: the user's mistake, and a bug of the package itself.

A :class:`UserInputError` carries one sentence that names what was wrong (a file, a flag, an argument) and what to
do; the CLI prints it without a traceback and exits with status 2. An :class:`InternalError` is a broken invariant of
the package's own code, which no input should reach; the CLI prints it as a bug to report and exits with status 1
(with the traceback when ``--debug`` or ``MGDM_AUDIO_DEBUG=1`` asks for it).
"""


class UserInputError(ValueError):
    """A user-facing mistake (bad shape, bad flag, bad file) with a one-sentence explanation."""


class InternalError(RuntimeError):
    """A broken invariant of the package's own code: a bug to report, not the user's mistake."""
