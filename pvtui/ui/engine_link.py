"""The UI's link to pvd: one connection for requests, one for events, the figures it keeps.

pvd's events arrive as :class:`EngineEvent` messages, its once-a-second
figures for every domain as one :class:`StatsTick`; the highlighted domain's
figures are fetched ahead so Enter opens its view without a round trip.
Threads never touch widgets: workers post messages, handlers update screens.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import work
from textual.message import Message
from textual.notifications import SeverityLevel

from pvtui.client import Client, DomainSummary, EngineError, HostInfo
from pvtui.client.connect import connect_host, start_engine_on
from pvtui.client.hosts import HostUri
from pvtui.client.journal import JournalEntry
from pvtui.domain.model import DomainInfo
from pvtui.ui.screens.domain import DomainScreen
from pvtui.ui.screens.domains import DomainsScreen
from pvtui.ui.table import LiveTable
from pvtui.ui.theming import ThemedApp

#: The highlighted domain's figures are fetched ahead (once a second and after
#: the cursor settles); Enter uses them while they are this fresh.
PREFETCH_FRESH_S = 1.5
PREFETCH_SETTLE_S = 0.15

#: How often the garbage collector's full collection runs (see EngineLinkApp._freeze_startup_objects).
FULL_COLLECTION_S = 20.0
#: A gen-2 threshold no count of collections reaches: full collections run on the clock only.
NEVER_BY_COUNT = 1 << 30

#: How often pvtui looks for a pvd that came back after it stopped.
RECONNECT_S = 2.0
ENGINE_START_KEY = "S"


@dataclass
class EngineEvent(Message):
    """One event from pvd (stats, host, state, lifecycle)."""

    event: dict[str, Any]


@dataclass
class StatsTick(Message):
    """One round of pvd's 1 Hz figures: a message per round, not per domain.

    ``host`` is None when the round was cut short by another event, so that
    events keep their order.
    """

    domains: list[DomainSummary]
    host: HostInfo | None


class EngineLinkApp(ThemedApp):
    """The app's engine side (``PvtuiApp`` adds the screens and the actions)."""

    domains_dir: Path
    host_uri: HostUri
    client: Client | None
    domains: dict[str, DomainSummary]
    host: HostInfo | None
    domains_screen: DomainsScreen
    domain_screen: DomainScreen
    _domain_screen_built: bool
    _prefetched: tuple[str, float, DomainInfo] | None

    @work(exclusive=True, group="engine")
    async def connect_engine(self, start: bool = True) -> None:
        """Connect (starting pvd if ``start``), load the registry, then follow events.

        Once connected, pvtui never starts pvd by itself again: an engine that
        stops (``pvtui engine stop``, a crash) stays stopped until the operator
        presses the start key. Until then pvtui only looks, every
        :data:`RECONNECT_S`, for a pvd someone else started.
        """
        told_down = False
        while True:
            try:
                self.client = await connect_host(self.host_uri, start=start, domains_dir=self.domains_dir)
                events = await connect_host(self.host_uri)
                await events.subscribe(["stats", "state", "lifecycle", "migration", "journal"])
                self.domains_screen.engine_note = None
                told_down = False
                await self.reload()
                await self._follow(events)
            except EngineError as exc:
                if exc.code != "down" or not told_down:
                    self.notify(exc.message, title=exc.title, severity="error")
                told_down = True
            start = False
            if self.client is not None:
                await self.client.close()
                self.client = None
            self._engine_stopped(told_down)
            told_down = True
            await asyncio.sleep(RECONNECT_S)

    def _engine_stopped(self, already_told: bool) -> None:
        """pvd is gone: show it, and how to start it, instead of stale figures."""
        if not already_told:
            self.notify(
                f"pvd stopped. Press {ENGINE_START_KEY} to start it; pvtui reconnects by itself if it comes back.",
                title="Engine stopped",
                severity="warning",
            )
        self.domains_screen.engine_note = f"pvd is not running: press {ENGINE_START_KEY} to start it"
        self.domains = {}
        self.host = None
        self._prefetched = None
        self.push_data(sample=False)

    def action_engine_start(self) -> None:
        """Start pvd (the operator asked) and connect to it."""
        if self.client is not None:
            self.notify("pvd is running.", title="Engine")
            return
        if not self.host_uri.is_local:
            self.start_remote_engine()
            return
        self.domains_screen.engine_note = "starting pvd…"
        self.push_data(sample=False)
        self.connect_engine(start=True)

    @work(exclusive=True, group="remote-start")
    async def start_remote_engine(self) -> None:
        """The operator asked to start pvd on the host shown (never anywhere else)."""
        self.domains_screen.engine_note = f"starting pvd on {self.host_uri}…"
        self.push_data(sample=False)
        try:
            said = await asyncio.to_thread(start_engine_on, self.host_uri)
        except EngineError as exc:
            self.notify(exc.message, title=exc.title, severity="error")
            return
        self.notify(said or f"pvd started on {self.host_uri}", title="Engine")
        self.connect_engine(start=False)

    async def _follow(self, events: Client) -> None:
        """Turn pvd's events into messages; a round of stats becomes one message."""
        this_round: list[DomainSummary] = []
        async for event in events.events():
            kind = event.get("event")
            if kind == "stats":
                this_round.append(DomainSummary.from_dict(event["data"]))
                continue
            if kind == "host" or this_round:
                host = HostInfo.from_dict(event["data"]) if kind == "host" else None
                self.post_message(StatsTick(this_round, host))
                this_round = []
                if kind == "host":
                    continue
            self.post_message(EngineEvent(event))

    async def reload(self) -> None:
        if self.client is None:
            return
        self.host = await self.client.host()
        listed = await self.client.list_domains()
        self.domains_screen.add_events(await self.client.journal(limit=100))
        self.domains = {d.name: self.domains.get(d.name, d) for d in listed}
        self._take_newer(listed)
        self.push_data(sample=True)
        if not self._domain_screen_built:
            self._domain_screen_built = True
            self.call_after_refresh(self._build_domain_screen)

    def _build_domain_screen(self) -> None:
        """Compose the domain view once the home screen is up, so Enter finds it ready."""
        if self.screen is self.domains_screen:
            self.push_screen("domain")
            self.pop_screen()
        self.call_after_refresh(self._freeze_startup_objects)

    def _freeze_startup_objects(self) -> None:
        """Keep the garbage collector off everything built so far (gc.freeze), and run its full
        collections on a clock rather than when allocations happen to trip them.

        Modules, widgets, styles and caches live as long as the app; without
        the freeze, every full collection walks them all (~40 ms here, in the
        middle of a key press). What is made later (a thousand domains' rows
        and figures) still makes a full collection cost 10-50 ms, and
        Python starts one when enough objects have been allocated: during a
        burst of rendering, which is when a key was just pressed (it landed
        inside one open of a domain view in ten at 1,000 domains). So full
        collections run every :data:`FULL_COLLECTION_S` instead, at a moment
        unrelated to input; the young generations are collected as before.
        """
        gc.collect()
        gc.freeze()
        self._thresholds_before = gc.get_threshold()
        young, middle, _old = self._thresholds_before
        gc.set_threshold(young, middle, NEVER_BY_COUNT)
        self.set_interval(FULL_COLLECTION_S, self._collect_garbage, name="full-collection")

    def _collect_garbage(self) -> None:
        """A method, not ``gc.collect`` itself: Textual's timer inspects its callback's signature."""
        gc.collect()

    def on_unmount(self) -> None:
        """The process may outlive the app (tests, a host program): its collector works as it did."""
        before = getattr(self, "_thresholds_before", None)
        if before is not None:
            gc.set_threshold(*before)

    def push_data(self, sample: bool) -> None:
        self.domains_screen.update_data(sorted(self.domains.values(), key=lambda d: d.domid), self.host, sample)

    def on_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        kind, name, data = event.get("event"), event.get("domain"), event.get("data") or {}
        if kind == "state" and isinstance(name, str):
            if data.get("state") == "dead":
                self.domains.pop(name, None)
                self.push_data(sample=False)
            elif name in self.domains:
                self.domains[name] = dataclasses.replace(self.domains[name], state=data["state"])
                self.push_data(sample=False)
            else:
                self.refresh_registry()
        elif kind == "migration" and isinstance(name, str) and name in self.domains:
            progress = None if data.get("stage") == "done" else data
            self.domains[name] = dataclasses.replace(self.domains[name], migration=progress)
            self.push_data(sample=False)
        elif kind == "lifecycle" and data.get("crash_reason") and isinstance(name, str) and name in self.domains:
            # The cause reaches the row now, not at the next figures (a domain whose monitor is gone sends none).
            self.domains[name] = dataclasses.replace(self.domains[name], crash_reason=data["crash_reason"])
            self.push_data(sample=False)
            self._notify_lifecycle(name, data)
        elif kind == "journal":
            self.domains_screen.add_events([JournalEntry.from_dict(data)])
        elif kind == "lifecycle":
            self._notify_lifecycle(name, data)

    def _notify_lifecycle(self, name: object, data: dict[str, Any]) -> None:
        if data.get("what") in ("restarted", "preserved", "crash_loop", "destroyed"):
            reason = data.get("crash_reason") or data.get("reason")
            crashed = data.get("reason") == "crash" or data.get("what") == "crash_loop"
            severity: SeverityLevel = "warning" if crashed else "information"
            self.notify(f"{name}: {data['what']} ({reason})", title="Domain", severity=severity)

    def _take_newer(self, summaries: list[DomainSummary]) -> None:
        """A round of stats sent before a change can arrive after the reply that shows it."""
        for domain in summaries:
            held = self.domains.get(domain.name)
            if held is None or domain.as_of >= held.as_of:
                self.domains[domain.name] = domain

    def on_stats_tick(self, message: StatsTick) -> None:
        self._take_newer(message.domains)
        if message.host is not None:
            self.host = message.host
            self.push_data(sample=True)
            self._prefetch_highlighted()

    @work(group="engine-refresh")
    async def refresh_registry(self) -> None:
        await self.reload()

    def _prefetch_highlighted(self) -> None:
        if self.screen is self.domains_screen and (name := self.domains_screen.selected_name):
            self.prefetch_info(name)

    def on_live_table_row_highlighted(self, message: LiveTable.RowHighlighted) -> None:
        if self.domains_screen.is_mounted and message.table is self.domains_screen.table:
            self.prefetch_info(message.row_key, PREFETCH_SETTLE_S)

    @work(exclusive=True, group="prefetch")
    async def prefetch_info(self, name: str, settle_s: float = 0.0) -> None:
        """Keep the highlighted domain's figures at hand, so Enter opens its view without a round trip.

        Waits ``settle_s`` first: a held-down arrow key cancels each fetch before it starts.
        """
        await asyncio.sleep(settle_s)
        if self.client is None:
            return
        with contextlib.suppress(EngineError):
            info = await self.client.info(name)
            self._prefetched = (name, time.monotonic(), info)

    # --- actions --------------------------------------------------------------------------
