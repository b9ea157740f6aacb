"""The exit codes of every ``pvtui`` verb (an XTF kernel's ``run`` uses xtf-runner's: ``cli/xtf.py``)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    #: ``run``: the guest crashed (or crash-looped).
    GUEST_CRASHED = 1
    #: Bad input: a domain file, an argument; nothing was done.
    INVALID = 2
    #: The engine refused or could not run; the message says what to do.
    ENGINE = 3
    #: Ctrl-C.
    INTERRUPTED = 130
    #: The reader of the output went away (``pvtui list | head``), as a shell reports SIGPIPE.
    OUTPUT_CLOSED = 141
