"""pvd's connection to one monitor: requests with futures, events to a callback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvtui.daemon import protocol
from pvtui.daemon.protocol import ProtocolError
from pvtui.errors import PvtuiError

REQUEST_TIMEOUT_S = 15.0


class MonitorGone(PvtuiError):
    """The monitor's connection closed (it exited or was killed); a request for it is answered ``gone``."""

    code = "gone"

    def __init__(self) -> None:
        super().__init__("The domain's monitor is gone", "It exited or was killed; see pvtui list.")


class MonitorLink:
    """pvd's side of one monitor's socket (a :class:`~pvtui.daemon.protocol.Channel`)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[dict[str, Any]], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._channel = protocol.Channel(
            reader,
            writer,
            on_event,
            on_lost,
            error=lambda e: ProtocolError(e.get("code", "error"), e.get("title", "Error"), e.get("message", "")),
            lost=MonitorGone,
        )

    @property
    def closed(self) -> bool:
        return self._channel.closed

    @classmethod
    async def connect(
        cls, path: Path, on_event: Callable[[dict[str, Any]], None], on_lost: Callable[[], None]
    ) -> MonitorLink:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=protocol.MAX_MESSAGE_BYTES + 1)
        link = cls(reader, writer, on_event, on_lost)
        await link.request("subscribe")
        return link

    async def request(self, op: str, **args: Any) -> Any:
        return await self._channel.request(op, args, REQUEST_TIMEOUT_S)

    def close(self) -> None:
        self._channel.close()
