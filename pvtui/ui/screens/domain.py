"""One domain: per-vCPU bars, memory gauge, hypercall log with rates, console."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from rich.markup import escape
from textual import events, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Input, RichLog, Static

from pvtui.client import Client, EngineError, HypercallInfo
from pvtui.client.connect import connect_host
from pvtui.client.history import DomainHistory
from pvtui.client.hosts import HostUri
from pvtui.client.journal import JournalEntry
from pvtui.domain.cpuset import format_cpu_list
from pvtui.domain.model import DomainInfo, DomainStats, MemoryInfo, VcpuInfo
from pvtui.ui import actions
from pvtui.ui.events_pane import EventsTable
from pvtui.ui.format import History, bar, duration, measured, mib, migration_text, spark
from pvtui.ui.plot import Plot
from pvtui.ui.table import LiveTable
from pvtui.ui.tones import level_tone, state_tone, toned
from pvtui.ui.widgets import KeyBar, LiveText, TabBar

T = TypeVar("T")
MAX_LOG_ROWS = 1500
VCPU_COLUMNS = [
    ("id", "VCPU"),
    ("state", "STATE"),
    ("bar", "CPU%"),
    ("pct", ""),
    ("hist", "history"),
    ("cpu", "ON"),
    ("pin", "PINNED"),
    ("calls", "HCALLS"),
]
#: A vCPU's state as the domain states it resembles (running, blocked, paused).
VCPU_STATE_TONES = {"running": "running", "blocked": "blocked", "paused": "paused"}
RECORD_COLUMNS = [
    ("t", "TIME(s)"),
    ("vcpu", "VCPU"),
    ("op", "OP"),
    ("args", "ARGS"),
    ("result", "RESULT"),
    ("lat", "LAT(us)"),
]
TABS = [
    ("log", "Hypercall log"),
    ("rates", "Rates"),
    ("console", "Console"),
    ("events", "Events"),
    ("history", "History"),
]
#: What the History tab plots, in the order h cycles through them.
PLOTS = ("cpu", "memory", "hypercalls")
RATE_COLUMNS = [("op", "OP"), ("count", "COUNT"), ("share", "%"), ("avg", "AVG/s"), ("now", "NOW/s")]


#: Each memory figure, and where it comes from (the help screen and docs/figures.md say the same).
MEMORY_ROWS = [
    ("boot", "boot_bytes", "definition"),
    ("target", "target_bytes", "engine"),
    ("held", "held_bytes", "engine"),
    ("guest used", "guest_used_bytes", "guest says"),
    ("host RSS", "rss_bytes", "host"),
    ("max", "max_bytes", "definition"),
]


def memory_gauge(memory: MemoryInfo, tone: Callable[[str, str | None], str] = lambda text, _tone: text) -> str:
    """One bar per figure against the domain's ceiling; what the guest holds and uses is shaded by how
    near to that ceiling it is (pvtui/levels.py), the definition's own figures are not."""
    top = max(memory.max_bytes, memory.present_bytes, 1)
    lines = []
    for label, key, source in MEMORY_ROWS:
        share = getattr(memory, key) / top
        level = level_tone(share) if source != "definition" else None
        lines.append(f"{label:>10} {tone(bar(share, 18), level)} {mib(getattr(memory, key)):>6} {source}")
    return "\n".join(lines)


def _engine_percent(value: float | None) -> str:
    """The monitor's own CPU beyond its vCPUs: small, so two decimals."""
    return "-" if value is None else f"{value:.2f}%"


@dataclass
class RecordFilter:
    ops: set[str]
    vcpu: int | None

    @classmethod
    def parse(cls, text: str) -> RecordFilter:
        """``op:console_io op:sched_op vcpu:1``; a bare word is an op."""
        ops: set[str] = set()
        vcpu = None
        for word in text.split():
            key, sep, value = word.partition(":")
            if sep and key == "vcpu" and value.isdigit():
                vcpu = int(value)
            elif sep and key == "op":
                ops.add(value)
            elif not sep:
                ops.add(word)
        return cls(ops, vcpu)

    def __call__(self, record: HypercallInfo) -> bool:
        return (not self.ops or record.op in self.ops) and (self.vcpu is None or record.vcpu == self.vcpu)


class DomainScreen(Screen[None]):
    """One screen for every domain: built once, pointed at a domain by :meth:`show_domain`.

    Composing a screen like this one (a dozen widgets, three tables, a log)
    took ~300 ms on these machines; pointing the built one at another domain
    takes 2. It follows its domain only while shown.
    """

    AUTO_FOCUS = "#records"
    BINDINGS = actions.bindings(actions.DOMAIN_VIEW)

    # Each names its domain: one still queued from the previous domain is dropped.
    @dataclass
    class Records(Message):
        domain: str
        records: list[HypercallInfo]

    @dataclass
    class ConsoleText(Message):
        domain: str
        text: str
        replace: bool = False  # the whole console so far, sent when (re)starting to follow

    @dataclass
    class Journal(Message):
        """pvd's journal entries about the domain shown."""

        domain: str
        entries: list[JournalEntry]

    @dataclass
    class Info(Message):
        domain: str
        info: DomainInfo

    def __init__(self) -> None:
        super().__init__()
        self.domain_name: str | None = None
        self.client: Client | None = None
        self._forget_domain()

    def _forget_domain(self) -> None:
        self.follow = True
        self.record_filter = RecordFilter(set(), None)
        self.history = History()
        self.held_back: list[HypercallInfo] = []
        self.log_start_ns = 0
        self.last_seq = 0
        self._last_sampled_s: float | None = None
        self.last_info: DomainInfo | None = None
        #: The last ten minutes, fetched when the History tab first shows, then grown by each poll.
        self.plot_history: DomainHistory | None = None
        self.plot_kind = PLOTS[0]
        self.journal_loaded = False

    def show_domain(self, name: str, client: Client, info: DomainInfo | None = None) -> None:
        """Point the screen at ``name`` (``info`` from pvd, if fetched); it follows once shown."""
        self.domain_name, self.client = name, client
        self._forget_domain()
        if not self.is_mounted:
            return
        self.query_one("#title", LiveText).show(name)
        self.query_one("#memory", LiveText).show("")
        for table in self.query(LiveTable):
            table.clear()
        self.query_one("#console", RichLog).clear()
        self.query_one("#logfilter", Input).value = ""
        self.action_show_tab("log")
        self._log_status()
        if info is not None:
            self._show_info(info)

    def compose(self) -> ComposeResult:
        yield LiveText(self.domain_name or "", id="title")
        with Horizontal(id="top"):
            yield LiveTable(VCPU_COLUMNS, id="vcpus")
            yield LiveText("", id="memory")
        yield TabBar(TABS, "log", id="tabbar")
        with ContentSwitcher(initial="log", id="tabs"):
            with Vertical(id="log"):
                yield Input(placeholder="filter: op:console_io vcpu:0 (Enter)", id="logfilter", classes="hidden")
                yield LiveTable(RECORD_COLUMNS, id="records")
            yield LiveTable(RATE_COLUMNS, id="rates")
            yield RichLog(id="console", wrap=True, markup=False, max_lines=5000)
            yield EventsTable(with_domain=False, id="events")
            yield Plot(id="history")
        yield Static("log: following", id="logstatus")
        yield KeyBar()

    def on_mount(self) -> None:
        self._poll_timer = self.set_interval(1.0, self.poll, pause=True)
        self._styles_stale = False
        self._app_focus_when_hidden = self.app.app_focus
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)
        self._prime_update_timer()

    def _prime_update_timer(self) -> None:
        """Let Textual's screen-update timer take its first step now, while the screen is built.

        The timer is made on first use and, once started, sleeps a whole frame
        (1/60 s) before its first tick; later, a resume ticks at once. Left
        alone, that first sleep fell on the first open of a domain: ~17 ms of
        a ~40 ms open. Started here, it ticks once while hidden (and does
        nothing: the screen is not current) and waits, ready, for the first open.
        """
        self._update_timer.resume()

    def _theme_changed(self, _theme: object) -> None:
        self._styles_stale = True

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        """Start following; and skip the restyle Textual does on every push unless it is needed.

        This handler runs before ``Screen``'s own (subclass first). Restyling
        the whole screen costs ~7 ms of every open here; it only matters if the
        theme or the terminal's focus changed while the screen was hidden.
        """
        if not self._styles_stale and self.app.app_focus == self._app_focus_when_hidden:
            event.refresh_styles = False
        self._styles_stale = False
        if self.domain_name is None:
            return
        if self.last_info is None:
            self.poll()
        # After the first frame: the console and log it fetches would otherwise be laid out
        # and drawn in that frame, and the view shows later.
        self.call_after_refresh(self._follow_if_shown)
        self._poll_timer.reset()  # the next poll a second from now, not at once
        self._poll_timer.resume()

    def _follow_if_shown(self) -> None:
        if self.is_current and self.domain_name is not None:
            self.follow_events()

    def on_screen_suspend(self) -> None:
        """Hidden, the screen keeps its rows but stops asking pvd for more."""
        self._app_focus_when_hidden = self.app.app_focus
        self._poll_timer.pause()
        self.workers.cancel_group(self, "domain-poll")
        self.workers.cancel_group(self, "domain-events")

    # --- data ------------------------------------------------------------------------
    @work(exclusive=True, group="domain-poll")
    async def poll(self) -> None:
        if self.client is None or self.domain_name is None:
            return
        try:
            info = await self.client.info(self.domain_name)
        except EngineError as exc:
            self.query_one("#title", LiveText).show(f"{self.domain_name} │ [red]{exc.title}[/red]: {exc.message}")
            return
        self.post_message(self.Info(self.domain_name, info))

    @work(exclusive=True, group="domain-events")
    async def follow_events(self) -> None:
        """A connection of its own, subscribed to this domain's console and hypercalls."""
        name = self.domain_name
        if name is None:
            return
        # The same host as the screen's client (pvtui -H, or the fleet row it was opened from).
        events = await connect_host(getattr(self.app, "host_uri", HostUri("local")))
        try:
            text, _ = await events.console(name)
            self.post_message(self.ConsoleText(name, text, replace=True))
            records = await events.hypercalls(name, limit=100)
            self.post_message(self.Records(name, records))
            await events.subscribe(["console", "hypercalls", "journal"], [name])
            async for event in events.events():
                data = event.get("data") or {}
                if event.get("event") == "console":
                    self.post_message(self.ConsoleText(name, data["text"]))
                elif event.get("event") == "journal" and isinstance(data, dict):
                    self.post_message(self.Journal(name, [JournalEntry.from_dict(data)]))
                elif event.get("event") == "hypercalls" and isinstance(data, list):
                    self.post_message(self.Records(name, [HypercallInfo.from_dict(r) for r in data]))
        finally:
            await events.close()

    @work(exclusive=True, group="domain-journal")
    async def load_journal(self) -> None:
        """The domain's past events, fetched when the Events tab first shows (not on every open)."""
        entries = await self._ask_about_this_domain(lambda client, name: client.journal(name, limit=200))
        if entries is not None:  # the past replaces what arrived live meanwhile (it holds it too)
            self.query_one("#events", EventsTable).clear()
            self.query_one("#events", EventsTable).add_entries(entries)

    async def _ask_about_this_domain(self, ask: Callable[[Client, str], Awaitable[T]]) -> T | None:
        """``ask(client, name)`` for the domain shown; None if refused (the refusal shown) or the view
        moved to another domain meanwhile."""
        if self.client is None or self.domain_name is None:
            return None
        name = self.domain_name
        try:
            answer = await ask(self.client, name)
        except EngineError as exc:
            self.notify(exc.message, title=exc.title, severity="error")
            return None
        return answer if name == self.domain_name else None

    def on_domain_screen_journal(self, message: Journal) -> None:
        if message.domain == self.domain_name:
            self.query_one("#events", EventsTable).add_entries(message.entries)

    def on_domain_screen_info(self, message: Info) -> None:
        if message.domain == self.domain_name:
            self._show_info(message.info)

    def _show_info(self, info: DomainInfo) -> None:
        self.last_info = info
        d, stats = info.summary, info.stats
        abi = "Xen PV" if d.personality == "xen" else "pvtui ABI"
        tone = getattr(self.app, "tone", lambda text, _tone: text)
        flags = (
            f"{tone(d.state, state_tone(d.state))}  {abi}  domid {d.domid}  up {duration(d.uptime_s)}  "
            f"weight {d.weight} cap {d.cap}  guest CPU {measured(d.cpu_percent, 0)}%  "
            f"engine {_engine_percent(d.engine_cpu_percent)}"
        )
        reason = f" │ {tone(escape(d.crash_reason), 'crashed')}" if d.crash_reason else ""
        if d.migration:
            progress = d.migration
            expected = progress.get("expected_downtime_ms")
            reason += (
                f" │ migrating {migration_text(progress)}, {progress.get('pages_left', 0)} pages left, "
                f"downtime ~{expected if expected is not None else '?'} ms (M cancels)"
            )
        self.query_one("#title", LiveText).show(f"{self.domain_name} │ {flags}{reason}")
        self.query_one("#memory", LiveText).show(memory_gauge(stats.memory if stats else MemoryInfo(), tone))
        self._update_vcpus(stats.vcpus if stats else [], stats.sampled_s if stats else None)
        self._update_rates(stats, info.op_rates)
        if self.plot_history is not None and stats is not None:
            self.plot_history.append(dataclasses.asdict(stats))
            self._draw_plot()

    def _update_vcpus(self, vcpus: list[VcpuInfo], sampled_s: float | None) -> None:
        """pvd's per-vCPU rates, each over its last interval between two of its own samples.

        A vCPU without two samples yet shows a dash and no bar; the history
        gains a point only for a sample not seen before.
        """
        new_sample = sampled_s is not None and sampled_s != self._last_sampled_s
        if new_sample:
            self._last_sampled_s = sampled_s
        rows: dict[str, list[str]] = {}
        for vcpu in vcpus:
            key = str(vcpu.id)
            pct = vcpu.cpu_percent
            if new_sample and pct is not None:
                self.history.add(key, pct)
            level = level_tone(pct / 100 if pct is not None else None)
            rows[key] = [
                key,
                toned(vcpu.state, VCPU_STATE_TONES.get(vcpu.state)) if vcpu.online else "offline",
                toned(bar(pct / 100, 16), level) if pct is not None else " " * 16,
                toned(measured(pct), level),
                spark(list(self.history.get(key))[-12:], 100, 12),
                "-" if vcpu.host_cpu is None or not vcpu.online else str(vcpu.host_cpu),
                format_cpu_list(vcpu.affinity) if vcpu.affinity else "all",
                str(vcpu.hypercalls),
            ]
        self.query_one("#vcpus", LiveTable).sync_rows(rows)

    def _update_rates(self, stats: DomainStats | None, rates: dict[str, float]) -> None:
        per_op = stats.hypercalls_per_op if stats else {}
        total = sum(per_op.values()) or 1
        uptime = max(stats.uptime_s if stats else 0.0, 1e-9)
        self.query_one("#rates", LiveTable).set_rows(
            (op, [op, str(count), f"{100 * count / total:.1f}", f"{count / uptime:.1f}", measured(rates.get(op), 0)])
            for op, count in sorted(per_op.items(), key=lambda item: -item[1])
        )

    def on_domain_screen_console_text(self, message: ConsoleText) -> None:
        if message.domain != self.domain_name:
            return
        console = self.query_one("#console", RichLog)
        if message.replace:
            console.clear()
        for line in message.text.splitlines():
            console.write(line)

    def on_domain_screen_records(self, message: Records) -> None:
        if message.domain != self.domain_name:
            return
        if not self.follow:
            self.held_back.extend(message.records)
            del self.held_back[: max(0, len(self.held_back) - MAX_LOG_ROWS)]
            self._log_status()
            return
        self._append_records(message.records)

    def _append_records(self, records: list[HypercallInfo]) -> None:
        table = self.query_one("#records", LiveTable)
        rows: list[tuple[str, list[str]]] = []
        for record in records:
            if record.seq <= self.last_seq:
                continue  # the initial load and the subscription overlap
            self.last_seq = record.seq
            if not self.record_filter(record):
                continue
            if not self.log_start_ns:
                self.log_start_ns = record.time_ns
            args = " ".join(f"{a:#x}" for a in record.args[:3])
            op = record.op + (" (mc)" if record.in_multicall else "")
            cells = [
                f"{(record.time_ns - self.log_start_ns) / 1e9:10.4f}",
                str(record.vcpu),
                toned(op, "bounced" if record.op.startswith("trap_") else None),
                args,
                toned(str(record.result), "failed" if record.result < 0 else None),
                f"{record.latency_ns / 1000:.1f}",
            ]
            rows.append((str(record.seq), cells))
        table.add_rows(rows, keep=MAX_LOG_ROWS)
        if self.follow and table.row_count:
            table.move_cursor(table.row_count - 1)

    def _log_status(self) -> None:
        state = "following" if self.follow else f"paused ({len(self.held_back)} new records held; f to follow)"
        shown = ""
        if self.record_filter.ops or self.record_filter.vcpu is not None:
            shown = f"  filter: ops={','.join(sorted(self.record_filter.ops)) or 'all'} vcpu={self.record_filter.vcpu}"
        self.query_one("#logstatus", Static).update(f"log: {state}{shown}")

    # --- actions -----------------------------------------------------------------------
    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        if self.follow and self.held_back:
            held, self.held_back = self.held_back, []
            self._append_records(held)
        self._log_status()

    def action_filter(self) -> None:
        self.action_show_tab("log")
        field = self.query_one("#logfilter", Input)
        field.remove_class("hidden")
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "logfilter":
            return
        self.record_filter = RecordFilter.parse(event.value)
        self.query_one("#records", LiveTable).clear()
        self.last_seq = 0
        event.input.add_class("hidden")
        self.query_one("#records", LiveTable).focus()
        self._log_status()
        self.reload_records()

    @work(exclusive=True, group="domain-reload")
    async def reload_records(self) -> None:
        if self.client is None or self.domain_name is None:
            return
        records = await self.client.hypercalls(self.domain_name, limit=2000)
        self.post_message(self.Records(self.domain_name, records))

    def on_tab_bar_picked(self, message: TabBar.Picked) -> None:
        if message.tab == "history":
            self.action_history()
        else:
            self.action_show_tab(message.tab)

    def action_history(self) -> None:
        """The History tab; pressed again, the next plot (CPU per vCPU, memory, hypercalls per kind)."""
        if self.query_one("#tabs", ContentSwitcher).current == "history":
            self.plot_kind = PLOTS[(PLOTS.index(self.plot_kind) + 1) % len(PLOTS)]
        self.action_show_tab("history")
        if self.plot_history is None:
            self.load_history()
        self._draw_plot()

    @work(exclusive=True, group="domain-history")
    async def load_history(self) -> None:
        history = await self._ask_about_this_domain(lambda client, name: client.history(name))
        if history is not None:
            self.plot_history = history
            self._draw_plot()

    def _draw_plot(self) -> None:
        history = self.plot_history
        if history is None or self.query_one("#tabs", ContentSwitcher).current != "history":
            return
        plotted = {"cpu": history.cpu, "memory": history.memory_series, "hypercalls": history.hypercalls}
        self.query_one("#history", Plot).show(plotted[self.plot_kind]())

    def action_show_tab(self, tab: str) -> None:
        """Show a pane and focus what is in it (focus left on a hidden pane would be lost)."""
        if tab == "events" and not self.journal_loaded:
            self.journal_loaded = True
            self.load_journal()
        self.query_one("#tabs", ContentSwitcher).current = tab
        self.query_one("#tabbar", TabBar).show(tab)
        self.query_one("#records" if tab == "log" else f"#{tab}").focus()
