"""One host of the fleet: its own connection and worker, so a slow or gone host never slows the others.

Each :class:`HostLink` runs one asyncio task: connect (through the host's
SSH master if remote), then once a second ask for ``list`` and ``host``,
each request bounded by :data:`REQUEST_TIMEOUT_S`; on any failure it marks
the host unreachable (since when, and why), drops the connection and tries
again with backoff. It never starts a pvd. Every change is handed to
``on_change`` (the app turns it into a message: threads never touch widgets,
and this runs on the app's loop anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pvtui.client import Client, DomainSummary, EngineError, HostInfo
from pvtui.client.connect import connect_host
from pvtui.client.hosts import HostUri
from pvtui.errors import PvtuiError

POLL_S = 1.0
REQUEST_TIMEOUT_S = 3.0
BACKOFF_S = (1.0, 2.0, 4.0, 8.0)


@dataclass
class HostLink:
    name: str
    uri: HostUri
    on_change: Callable[[HostLink], None]
    client: Client | None = None
    domains: list[DomainSummary] = field(default_factory=list)
    host: HostInfo | None = None
    #: When the host stopped answering (None: it answers); ``error`` says what failed.
    down_since: float | None = None
    error: str = ""
    connected_once: bool = False
    _task: asyncio.Task[None] | None = None

    @property
    def reachable(self) -> bool:
        return self.client is not None and self.down_since is None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"fleet:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._drop()

    async def _drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self.client is None:
                    self.client = await asyncio.wait_for(connect_host(self.uri), REQUEST_TIMEOUT_S * 4)
                    self.connected_once = True
                domains = await asyncio.wait_for(self.client.list_domains(), REQUEST_TIMEOUT_S)
                host = await asyncio.wait_for(self.client.host(), REQUEST_TIMEOUT_S)
                self.domains, self.host = domains, host
                self.down_since, self.error, failures = None, "", 0
                self.on_change(self)
                await asyncio.sleep(POLL_S)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, PvtuiError, EngineError, OSError) as exc:
                if self.down_since is None:
                    self.down_since = time.time()
                self.error = exc.title if isinstance(exc, PvtuiError) else f"no answer within {REQUEST_TIMEOUT_S:g} s"
                await self._drop()
                self.on_change(self)
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
