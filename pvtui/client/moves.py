"""Moving a domain between hosts: live (the client relays the migration stream) or cold.

A live move asks the source pvd for ``migrate_out`` and the target pvd for
``migrate_incoming`` on connections of their own (each through its host's
SSH master if remote), then copies bytes between the two until both close:
the same stream a local ``pvtui migrate`` uses, so its guarantees hold
(docs/snapshot.md): the domain runs on the source until the target runs it.
The outcome comes as the source pvd's last ``migration`` event.

A cold move shuts the domain down on the source, then creates it on the
target from the same definition; if the target refuses, it is created again
on the source. It is chosen when an engine cannot migrate, or when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvtui.client.client import Client, EngineError
from pvtui.client.connect import connect_host
from pvtui.client.hosts import HostUri
from pvtui.client.ssh import ensure_tunnel
from pvtui.daemon import paths, protocol

#: How long a move waits for the source's verdict once the stream has ended.
VERDICT_TIMEOUT_S = 30.0
RELAY_CHUNK = 1 << 20


@dataclass(frozen=True)
class MovePlan:
    name: str
    source: HostUri
    target: HostUri
    live: bool
    why: str

    def describe(self) -> str:
        how = "live migration" if self.live else "cold move (shut down, create there, start)"
        return f"{self.name}: {self.source} -> {self.target}: {how} ({self.why})"


async def _socket_of(uri: HostUri) -> Path:
    if uri.is_local:
        return paths.socket_path()
    if uri.scheme == "unix":
        return Path(uri.path)
    return await asyncio.to_thread(ensure_tunnel, uri)


async def _raw(uri: HostUri) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    path = await _socket_of(uri)
    try:
        return await asyncio.open_unix_connection(str(path), limit=protocol.MAX_REPLY_BYTES + 1)
    except OSError as exc:
        raise EngineError(
            f"Cannot reach the pvd on {uri}", f"{exc.strerror or exc}; is it running there?", "down"
        ) from None


async def _request(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, op: str, **args: Any) -> Any:
    try:
        reply = await protocol.request_on(reader, writer, op, **args)
    except ConnectionError:
        raise EngineError("The pvd closed the connection", f"It did not answer {op}; see its log.", "down") from None
    if "error" in reply:
        error = reply["error"]
        raise EngineError(error.get("title", "Refused"), error.get("message", ""), error.get("code", "refused"))
    return reply.get("result")


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def plan_move(
    source: Client, target: Client, name: str, source_uri: HostUri, target_uri: HostUri, cold: bool
) -> MovePlan:
    """Live when both engines can migrate (and the operator did not ask for cold), else cold; says why."""
    if (await source.host()).host_id == (await target.host()).host_id:
        raise EngineError(f"{target_uri} is the same engine as {source_uri}", "Name another host as the target.")
    if cold:
        return MovePlan(name, source_uri, target_uri, False, "asked for")
    features = [set((await c.call("hello")).get("features", [])) for c in (source, target)]
    if all("migrate" in f for f in features):
        return MovePlan(name, source_uri, target_uri, True, "both engines migrate live")
    return MovePlan(name, source_uri, target_uri, False, "an engine cannot migrate live")


async def live_move(
    source_uri: HostUri,
    target_uri: HostUri,
    name: str,
    progress: Callable[[dict[str, Any]], None] = lambda p: None,
) -> dict[str, Any]:
    """Relay a live migration from ``source_uri`` to ``target_uri``; the source's verdict, or an error."""
    watcher = await connect_host(source_uri)
    try:
        await watcher.subscribe(["migration"], [name])
        s_reader, s_writer = await _raw(source_uri)
        try:
            reply = await _request(s_writer, s_reader, "migrate_out", name=name)
            t_reader, t_writer = await _raw(target_uri)
            try:
                await _request(t_writer, t_reader, "migrate_incoming", meta=reply["meta"])
            except EngineError as exc:
                t_writer.close()
                raise EngineError(f"{target_uri} refused {name}: {exc.title}", exc.message, exc.code) from None
        except BaseException:
            s_writer.close()  # the source's monitor sees the stream end and keeps the domain running
            raise
        relay = asyncio.gather(_copy(s_reader, t_writer), _copy(t_reader, s_writer))
        verdict = await _verdict(watcher, name, progress, relay)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(relay, 5)
        return verdict
    finally:
        await watcher.close()


async def _verdict(
    watcher: Client, name: str, progress: Callable[[dict[str, Any]], None], relay: asyncio.Future[Any]
) -> dict[str, Any]:
    async def last_event() -> dict[str, Any]:
        async for event in watcher.events():
            if event.get("event") != "migration" or event.get("domain") != name:
                continue
            data = event.get("data") or {}
            if data.get("stage") in ("done", "failed") and ("rounds" in data or data.get("stage") == "failed"):
                return dict(data)
            progress(data)
        raise EngineError("Lost the source pvd during the move", f"Check where {name} runs (pvtui list on both).")

    waiting = asyncio.ensure_future(last_event())
    done, _ = await asyncio.wait({waiting, relay}, return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:  # the stream ended: the verdict follows shortly
        done, _ = await asyncio.wait({waiting}, timeout=VERDICT_TIMEOUT_S)
    if waiting not in done:
        waiting.cancel()
        raise EngineError("No word from the source pvd", f"The stream ended; check where {name} runs (pvtui list).")
    verdict = waiting.result()
    if verdict.get("stage") == "failed":
        raise EngineError(verdict.get("title", "Migration failed"), verdict.get("message", ""), "migration_failed")
    return verdict


async def cold_move(source: Client, target: Client, name: str, target_uri: HostUri) -> dict[str, Any]:
    """Shut down here, create there from the same definition; back here if there refuses."""
    definition = await source.call("definition", name=name)
    await source.shutdown(name, wait=True)
    try:
        created = await target.create_from_text(definition["text"], source=definition["path"])
    except EngineError as exc:
        await source.create_from_text(definition["text"], source=definition["path"])
        raise EngineError(
            f"{target_uri} refused {name}: {exc.title}",
            f"{exc.message} {name} was started again where it was (a cold move restarts the guest).",
            exc.code,
        ) from None
    return {"name": created.name, "domid": created.domid, "cold": True}


@dataclass(frozen=True)
class Endpoint:
    """One side of a move: the host's URI and a client connected to its pvd."""

    uri: HostUri
    client: Client


async def move_domain(
    source: Endpoint,
    target: Endpoint,
    name: str,
    cold: bool = False,
    on_plan: Callable[[MovePlan], None] = lambda plan: None,
    progress: Callable[[dict[str, Any]], None] = lambda p: None,
) -> tuple[MovePlan, dict[str, Any]]:
    """Plan the move (live or cold, and why), tell ``on_plan``, then do it; the plan and what it gave."""
    plan = await plan_move(source.client, target.client, name, source.uri, target.uri, cold)
    on_plan(plan)
    if plan.live:
        return plan, await live_move(source.uri, target.uri, name, progress)
    return plan, await cold_move(source.client, target.client, name, target.uri)
