"""Async client of pvd: connects (starting pvd when needed), typed calls, events.

Every error pvd reports becomes an :class:`EngineError` whose title and
message say what happened and what to do. The module imports neither the
engine nor the UI, so ``pvtui list`` starts fast.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pvtui.client.history import DomainHistory, HostHistory
from pvtui.client.journal import JournalEntry
from pvtui.client.models import (
    Destroyed,
    DomainInfo,
    DomainStats,
    DomainSummary,
    EngineHello,
    EngineStopping,
    HostInfo,
    HypercallInfo,
    SchedCredit,
    ShutdownRequest,
    VcpuInfo,
)
from pvtui.daemon import paths
from pvtui.daemon.protocol import MAX_REPLY_BYTES, Channel
from pvtui.domain.limits import SHUTDOWN_TIMEOUT_S
from pvtui.errors import PvtuiError

START_TIMEOUT_S = 15.0


class EngineError(PvtuiError):
    """pvd refused a request or could not be reached; ``code`` is pvd's error code."""

    def __init__(self, title: str, message: str, code: str = "error") -> None:
        super().__init__(title, message)
        self.code = code


def default_domains_dir() -> Path:
    """``$PVTUI_DOMAINS_DIR``, else ``./domains`` if present, else ``~/.config/pvtui/domains``."""
    override = os.environ.get("PVTUI_DOMAINS_DIR")
    if override:
        return Path(override)
    local = Path("domains")
    if local.is_dir():
        return local.resolve()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "pvtui" / "domains"


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._channel = Channel(
            reader,
            writer,
            on_event=self._events.put_nowait,
            on_closed=lambda: self._events.put_nowait(None),
            error=lambda e: EngineError(e.get("title", "Error"), e.get("message", ""), e.get("code", "error")),
            lost=lambda: EngineError("Lost the connection to pvd", "Is it still running? Retry.", "down"),
            max_bytes=MAX_REPLY_BYTES,
        )

    @property
    def closed(self) -> bool:
        return self._channel.closed

    # --- connecting ---------------------------------------------------------------------
    @classmethod
    async def connect(cls, start: bool = True, domains_dir: Path | None = None) -> Client:
        """Connect to pvd; start it first (detached) when it is not running and ``start``."""
        sock = paths.socket_path()
        try:
            return await cls._open(sock)
        except (FileNotFoundError, ConnectionRefusedError):
            if not start:
                raise EngineError(
                    "pvd is not running",
                    "Start it with: pvtui engine start (pvtui create and the pvtui TUI start it too).",
                    "down",
                ) from None
        spawn_pvd(domains_dir or default_domains_dir())
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                return await cls._open(sock)
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise EngineError(
                        "pvd did not start", f"See {paths.log_path()} for why; then retry.", "down"
                    ) from None
                await asyncio.sleep(0.02)

    @classmethod
    async def _open(cls, sock: Path) -> Client:
        try:
            reader, writer = await asyncio.open_unix_connection(str(sock), limit=MAX_REPLY_BYTES + 1)
        except PermissionError:
            raise EngineError(
                "Permission denied",
                f"You may not use {sock}: pvd runs as another user. Run pvtui as that user.",
                "permission",
            ) from None
        client = cls(reader, writer)
        await client.call("hello")
        return client

    async def close(self) -> None:
        self._channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- transport ------------------------------------------------------------------------
    async def call(self, op: str, **args: Any) -> Any:
        return await self._channel.request(op, args)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Events this connection subscribed to, until the connection closes."""
        while True:
            message = await self._events.get()
            if message is None:
                return
            yield message

    # --- typed calls ------------------------------------------------------------------------
    async def hello(self) -> EngineHello:
        return EngineHello.from_dict(await self.call("hello"))

    async def host(self) -> HostInfo:
        return HostInfo.from_dict(await self.call("host"))

    async def list_domains(self, fresh: bool = False) -> list[DomainSummary]:
        """Every domain; ``fresh`` has pvd read every monitor's counters first (not its last 1 Hz round)."""
        return [DomainSummary.from_dict(d) for d in await self.call("list", **({"fresh": True} if fresh else {}))]

    async def info(self, name: str) -> DomainInfo:
        return DomainInfo.from_dict(await self.call("info", name=name))

    async def create(self, path: str | os.PathLike[str]) -> DomainSummary:
        return DomainSummary.from_dict(await self.call("create", path=str(Path(path).resolve())))

    async def create_from_text(self, text: str, source: str = "<sent>") -> DomainSummary:
        """Create from a definition's text (pvd on another host cannot read this machine's files)."""
        return DomainSummary.from_dict(await self.call("create", text=text, source=source))

    async def shutdown(self, name: str, wait: bool = False, timeout: float = SHUTDOWN_TIMEOUT_S) -> ShutdownRequest:
        return ShutdownRequest.from_dict(await self.call("shutdown", name=name, wait=wait, timeout=timeout))

    async def reboot(self, name: str) -> ShutdownRequest:
        return ShutdownRequest.from_dict(await self.call("reboot", name=name))

    async def destroy(self, name: str) -> Destroyed:
        return Destroyed.from_dict(await self.call("destroy", name=name))

    async def pause(self, name: str) -> DomainStats:
        return DomainStats.from_dict(await self.call("pause", name=name))

    async def unpause(self, name: str) -> DomainStats:
        return DomainStats.from_dict(await self.call("unpause", name=name))

    async def vcpu_set(self, name: str, count: int) -> DomainStats:
        return DomainStats.from_dict(await self.call("vcpu_set", name=name, count=count))

    async def vcpu_list(self, name: str) -> list[VcpuInfo]:
        return [VcpuInfo.from_dict(v) for v in await self.call("vcpu_list", name=name)]

    async def vcpu_pin(self, name: str, vcpu: int, cpus: str) -> DomainStats:
        return DomainStats.from_dict(await self.call("vcpu_pin", name=name, vcpu=vcpu, cpus=cpus))

    async def sched_credit(self, name: str, weight: int | None = None, cap: int | None = None) -> SchedCredit:
        args: dict[str, Any] = {"name": name}
        if weight is not None:
            args["weight"] = weight
        if cap is not None:
            args["cap"] = cap
        return SchedCredit.from_dict(await self.call("sched_credit", **args))

    async def mem_set(self, name: str, size: int | str) -> DomainStats:
        """Balloon target: ``size`` in bytes (int) or human units ("512M")."""
        return DomainStats.from_dict(await self.call("mem_set", name=name, size=_size_arg(size)))

    async def mem_max(self, name: str, size: int | str) -> DomainStats:
        """Grow present memory to ``size`` (bytes, or "1G")."""
        return DomainStats.from_dict(await self.call("mem_max", name=name, size=_size_arg(size)))

    async def console(self, name: str, offset: int = 0) -> tuple[str, int]:
        """The console kept since ``offset`` (all of it: replies come in bounded pieces) and the new offset."""
        parts: list[str] = []
        while True:
            result = await self.call("console", name=name, offset=offset)
            parts.append(result["text"])
            offset = result["offset"]
            if not result.get("more"):
                return "".join(parts), offset

    async def hypercalls(self, name: str, after: int = 0, limit: int = 1000) -> list[HypercallInfo]:
        return [HypercallInfo.from_dict(r) for r in await self.call("hypercalls", name=name, after=after, limit=limit)]

    async def journal(
        self, domain: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[JournalEntry]:
        """pvd's journal, oldest first: what happened (to ``domain``, or to all), since a time."""
        args: dict[str, Any] = {"limit": limit}
        if domain is not None:
            args["domain"] = domain
        if since is not None:
            args["since"] = since
        return [JournalEntry.from_dict(entry) for entry in await self.call("events", **args)]

    async def history(self, name: str) -> DomainHistory:
        """The domain's last ten minutes of counters, as its monitor kept them (see pvtui/client/history.py)."""
        return DomainHistory.from_export(await self.call("history", name=name))

    async def host_history(self) -> HostHistory:
        return HostHistory.from_export(await self.call("host_history"))

    async def subscribe(self, topics: list[str], domains: list[str] | None = None) -> None:
        args: dict[str, Any] = {"topics": topics}
        if domains:
            args["domains"] = domains
        await self.call("subscribe", **args)

    # --- moving domains (docs/snapshot.md) -------------------------------------------------
    async def save(self, name: str, path: str, keep: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("save", name=name, path=path, keep=keep)
        return result

    async def restore(self, path: str, name: str | None = None, paused: bool = False) -> DomainSummary:
        args: dict[str, Any] = {"path": path, "paused": paused}
        if name:
            args["name"] = name
        return DomainSummary.from_dict(await self.call("restore", **args))

    async def suspend(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("suspend", name=name)
        return result

    async def resume(self, name: str, paused: bool = False) -> DomainSummary:
        return DomainSummary.from_dict(await self.call("resume", name=name, paused=paused))

    async def migrate(self, name: str, target: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("migrate", name=name, target=target)
        return result

    async def migrate_cancel(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("migrate_cancel", name=name)
        return result

    async def engine_stop(self, destroy_domains: bool = False) -> EngineStopping:
        return EngineStopping.from_dict(await self.call("engine_stop", destroy_domains=destroy_domains))


def _size_arg(size: int | str) -> str:
    """The wire form of a size: pvd reads a bare number as MiB (as xl does), so bytes get a unit."""
    return f"{size}B" if isinstance(size, int) else size


def spawn_pvd(domains_dir: Path | None) -> None:
    """Start pvd detached from this process (its own session, output to its log)."""
    paths.ensure_private_dir(paths.runtime_dir())
    paths.rotate_if_large(paths.log_path())
    log = open(paths.log_path(), "ab")  # noqa: SIM115 - handed to the child
    cmd = [sys.executable, "-m", "pvtui.daemon"]
    if domains_dir is not None:
        cmd += ["--domains", str(domains_dir)]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env, close_fds=True
    )
    log.close()
