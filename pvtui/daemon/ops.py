"""Daemon ops, each declared once: its name, its arguments, its handler, who may call it.

pvd and every monitor serve a table of these through the one request loop
in :mod:`pvtui.daemon.serve`. A new op is one decorated method::

    @PVD_OPS.op("pause", {"name": str}, fresh_stats=True, changes=True)
    async def op_pause(self, client: ClientConn, args: dict[str, Any]) -> Any: ...

Argument schemas are checked by :func:`pvtui.daemon.protocol.parse_request`
before the handler runs: ``"key?"`` marks an optional argument, a tuple of
types admits any of them, and unknown arguments are refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

#: Who may send an op: pvd's clients (the same uid, over pvd.sock), or pvd over a monitor's socket.
CLIENTS = "clients"
PVD = "pvd"

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True)
class Op:
    name: str
    args: dict[str, Any]
    method: str
    callers: str
    #: The reply is the monitor's stats after the change (pvd refreshes its cache from it).
    fresh_stats: bool = False
    #: The reply hands the connection to a byte stream (a migration); nothing else may be written to it.
    takes_over: bool = False
    #: It changes something (a domain, the engine): pvd's journal records it, done or refused.
    changes: bool = False


class OpTable:
    """The ops one server answers; handlers are methods of the serving object."""

    def __init__(self, callers: str) -> None:
        self.callers = callers
        self.ops: dict[str, Op] = {}

    def op(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        fresh_stats: bool = False,
        takes_over: bool = False,
        changes: bool = False,
    ) -> Callable[[F], F]:
        def register(handler: F) -> F:
            if name in self.ops:
                raise ValueError(f"op {name} declared twice")
            self.ops[name] = Op(
                name, dict(args or {}), handler.__name__, self.callers, fresh_stats, takes_over, changes
            )
            return handler

        return register

    @property
    def schemas(self) -> dict[str, dict[str, Any]]:
        return {name: op.args for name, op in self.ops.items()}

    def handler(self, target: object, name: str) -> Callable[[Any, dict[str, Any]], Awaitable[Any]]:
        handler: Callable[[Any, dict[str, Any]], Awaitable[Any]] = getattr(target, self.ops[name].method)
        return handler


PVD_OPS = OpTable(CLIENTS)
MONITOR_OPS = OpTable(PVD)
