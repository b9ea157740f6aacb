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

#: Requests one connection may have running at once when they run side by side (pvd's clients);
#: past it, pvd reads nothing more from that connection until one ends.
MAX_IN_FLIGHT = 32


async def serve_requests(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    table: OpTable,
    target: object,
    conn: Any,
    log: logging.Logger,
    side_by_side: bool = False,
) -> None:
    """Answer requests on one connection until it closes. ``conn`` is handed to every handler.

    With ``side_by_side`` (pvd), requests on one connection run at once and
    each reply goes out when ready, carrying its request's id: a client with
    several creates in flight gets several monitors starting together, and a
    slow request does not hold up a quick one. An op that takes the
    connection over (a migration stream) waits for the others to finish and
    runs alone. A monitor answers pvd in order, one at a time.
    """
    schemas = table.schemas
    running: set[asyncio.Task[None]] = set()
    room = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def answer(parsed: protocol.Request | bytes) -> None:
        reply = parsed if isinstance(parsed, bytes) else await _run(parsed, table, target, conn, log)
        with contextlib.suppress(ConnectionError):
            writer.write(reply)
            await writer.drain()
        served = getattr(target, "request_served", None)
        if served is not None:  # a monitor that sleeps while its domain is idle looks again
            served()

    def finished(task: asyncio.Task[None]) -> None:
        running.discard(task)
        room.release()

    try:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                error = ProtocolError(
                    "too_large", "Request too large", f"The limit is {protocol.MAX_MESSAGE_BYTES} bytes."
                )
                if running:
                    await asyncio.wait(running)
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
            parsed = _parse(line, schemas)
            takes_over = isinstance(parsed, protocol.Request) and table.ops[parsed.op].takes_over
            if side_by_side and not takes_over:
                await room.acquire()
                task = asyncio.get_running_loop().create_task(answer(parsed))
                running.add(task)
                task.add_done_callback(finished)
                continue
            if running:
                await asyncio.wait(running)
            await answer(parsed)
            takeover = getattr(conn, "takeover", None)
            if takeover is not None:  # the connection now carries something else (a migration stream)
                await takeover(reader, writer)
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        # A request the peer gave up on still finishes (a create half done would leave a monitor
        # nobody knows of); its reply goes nowhere.
        if running:
            await asyncio.wait(running)


def _parse(line: bytes, schemas: dict[str, dict[str, Any]]) -> protocol.Request | bytes:
    """The request on ``line``, or the error reply that refuses it."""
    request_id: int | None = None
    try:
        message = protocol.decode(line)
        request_id = message["id"] if isinstance(message.get("id"), int) else None
        return protocol.parse_request(message, schemas)
    except ProtocolError as exc:
        return protocol.reply_error(request_id, exc)
    except Exception as exc:  # a parser bug must not cut the caller off either
        logging.getLogger(__name__).exception("cannot parse request: %.200r", line)
        error = ProtocolError("internal", "Internal engine error", f"{exc!r}; the engine's log has the details.")
        return protocol.reply_error(request_id, error)


async def _run(request: protocol.Request, table: OpTable, target: object, conn: Any, log: logging.Logger) -> bytes:
    """Run a checked request's handler; its reply, or the error reply saying why it failed."""
    journal = getattr(target, "journal_request", None)
    try:
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
        return protocol.reply_error(request.id, exc)
    except PvtuiError as exc:
        code = getattr(exc, "code", "refused")
        return protocol.reply_error(request.id, ProtocolError(code, exc.title, exc.message))
    except Exception as exc:  # a bug in one request must not cut its caller off
        log.exception("request %s failed: %.200r", request.op, request.args)
        error = ProtocolError("internal", "Internal engine error", f"{exc!r}; the engine's log has the details.")
        return protocol.reply_error(request.id, error)
