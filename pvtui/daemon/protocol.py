"""The wire protocol between clients, pvd and monitors.

One JSON object per line (UTF-8, ``\\n``-terminated), at most
``MAX_MESSAGE_BYTES``, but for pvd's reply to ``list`` (``MAX_REPLY_BYTES``:
a thousand domains take ~650 KB). Every message carries ``"v": PROTOCOL_VERSION``.

- request: ``{"v": 1, "id": 7, "op": "list", "args": {...}}``
- reply:   ``{"v": 1, "id": 7, "ok": true, "result": ...}`` or
  ``{"v": 1, "id": 7, "ok": false, "error": {"code", "title", "message"}}``
- event:   ``{"v": 1, "event": "stats", "domain": "web", "data": {...}}``

A request that is not JSON, too large, of another version, or names an
unknown op or argument is answered with an error and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20
#: pvd's list of every domain (a :class:`RawJson` reply), which clients read with this limit.
MAX_REPLY_BYTES = 16 << 20


class ProtocolError(Exception):
    """A message the receiver refuses; ``code`` is machine-readable."""

    def __init__(self, code: str, title: str, message: str) -> None:
        super().__init__(f"{title}: {message}")
        self.code = code
        self.title = title
        self.message = message

    def to_error(self) -> dict[str, str]:
        return {"code": self.code, "title": self.title, "message": self.message}


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    args: dict[str, Any]


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps({"v": PROTOCOL_VERSION, **message}, separators=(",", ":")).encode() + b"\n"
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", "Message too large", f"{len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}.")
    return data


def decode(line: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Parse one line; raise ProtocolError for anything that is not a v1 JSON object."""
    if len(line) > max_bytes:
        raise ProtocolError("too_large", "Request too large", f"The limit is {max_bytes} bytes per message.")
    try:
        message = orjson.loads(line)  # ~3.5x json's speed: a thousand domains' list reply is 0.6 MB
    except ValueError as exc:  # bad JSON or UTF-8, a number out of a double's range, nesting past 1,024
        raise ProtocolError(
            "malformed", "Malformed request", f"Not JSON: {exc}. Send one JSON object per line."
        ) from None
    if not isinstance(message, dict):
        raise ProtocolError("malformed", "Malformed request", "A message is a JSON object.")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            "version",
            "Protocol version mismatch",
            f"This pvd speaks version {PROTOCOL_VERSION}, the message says {message.get('v')!r}. "
            "Restart pvd (pvtui engine stop) after upgrading pvtui.",
        )
    return message


def parse_request(message: dict[str, Any], schema: dict[str, dict[str, type | tuple[type, ...]]]) -> Request:
    """Check a request against ``schema`` (op -> {arg: type}); optional args end in '?'."""
    request_id = message.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise ProtocolError("malformed", "Malformed request", "A request needs an integer id.")
    op = message.get("op")
    if op not in schema:
        raise ProtocolError(
            "unknown_op", "Unknown request", f"{op!r} is not a pvd request; known: {', '.join(sorted(schema))}."
        )
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("malformed", "Malformed request", "args must be a JSON object.")
    expected = schema[op]
    for name, value in args.items():
        spec = expected.get(name, expected.get(name + "?"))
        if spec is None:
            raise ProtocolError("bad_args", f"Unknown argument to {op}", f"{name!r} is not an argument of {op}.")
        if not isinstance(value, spec) or (isinstance(value, bool) and bool not in _as_tuple(spec)):
            raise ProtocolError(
                "bad_args", f"Bad argument to {op}", f"{name} has the wrong type ({type(value).__name__})."
            )
    for name in expected:
        if not name.endswith("?") and name not in args:
            raise ProtocolError("bad_args", f"Missing argument to {op}", f"{op} needs {name!r}.")
    return Request(request_id, op, args)


def _as_tuple(spec: type | tuple[type, ...]) -> tuple[type, ...]:
    return spec if isinstance(spec, tuple) else (spec,)


class RawJson(bytes):
    """A result already encoded as JSON (pvd keeps each domain's summary encoded)."""


def reply_ok(request_id: int, result: Any) -> bytes:
    if isinstance(result, RawJson):
        data = b'{"v":%d,"id":%d,"ok":true,"result":%s}\n' % (PROTOCOL_VERSION, request_id, result)
        if len(data) > MAX_REPLY_BYTES:
            raise ProtocolError("too_large", "Reply too large", f"{len(data)} bytes; the limit is {MAX_REPLY_BYTES}.")
        return data
    return encode({"id": request_id, "ok": True, "result": result})


def reply_error(request_id: int | None, error: ProtocolError) -> bytes:
    return encode({"id": request_id, "ok": False, "error": error.to_error()})


def event(kind: str, domain: str | None, data: Any) -> bytes:
    return encode({"event": kind, "domain": domain, "data": data})


class Channel:
    """One JSON-lines connection: requests matched to replies by id, events to a callback.

    Used by the client (to pvd) and by pvd (to each monitor); they differ only
    in what an error reply and a lost connection become.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[dict[str, Any]], None],
        on_closed: Callable[[], None],
        error: Callable[[dict[str, Any]], Exception],
        lost: Callable[[], Exception],
        max_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        """``max_bytes``: the longest message read (the reader's own limit must allow it)."""
        self._max_bytes = max_bytes
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._on_closed = on_closed
        self._error = error
        self._lost = lost
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.closed = False
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    async def request(self, op: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        if self.closed:
            raise self._lost()
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._writer.write(encode({"id": request_id, "op": op, "args": args}))
            try:
                await self._writer.drain()
            except ConnectionError:  # the peer went between our last read and this write: the same loss
                raise self._lost() from None
            return await (asyncio.wait_for(future, timeout) if timeout else future)
        finally:
            self._pending.pop(request_id, None)

    async def _read_loop(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                message = decode(line, self._max_bytes)
                if "event" in message:
                    self._on_event(message)
                    continue
                reply_id = message.get("id")
                if reply_id is None:
                    # A reply without an id (a refused connection) answers every waiter.
                    waiters = list(self._pending.values())
                else:
                    # The reply to a request whose caller gave up (cancelled, timed out)
                    # answers no one: handing it to another waiter would give that one
                    # a reply to a different question.
                    future = self._pending.get(reply_id)
                    waiters = [] if future is None else [future]
                for waiter in waiters:
                    if waiter.done():
                        continue
                    if message.get("ok"):
                        waiter.set_result(message.get("result"))
                    else:
                        waiter.set_exception(self._error(message.get("error") or {}))
        except (ConnectionError, ProtocolError, ValueError):
            pass
        finally:
            self.closed = True
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(self._lost())
            with contextlib.suppress(Exception):
                self._writer.close()
            self._on_closed()

    def close(self) -> None:
        self.closed = True
        self._task.cancel()
        with contextlib.suppress(Exception):
            self._writer.close()


async def request_on(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, op: str, **args: Any
) -> dict[str, Any]:
    """One request on a connection that carries nothing else (yet: it may turn into a migration
    stream after the reply); the reply decoded, ``ConnectionError`` if the peer hung up instead."""
    writer.write(encode({"id": 1, "op": op, "args": args}))
    await writer.drain()
    line = await reader.readline()
    if not line:
        raise ConnectionError(f"the pvd closed the connection without answering {op}")
    return decode(line)
