"""User-facing errors and the exit codes the CLI maps them to.

Exit codes everywhere: 0 success, 1 the job ran but some items failed, 2 bad usage or
bad input. Library code raises :class:`UserError` for a user's mistake (bad file, unknown
name, malformed table); the CLI prints its one-line message and exits 2, never a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_BAD_INPUT = 2


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit code 2.

    The message should name the file / token / key and say what is wrong with it.
    """

    exit_code = EXIT_BAD_INPUT


class PartialFailure(Exception):
    """The job ran but some items failed (exit code 1); the message summarises which."""

    exit_code = EXIT_PARTIAL
