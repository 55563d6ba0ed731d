"""Ctrl-C, said the same way by every command.

A command declares, as soon as it knows its outputs, what an interruption would keep and how to
go on (:func:`on_interrupt`). :func:`nuimcli.cli.main` turns a ``KeyboardInterrupt`` into that
declaration — or takes the :class:`~nuimcli.errors.Interrupted` a job raises when it stopped
cleanly by itself (``train`` saves a checkpoint first) — prints one line
``interrupted: kept …; continue with `…` `` and exits 130. Outputs are written atomically
(temporary name, then rename), so what is kept is always complete files.
"""

from __future__ import annotations

import shlex
from typing import Callable, Optional, Union

from nuimcli.errors import Interrupted

#: A text, or a function giving it when the interruption happens (e.g. the latest checkpoint).
Text = Union[str, Callable[[], str]]

_declared: Optional[tuple[Text, Optional[Text], str, Union[bool, Callable[[], bool]]]] = None


def same_command(argv: list[str]) -> str:
    """The ``nuim`` command line with arguments ``argv``, to run again."""
    return shlex.join(["nuim", *argv])


def on_interrupt(kept: Text, command: Optional[Text] = None, note: str = "",
                 resumes: Union[bool, Callable[[], bool]] = True) -> None:
    """Declare what Ctrl-C from now on keeps and how to go on (``command`` defaults to the same
    command line, see :func:`interrupted`).

    ``kept``, ``command`` and ``resumes`` may be functions, called when the interruption happens.
    """
    global _declared
    _declared = (kept, command, note, resumes)


def reset() -> None:
    """Forget the declaration (start of a new invocation)."""
    global _declared
    _declared = None


def interrupted(argv: list[str]) -> Interrupted:
    """The :class:`Interrupted` the running command declared (a cautious default when it declared
    none); ``argv``, the command's arguments, make the default "start again" command."""
    if _declared is None:
        return Interrupted("nothing half-written (outputs are written atomically)", same_command(argv), resumes=False)
    kept, command, note, resumes = _declared
    kept_text = kept() if callable(kept) else kept
    command_text = command() if callable(command) else command
    return Interrupted(kept_text, command_text or same_command(argv), note, resumes() if callable(resumes) else resumes)
