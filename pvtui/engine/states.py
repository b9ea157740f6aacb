"""Which changes between domain lifecycle states (``pvtui.domain.state``) are legal.

The table is the single place that says which changes are legal;
:class:`~pvtui.engine.domain.Domain` refuses anything else.
"""

from __future__ import annotations

from pvtui.domain.state import DomainState

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


__all__ = ["TRANSITIONS", "DomainState", "valid_transition"]
