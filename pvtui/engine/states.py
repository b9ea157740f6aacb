"""Domain lifecycle states (Xen's) and the transitions between them.

The table is the single place that says which changes are legal;
:class:`~pvtui.engine.domain.Domain` refuses anything else.
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
        """The one-letter flag xentop shows in its STATE column."""
        return _FLAGS[self]


_FLAGS = {
    DomainState.BUILDING: "-",
    DomainState.RUNNING: "r",
    DomainState.BLOCKED: "b",
    DomainState.PAUSED: "p",
    DomainState.SHUTDOWN: "s",
    DomainState.CRASHED: "c",
    DomainState.DYING: "d",
    DomainState.DEAD: "-",
}

S = DomainState
TRANSITIONS: dict[DomainState, frozenset[DomainState]] = {
    S.BUILDING: frozenset({S.RUNNING, S.PAUSED, S.DYING}),
    S.RUNNING: frozenset({S.BLOCKED, S.PAUSED, S.SHUTDOWN, S.CRASHED, S.DYING}),
    S.BLOCKED: frozenset({S.RUNNING, S.PAUSED, S.SHUTDOWN, S.CRASHED, S.DYING}),
    S.PAUSED: frozenset({S.RUNNING, S.BLOCKED, S.SHUTDOWN, S.CRASHED, S.DYING}),
    S.SHUTDOWN: frozenset({S.DYING}),
    S.CRASHED: frozenset({S.DYING}),
    S.DYING: frozenset({S.DEAD}),
    S.DEAD: frozenset(),
}


def valid_transition(current: DomainState, target: DomainState) -> bool:
    return target in TRANSITIONS[current]
