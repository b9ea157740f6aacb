"""The fleet screen: one table of every domain on several hosts, a line per host, actions on any row.

Rows are keyed ``HOST/NAME`` (two hosts may each run a ``web``). A host
that does not answer keeps its last rows, greyed, and its line says since
when and why; the others go on updating (each host has its own link).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import Input, Static

from pvtui.client import DomainSummary, EngineError
from pvtui.client.hosts import host_target
from pvtui.client.moves import Endpoint, move_domain
from pvtui.domain.units import MIB
from pvtui.errors import PvtuiError
from pvtui.ui import actions
from pvtui.ui.dialogs import ConfirmDialog, PickDialog, ValueDialog
from pvtui.ui.format import measured, mib, state_text
from pvtui.ui.screens.filtering import FilteredTableScreen
from pvtui.ui.table import LiveTable
from pvtui.ui.tones import cpu_tone, state_tone, toned
from pvtui.ui.widgets import KeyBar, LiveText

if TYPE_CHECKING:
    from pvtui.ui.fleet.links import HostLink

COLUMNS = [
    ("host", "HOST"),
    ("name", "NAME"),
    ("state", "STATE"),
    ("cpu_pct", "CPU%"),
    ("vcpus", "VCPUS"),
    ("mem", "MEM"),
    ("balloon", "TARGET/HELD"),
    ("hcalls", "HCALL/s"),
    ("id", "ID"),
]
MEMORY_STEP = 64 * MIB


def fleet_row(host: str, d: DomainSummary) -> list[str]:
    return [
        host,
        d.name,
        toned(state_text(d.state, d.crash_reason, d.migration), state_tone(d.state)),
        toned(measured(d.cpu_percent), cpu_tone(d.cpu_percent, d.vcpus_online)),
        f"{d.vcpus_online}/{d.vcpus_max}",
        mib(d.memory.held_bytes),
        f"{mib(d.memory.target_bytes)}/{mib(d.memory.held_bytes)}",
        measured(d.hypercalls_per_s, 8),
        str(d.domid),
    ]


def host_status(link: HostLink) -> str:
    """One line per host: capacity and load, or since when it has not answered."""
    if link.down_since is not None or link.host is None:
        if not link.connected_once and link.down_since is None:
            return f"… {link.name} ({link.uri}): connecting"
        since = time.strftime("%H:%M:%S", time.localtime(link.down_since or time.time()))
        return f"✗ {link.name} ({link.uri}): unreachable since {since}: {link.error}"
    host = link.host
    used = host.memory_committed or host.memory_given
    return (
        f"● {link.name} ({host.hostname or link.uri}): {host.cpus} CPUs at {measured(host.cpu_percent, 0, 0)}%  "
        f"memory {used // MIB}/{host.memory_commit_limit // MIB or host.memory_total // MIB} MiB committed  "
        f"{len(link.domains)} domains"
    )


class FleetScreen(FilteredTableScreen):
    BINDINGS = actions.bindings(actions.FLEET)
    AUTO_FOCUS = "#fleet"

    def __init__(self, links: list[HostLink]) -> None:
        super().__init__()
        self.links = {link.name: link for link in links}
        self.filter_text = ""
        #: Domains the operator said never to move (kept between suggestions).
        self.excluded: set[str] = set()

    def compose(self) -> ComposeResult:
        yield LiveText(f"fleet: {', '.join(self.links)} ({len(self.links)} hosts)", id="fleet-title")
        yield LiveText("", id="hosts")
        yield Input(
            placeholder="filter: a name, or host:NAME (Enter to apply, Esc to clear)", id="filter", classes="hidden"
        )
        yield LiveTable(COLUMNS, zebra_stripes=True, drop_order=("id", "balloon", "hcalls"), id="fleet")
        yield Static("", id="status")
        yield KeyBar()

    @property
    def table(self) -> LiveTable:
        return self.query_one("#fleet", LiveTable)

    def on_mount(self) -> None:
        self.refresh_fleet()

    def refresh_fleet(self) -> None:
        """Repaint from the links' latest figures (called on every link's change)."""
        if not self.is_mounted:
            return
        self.query_one("#hosts", LiveText).show("\n".join(host_status(link) for link in self.links.values()))
        rows: dict[str, list[str]] = {}
        dimmed = []
        wanted_host, wanted_name = "", self.filter_text
        if self.filter_text.startswith("host:"):
            wanted_host, _, wanted_name = self.filter_text[len("host:") :].partition(" ")
        for name, link in self.links.items():
            if wanted_host and wanted_host != name:
                continue
            for d in sorted(link.domains, key=lambda d: d.name):
                if wanted_name and wanted_name.lower() not in d.name.lower():
                    continue
                key = f"{name}/{d.name}"
                rows[key] = fleet_row(name, d)
                if not link.reachable:
                    dimmed.append(key)
        self.table.sync_rows(rows)
        self.table.set_dimmed(dimmed)
        self._focus_host()

    @property
    def selected_row(self) -> str | None:
        """``HOST/NAME`` of the highlighted row (the app's own actions act on it, on its host)."""
        return self.table.cursor_key

    def _focus_host(self) -> None:
        key = self.table.cursor_key
        link = self.links.get(key.partition("/")[0]) if key else None
        if link is not None:
            self.app.focus_fleet_host(link)  # type: ignore[attr-defined]

    def on_live_table_row_highlighted(self, event: LiveTable.RowHighlighted) -> None:
        self._focus_host()

    def on_live_table_row_selected(self, event: LiveTable.RowSelected) -> None:
        """Enter opens the domain view on the row's own host (every action there acts on that host)."""
        host, _, name = event.row_key.partition("/")
        link = self.links.get(host)
        if link is not None and link.reachable:
            self.app.open_fleet_domain(link, name)  # type: ignore[attr-defined]
        else:
            self.notify(f"{host} is not reachable now.", title=host, severity="warning")

    # --- the selected row ---------------------------------------------------------------
    def _selected(self) -> tuple[HostLink, DomainSummary] | None:
        key = self.table.cursor_key
        if key is None:
            self.notify("Select a domain first.", title="No domain")
            return None
        host, _, name = key.partition("/")
        link = self.links[host]
        domain = next((d for d in link.domains if d.name == name), None)
        if link.client is None or not link.reachable or domain is None:
            self.notify(f"{host} is not reachable now.", title=host, severity="warning")
            return None
        return link, domain

    @work(group="fleet-actions")
    async def _call(self, link: HostLink, title: str, op: str, *args: object) -> None:
        try:
            assert link.client is not None
            await getattr(link.client, op)(*args)
        except (EngineError, PvtuiError) as exc:
            self.notify(exc.message, title=f"{link.name}: {exc.title}", severity="error", timeout=8)
            return
        self.notify(f"{link.name}: {title}")

    @work(group="fleet-dialogs")
    async def action_create(self) -> None:
        """Create on which host first (the highlighted row's is offered first), then the app's own create."""
        reachable = [name for name, link in self.links.items() if link.reachable]
        if not reachable:
            self.notify("No host answers.", title="Create", severity="warning")
            return
        key = self.table.cursor_key
        current = key.partition("/")[0] if key else ""
        choices = sorted(reachable, key=lambda name: name != current)
        where = await self.app.push_screen_wait(PickDialog("Create on which host?", choices))
        if where:
            self.app.focus_fleet_host(self.links[where])  # type: ignore[attr-defined]
            self.app.action_create()  # type: ignore[attr-defined]

    def action_pause(self) -> None:
        if picked := self._selected():
            link, d = picked
            paused = d.state == "paused"
            self._call(link, f"{d.name} {'unpaused' if paused else 'paused'}", "unpause" if paused else "pause", d.name)

    def action_shutdown(self) -> None:
        if picked := self._selected():
            self._call(picked[0], f"asked {picked[1].name} to shut down", "shutdown", picked[1].name)

    def action_reboot(self) -> None:
        if picked := self._selected():
            self._call(picked[0], f"asked {picked[1].name} to reboot", "reboot", picked[1].name)

    @work(group="fleet-dialogs")
    async def action_destroy(self) -> None:
        if picked := self._selected():
            link, d = picked
            if await self.app.push_screen_wait(ConfirmDialog(f"Destroy {d.name} on {link.name} now?")):
                self._call(link, f"{d.name} destroyed", "destroy", d.name)

    def action_vcpus_delta(self, delta: int) -> None:
        if picked := self._selected():
            link, d = picked
            self._call(link, f"{d.name}: {d.vcpus_online + delta} vCPUs", "vcpu_set", d.name, d.vcpus_online + delta)

    def action_memory_delta(self, delta: int) -> None:
        if picked := self._selected():
            link, d = picked
            size = d.memory.target_bytes + delta * MEMORY_STEP
            self._call(link, f"{d.name}: memory target {size // MIB} MiB", "mem_set", d.name, size)

    @work(group="fleet-dialogs")
    async def action_move(self) -> None:
        if not (picked := self._selected()):
            return
        link, d = picked
        others = [name for name in self.links if name != link.name]
        where = await self.app.push_screen_wait(
            ValueDialog(
                f"Move {d.name} from {link.name} to which host?",
                others[0] if others else "",
                ", ".join(others) or "a host name or URI",
                self._host_check,
            )
        )
        if where:
            self._move(link, d.name, where)

    @work(group="fleet-actions")
    async def _move(self, link: HostLink, name: str, where: str) -> None:
        target_link = self.links.get(where)
        target_uri = target_link.uri if target_link else host_target(where)
        if target_uri is None or link.client is None:
            return
        from pvtui.client.connect import connect_host

        try:
            target = target_link.client if target_link and target_link.client else await connect_host(target_uri)
            status = self.query_one("#status", Static)
            await move_domain(
                Endpoint(link.uri, link.client),
                Endpoint(target_uri, target),
                name,
                on_plan=lambda plan: status.update(f"plan: {plan.describe()}"),
            )
        except (EngineError, PvtuiError) as exc:
            self.notify(exc.message, title=exc.title, severity="error", timeout=8)
            return
        self.notify(f"{name} moved from {link.name} to {where}", title="Moved")

    def _host_check(self, value: str) -> str | None:
        if value in self.links:
            return None
        try:
            return None if host_target(value) is not None else "not a host of the fleet, of pvtui host ls, or a URI"
        except PvtuiError as exc:
            return exc.title

    def on_fleet_screen_changed(self, message: FleetScreen.Changed) -> None:
        self.refresh_fleet()

    @dataclass
    class Changed(Message):
        """A host's figures (or its reachability) changed."""

        host: str

    # --- fleet rebalancing ------------------------------------------------------------------
    def action_rebalance(self) -> None:
        """The rebalance screen in fleet mode: a dry-run plan of moves and resizes (nothing runs until ``a``)."""
        from pvtui.ui.fleet.rebalance import FleetRebalanceScreen

        self.app.push_screen(FleetRebalanceScreen(self.links, self.excluded))

    # --- filter ---------------------------------------------------------------------------
    def refilter(self) -> None:
        self.refresh_fleet()
