"""The one request loop pvd and every monitor serve their sockets with.

Reads JSON lines up to the size limit, checks each request against the
server's :class:`~pvtui.daemon.ops.OpTable`, runs its handler and writes the
reply. Every failure becomes an error reply and the connection goes on: a
refusal (``PvtuiError``, its ``code`` if it has one, else ``refused``), a bad
request (``ProtocolError``), and a bug in a handler (``internal``, logged
with its traceback) — a handler's exception never drops a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from pvtui.daemon import protocol
from pvtui.daemon.ops import OpTable
from pvtui.daemon.protocol import ProtocolError
from pvtui.errors import PvtuiError


async def serve_requests(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    table: OpTable,
    target: object,
    conn: Any,
    log: logging.Logger,
) -> None:
    """Answer requests on one connection until it closes. ``conn`` is handed to every handler."""
    schemas = table.schemas
    try:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                error = ProtocolError(
                    "too_large", "Request too large", f"The limit is {protocol.MAX_MESSAGE_BYTES} bytes."
                )
                writer.write(protocol.reply_error(None, error))
                await writer.drain()
                # Take in what the peer still sends before hanging up: closing with unread
                # data resets the connection, and the peer would lose the reply saying why.
                with contextlib.suppress(asyncio.TimeoutError, ConnectionError, ValueError):
                    while await asyncio.wait_for(reader.read(protocol.MAX_MESSAGE_BYTES), 0.5):
                        pass
                break
            if not line:
                break
            writer.write(await _answer(line, table, schemas, target, conn, log))
            await writer.drain()
            served = getattr(target, "request_served", None)
            if served is not None:  # a monitor that sleeps while its domain is idle looks again
                served()
            takeover = getattr(conn, "takeover", None)
            if takeover is not None:  # the connection now carries something else (a migration stream)
                await takeover(reader, writer)
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass


async def _answer(
    line: bytes, table: OpTable, schemas: dict[str, dict[str, Any]], target: object, conn: Any, log: logging.Logger
) -> bytes:
    request_id: int | None = None
    try:
        message = protocol.decode(line)
        request_id = message["id"] if isinstance(message.get("id"), int) else None
        request = protocol.parse_request(message, schemas)
        journal = getattr(target, "journal_request", None)
        try:
            result = await table.handler(target, request.op)(conn, request.args)
        except (PvtuiError, ProtocolError) as exc:
            if journal is not None:
                journal(request.op, request.args, exc, None)
            raise
        if journal is not None:
            journal(request.op, request.args, None, result)
        return protocol.reply_ok(request.id, result)
    except ProtocolError as exc:
        return protocol.reply_error(request_id, exc)
    except PvtuiError as exc:
        code = getattr(exc, "code", "refused")
        return protocol.reply_error(request_id, ProtocolError(code, exc.title, exc.message))
    except Exception as exc:  # a bug in one request must not cut its caller off
        log.exception("request failed: %s", line[:200])
        error = ProtocolError("internal", "Internal engine error", f"{exc!r}; the engine's log has the details.")
        return protocol.reply_error(request_id, error)
