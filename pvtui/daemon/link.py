"""pvd's connection to one monitor: requests with futures, events to a callback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvtui.daemon import protocol
from pvtui.daemon.protocol import ProtocolError

REQUEST_TIMEOUT_S = 15.0


class MonitorGone(Exception):
    """The monitor's connection closed (it exited or was killed)."""


class MonitorLink:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[dict[str, Any]], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._on_lost = on_lost
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.closed = False
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(
        cls, path: Path, on_event: Callable[[dict[str, Any]], None], on_lost: Callable[[], None]
    ) -> MonitorLink:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=protocol.MAX_MESSAGE_BYTES + 1)
        link = cls(reader, writer, on_event, on_lost)
        await link.request("subscribe")
        return link

    async def request(self, op: str, **args: Any) -> Any:
        if self.closed:
            raise MonitorGone()
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._writer.write(protocol.encode({"id": request_id, "op": op, "args": args}))
        await self._writer.drain()
        try:
            return await asyncio.wait_for(future, REQUEST_TIMEOUT_S)
        finally:
            self._pending.pop(request_id, None)

    async def _read_loop(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                message = protocol.decode(line)
                if "event" in message:
                    self._on_event(message)
                    continue
                future = self._pending.get(message.get("id"))
                if future is None or future.done():
                    continue
                if message.get("ok"):
                    future.set_result(message.get("result"))
                else:
                    error = message.get("error") or {}
                    future.set_exception(
                        ProtocolError(error.get("code", "error"), error.get("title", "Error"), error.get("message", ""))
                    )
        except (ConnectionError, ProtocolError, ValueError):
            pass
        finally:
            self.closed = True
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(MonitorGone())
            with contextlib.suppress(Exception):
                self._writer.close()
            self._on_lost()

    def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(Exception):
            self._writer.close()
