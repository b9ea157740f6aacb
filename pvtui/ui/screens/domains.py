"""The home screen: host summary and every domain, xentop-style, live."""

from __future__ import annotations

import time
from dataclasses import dataclass

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Input, Static

from pvtui.client import DomainSummary, EngineError, HostInfo
from pvtui.client.history import HostHistory
from pvtui.client.journal import JournalEntry
from pvtui.ui import actions
from pvtui.ui.events_pane import KEEP_ROWS, EventsTable
from pvtui.ui.format import History, duration, measured, mib, spark, state_text
from pvtui.ui.plot import Plot
from pvtui.ui.screens.filtering import FilteredTableScreen
from pvtui.ui.table import LiveTable
from pvtui.ui.tones import cpu_tone, mem_tone, state_tone, toned
from pvtui.ui.widgets import KeyBar, LiveText

COLUMNS: list[tuple[str, str]] = [
    ("name", "NAME"),
    ("state", "STATE"),
    ("cpu_pct", "CPU%"),
    ("cpu_hist", "CPU history"),
    ("vcpus", "VCPUS"),
    ("mem", "MEM"),
    ("mem_hist", "MEM history"),
    ("balloon", "TARGET/HELD"),
    ("maxmem", "MAXMEM"),
    ("mem_pct", "MEM%"),
    ("cpu_s", "CPU(s)"),
    ("hcalls", "HCALL/s"),
    ("uptime", "UPTIME"),
    ("id", "ID"),
]
SORT_KEYS = {
    "name": lambda d: d.name,
    "state": lambda d: d.state,
    "cpu_pct": lambda d: -1.0 if d.cpu_percent is None else d.cpu_percent,
    "cpu_hist": lambda d: -1.0 if d.cpu_percent is None else d.cpu_percent,
    "vcpus": lambda d: d.vcpus_online,
    "mem": lambda d: d.memory.held_bytes,
    "mem_hist": lambda d: d.memory.held_bytes,  # the quantity its history plots
    "balloon": lambda d: d.memory.target_bytes,
    "maxmem": lambda d: d.memory.max_bytes,
    "mem_pct": lambda d: d.memory.held_bytes,
    "cpu_s": lambda d: d.cpu_s,
    "hcalls": lambda d: -1.0 if d.hypercalls_per_s is None else d.hypercalls_per_s,
    "uptime": lambda d: d.uptime_s,
    "id": lambda d: d.domid,
}
SPARK_WIDTH = 10
#: The events pane shows at start only in terminals at least this tall.
EVENTS_PANE_MIN_HEIGHT = 30
#: Narrower than every column, the table leaves these out, first first (no horizontal scrollbar).
NARROW_DROPS = ("maxmem", "cpu_s", "id", "mem_hist", "balloon", "uptime", "hcalls", "cpu_hist", "mem_pct")


def host_line(host: HostInfo | None, domains: list[DomainSummary]) -> str:
    if host is None:
        return "connecting to pvd…"
    states = ", ".join(f"{n} {s}" for s, n in sorted(host.domains_by_state.items())) or "no domains"
    return (
        f"host: {host.cpus} CPUs at {measured(host.cpu_percent, 0, 0)}%  │  "
        f"memory: {mib(host.memory_total)} total, {commit_text(host)}, "
        f"{mib(host.memory_available)} free  │  domains: {len(domains)} ({states})  │  "
        f"pvd {measured(host.pvd_cpu_percent, 0, 2)}%"
    )


def commit_text(host: HostInfo) -> str:
    """Committed guest memory against pvd's limit, and the overcommit when pvd allows one."""
    text = f"{mib(host.memory_committed)} of {mib(host.memory_commit_limit)} committed"
    if host.overcommit != 1.0:
        text += f" (overcommit x{host.overcommit:g}: {host.overcommitted_percent:.0f}% over)"
    return text


def shown_uptime(d: DomainSummary, age_s: float) -> str:
    """A live domain's uptime runs on between its summaries; a stopped one's stands."""
    return duration(d.uptime_s + (age_s if d.state in ("running", "blocked", "paused") else 0.0))


def row_cells(d: DomainSummary, history: History, memory_total: int, age_s: float = 0.0) -> dict[str, str]:
    """A domain's cells; ``age_s``: how long ago its summary came (a quiet domain's is not re-sent,
    and its uptime runs on meanwhile)."""
    cpu_series = list(history.get(f"cpu:{d.name}"))[-SPARK_WIDTH:]
    mem_series = list(history.get(f"mem:{d.name}"))[-SPARK_WIDTH:]
    share = d.memory.held_bytes / max(memory_total, 1)
    return {
        "name": d.name,
        "state": toned(state_text(d.state, d.crash_reason, d.migration), state_tone(d.state)),
        "cpu_pct": toned(measured(d.cpu_percent), cpu_tone(d.cpu_percent, d.vcpus_online)),
        "cpu_hist": spark(cpu_series, max(100.0, *cpu_series, 0.0), SPARK_WIDTH),
        "vcpus": f"{d.vcpus_online}/{d.vcpus_max}",
        "mem": mib(d.memory.held_bytes),
        "mem_hist": spark(mem_series, max(d.memory.max_bytes, 1), SPARK_WIDTH),
        "balloon": f"{mib(d.memory.target_bytes)}/{mib(d.memory.held_bytes)}",
        "maxmem": mib(d.memory.max_bytes),
        "mem_pct": toned(f"{100 * share:4.1f}", mem_tone(share)),
        "cpu_s": f"{d.cpu_s:8.1f}",
        "hcalls": measured(d.hypercalls_per_s, 8),
        "uptime": shown_uptime(d, age_s),
        "id": str(d.domid),
    }


class DomainsScreen(FilteredTableScreen):
    """Sort with 1-9 and 0 (again to reverse) or < > through every column, filter with /, Enter opens a domain."""

    AUTO_FOCUS = "#domains"

    BINDINGS = actions.bindings(actions.HOME)

    @dataclass
    class Selected(Message):
        """The operator opened a domain."""

        name: str

    def __init__(self) -> None:
        super().__init__()
        self.domains: list[DomainSummary] = []
        self.host: HostInfo | None = None
        #: Shown instead of the host line while pvd is not running.
        self.engine_note: str | None = None
        self.history = History(shown=SPARK_WIDTH)
        self.sort_column = "name"
        self.sort_reverse = False
        self.filter_text = ""
        self._ready = False
        self._early_events: list[JournalEntry] = []
        #: When each domain's current summary first arrived (its as_of, local monotonic).
        self._seen_at: dict[str, tuple[float, float]] = {}
        #: The host's last ten minutes, once the plots were shown (h).
        self.host_history: HostHistory | None = None
        #: Each row's cells and what they were made from (see _cells).
        self._row_cache: dict[str, tuple[tuple[object, ...], list[str]]] = {}
        #: The domains the histories were last trimmed to.
        self._names: frozenset[str] = frozenset()

    def on_mount(self) -> None:
        if self.app.size.height < EVENTS_PANE_MIN_HEIGHT:  # a small terminal keeps its rows for domains (j shows it)
            self.query_one("#events", EventsTable).add_class("hidden")
        self._ready = True
        self.add_events(self._early_events)
        self._early_events = []
        self._label_sort_column()
        self._show()

    def compose(self) -> ComposeResult:
        yield LiveText(host_line(None, []), id="host")
        yield Input(placeholder="filter by name (Enter to apply, Esc to clear)", id="filter", classes="hidden")
        yield LiveTable(COLUMNS, zebra_stripes=True, drop_order=NARROW_DROPS, id="domains")
        with Horizontal(id="host-plots", classes="hidden"):
            yield Plot(id="host-cpu")
            yield Plot(id="host-memory")
        yield EventsTable(with_domain=True, id="events")
        yield Static("", id="status")
        yield KeyBar()

    @property
    def table(self) -> LiveTable:
        return self.query_one("#domains", LiveTable)

    @property
    def selected_name(self) -> str | None:
        return self.table.cursor_key

    def _age(self, d: DomainSummary, now: float) -> float:
        """Seconds since this summary of ``d`` first reached the screen (by its ``as_of``)."""
        seen = self._seen_at.get(d.name)
        if seen is None or seen[0] != d.as_of:
            seen = self._seen_at[d.name] = (d.as_of, now)
        return now - seen[1]

    def update_data(self, domains: list[DomainSummary], host: HostInfo | None, sample: bool) -> None:
        """New figures from the engine; ``sample`` adds a point to the histories."""
        self.domains = domains
        self.host = host
        if sample and host is not None and self.host_history is not None:
            used = host.memory_total - host.memory_available
            self.host_history.append(host.sampled_s, host.cpu_percent, used, host.memory_committed)
            if self.is_current and self._ready:
                self._draw_host_plots()
        if sample:
            for d in domains:
                if d.cpu_percent is not None:
                    self.history.add(f"cpu:{d.name}", d.cpu_percent)
                self.history.add(f"mem:{d.name}", d.memory.held_bytes)
            names = frozenset(d.name for d in domains)
            if names != self._names:  # a domain came or went: drop what was kept for the gone
                self._names = names
                self.history.keep_only({f"{kind}:{name}" for name in names for kind in ("cpu", "mem")})
                for gone in self._seen_at.keys() - names:
                    del self._seen_at[gone]
                for gone in self._row_cache.keys() - names:
                    del self._row_cache[gone]
        if self.is_current and self._ready:
            self._show()

    def on_screen_resume(self) -> None:
        self._show()

    def _show(self) -> None:
        """Render only while on screen: hidden screens keep data, not widgets, current."""
        try:
            host = self.query_one("#host", LiveText)
        except NoMatches:  # the app is closing and took the widgets away
            return
        host.show(self.engine_note or host_line(self.host, self.domains))
        self._render_rows()

    def _visible(self) -> list[DomainSummary]:
        key = SORT_KEYS[self.sort_column]
        rows = [d for d in self.domains if self.filter_text.lower() in d.name.lower()]
        return sorted(rows, key=key, reverse=self.sort_reverse)

    def _label_sort_column(self) -> None:
        arrow = "▼" if self.sort_reverse else "▲"
        self.table.set_labels({key: label + (arrow if key == self.sort_column else "") for key, label in COLUMNS})

    def _render_rows(self) -> None:
        """Repaint changed rows only; rebuild when the set or order of rows changes."""
        memory_total = self.host.memory_total if self.host else 1
        visible = self._visible()
        now = time.monotonic()
        rows = {d.name: self._cells(d, memory_total, self._age(d, now)) for d in visible}
        self.table.sync_rows(rows)

    def _cells(self, d: DomainSummary, memory_total: int, age_s: float) -> list[str]:
        """A row's cells, kept while nothing they show has changed: a thousand quiet domains'
        rows were rebuilt every second (~50 ms) to show what they already showed."""
        history = self.history
        key = (
            d,
            memory_total,
            shown_uptime(d, age_s),
            history.changed_at(f"cpu:{d.name}"),
            history.changed_at(f"mem:{d.name}"),
        )
        kept = self._row_cache.get(d.name)
        if kept is not None and kept[0] == key:
            return kept[1]
        cells = list(row_cells(d, self.history, memory_total, age_s).values())
        self._row_cache[d.name] = (key, cells)
        return cells

    def action_toggle_plots(self) -> None:
        """The host's last ten minutes (CPU, memory), plotted; fetched from pvd when first shown."""
        pane = self.query_one("#host-plots")
        pane.set_class(not pane.has_class("hidden"), "hidden")
        if not pane.has_class("hidden") and self.host_history is None:
            self.load_host_history()
        self._draw_host_plots()

    @work(exclusive=True, group="host-history")
    async def load_host_history(self) -> None:
        client = getattr(self.app, "client", None)
        if client is None:
            return
        try:
            self.host_history = await client.host_history()
        except EngineError as exc:
            self.notify(exc.message, title=exc.title, severity="error")
            return
        self._draw_host_plots()

    def _draw_host_plots(self) -> None:
        if self.host_history is None or self.query_one("#host-plots").has_class("hidden"):
            return
        cpu, memory = self.host_history.plots()
        self.query_one("#host-cpu", Plot).show(cpu)
        self.query_one("#host-memory", Plot).show(memory)

    def add_events(self, entries: list[JournalEntry]) -> None:
        """pvd's journal entries for the events pane (kept while the pane is hidden too)."""
        try:
            self.query_one("#events", EventsTable).add_entries(entries)
        except NoMatches:  # not composed yet (or not at all: the fleet view): kept for when it is
            self._early_events = (self._early_events + entries)[-KEEP_ROWS:]

    def action_toggle_events(self) -> None:
        pane = self.query_one("#events", EventsTable)
        pane.set_class(not pane.has_class("hidden"), "hidden")
        self.query_one("#status", Static).update(
            "events: pvd's journal (pvtui events); j hides it" if not pane.has_class("hidden") else ""
        )

    def action_sort(self, index: int) -> None:
        """Sort by column ``index``; the same column again reverses."""
        column = COLUMNS[index][0]
        self._sort_by(index, not self.sort_reverse if column == self.sort_column else None)

    def action_sort_step(self, step: int) -> None:
        """Move the sort to the next column left or right (reaches every column)."""
        keys = [key for key, _ in COLUMNS]
        self._sort_by((keys.index(self.sort_column) + step) % len(keys), None)

    def _sort_by(self, index: int, reverse: bool | None) -> None:
        """``reverse`` None: text columns ascending, figures descending."""
        column, label = COLUMNS[index]
        self.sort_column = column
        self.sort_reverse = reverse if reverse is not None else column not in ("name", "state", "id")
        self.query_one("#status", Static).update(f"sorted by {label}{' (descending)' if self.sort_reverse else ''}")
        self._label_sort_column()
        self._render_rows()

    def refilter(self) -> None:
        self._render_rows()

    def on_live_table_row_selected(self, event: LiveTable.RowSelected) -> None:
        self.post_message(self.Selected(event.row_key))

    def on_live_table_header_selected(self, event: LiveTable.HeaderSelected) -> None:
        """A click on a column label sorts by it (again: reverse), like its number key."""
        self.action_sort([key for key, _ in COLUMNS].index(event.column_key))

    def action_open(self) -> None:
        name = self.selected_name
        if name:
            self.post_message(self.Selected(name))
