"""A domain's lifecycle states (Xen's) and the letters xl and xentop show for them.

Engine-free: the engine, pvd, the client, the CLI and the UI all name
states through this one enum (``pvtui.engine.states`` adds which
transitions between them are legal).
"""

from __future__ import annotations

from enum import StrEnum


class DomainState(StrEnum):
    BUILDING = "building"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    CRASHED = "crashed"
    DYING = "dying"
    DEAD = "dead"

    @property
    def flag(self) -> str:
        """The one-letter flag xentop shows in its STATE column (``-`` for none)."""
        return _LETTERS.get(self, "-")


#: xl's six-character state column, one position per letter: r b p s c d.
_LETTERS = {
    DomainState.RUNNING: "r",
    DomainState.BLOCKED: "b",
    DomainState.PAUSED: "p",
    DomainState.SHUTDOWN: "s",
    DomainState.CRASHED: "c",
    DomainState.DYING: "d",
}
_COLUMN = list(_LETTERS)


def state_flag(state: str) -> str:
    """The letter of a state given by name; ``-`` for an unknown or letterless one."""
    try:
        return DomainState(state).flag
    except ValueError:
        return "-"


def xl_flags(state: str) -> str:
    """xl list's STATE column: six places, the state's letter in its own (``--b---``)."""
    flags = ["-"] * len(_COLUMN)
    letter = state_flag(state)
    if letter != "-":
        flags[_COLUMN.index(DomainState(state))] = letter
    return "".join(flags)
