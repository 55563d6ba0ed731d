"""User-facing errors and the exit codes the CLI maps them to.

Exit codes everywhere: 0 success, 1 the job ran but some items failed (or the run failed,
e.g. training diverged), 2 bad usage or bad input, 130 interrupted (Ctrl-C). Library code
raises :class:`UserError` for a user's mistake (bad file, unknown name, malformed table); the
CLI prints its one-line message and exits 2, never a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a process stopped by Ctrl-C


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit code 2.

    The message should name the file / token / key and say what is wrong with it.
    """

    exit_code = EXIT_BAD_INPUT


class PartialFailure(Exception):
    """The job ran but some items failed (exit code 1); the message summarises which."""

    exit_code = EXIT_PARTIAL


class RunFailed(Exception):
    """The job started but could not finish (exit code 1), e.g. training diverged.

    The message is one line: what failed, where, and what to try.
    """

    exit_code = EXIT_PARTIAL


class Interrupted(Exception):
    """The user stopped the job (Ctrl-C): exit code 130, one line saying what was kept and how to go on.

    ``kept``: what the interruption leaves (complete files only: outputs are written atomically);
    ``command``: the command that continues (``resumes``) or redoes the job; ``note``: a few
    words on what that command will do.
    """

    exit_code = EXIT_INTERRUPTED

    def __init__(self, kept: str, command: str | None = None, note: str = "", resumes: bool = True) -> None:
        text = f"kept {kept}"
        if command:
            text += f"; {'continue with' if resumes else 'start again with'} `{command}`"
        if note:
            text += f" ({note})"
        super().__init__(text)
