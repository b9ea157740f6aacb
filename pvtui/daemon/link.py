"""pvd's connection to one monitor: requests with futures, events to a callback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pvtui.daemon import protocol
from pvtui.daemon.privileges import peer_credentials
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
        cls,
        address: str,
        on_event: Callable[[dict[str, Any]], None],
        on_lost: Callable[[], None],
        expected_pid: int | None = None,
    ) -> MonitorLink:
        """Connect to a monitor's socket; refuse (OSError) one held by a process other than ``expected_pid``.

        The socket is an abstract name anyone could bind first: a monitor
        that squats on another domain's name is not believed.
        """
        reader, writer = await asyncio.open_unix_connection(address, limit=protocol.MAX_MESSAGE_BYTES + 1)
        pid, _, _ = peer_credentials(writer.get_extra_info("socket"))
        if expected_pid is not None and pid != expected_pid:
            writer.close()
            raise OSError(f"the socket for this domain is held by pid {pid}, not its monitor {expected_pid}")
        link = cls(reader, writer, on_event, on_lost)
        await link.request("subscribe")
        return link

    async def request(self, op: str, **args: Any) -> Any:
        return await self._channel.request(op, args, REQUEST_TIMEOUT_S)

    def close(self) -> None:
        self._channel.close()
