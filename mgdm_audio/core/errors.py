"""The one exception type for user mistakes.

A :class:`UserInputError` carries one sentence that names what was wrong and what to do; the CLI
prints it without a traceback and exits with status 2.
"""


class UserInputError(ValueError):
    """A user-facing mistake (bad shape, bad flag, bad file) with a one-sentence explanation."""
