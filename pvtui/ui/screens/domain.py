"""One domain: per-vCPU bars, memory gauge, hypercall log with rates, console."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, RichLog, Static, TabbedContent, TabPane

from pvtui.client import Client, EngineError, HypercallInfo
from pvtui.ui.format import History, bar, duration, mib, spark

MAX_LOG_ROWS = 1500


def memory_gauge(memory: dict[str, int]) -> str:
    top = max(memory.get("max_bytes", 0), memory.get("present_bytes", 0), 1)
    rows = [
        ("boot", memory.get("boot_bytes", 0)),
        ("target", memory.get("target_bytes", 0)),
        ("held", memory.get("held_bytes", 0)),
        ("guest used", memory.get("guest_used_bytes", 0)),
        ("host RSS", memory.get("rss_bytes", 0)),
        ("max", memory.get("max_bytes", 0)),
    ]
    return "\n".join(f"{label:>10} {bar(value / top, 18)} {mib(value):>6}" for label, value in rows)


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
    AUTO_FOCUS = "#records"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("f", "toggle_follow", "Follow/pause log"),
        Binding("slash", "filter", "Filter log"),
        Binding("c", "show_tab('console')", "Console"),
        Binding("l", "show_tab('log')", "Log"),
        Binding("t", "show_tab('rates')", "Rates"),
    ]

    @dataclass
    class Records(Message):
        records: list[HypercallInfo]

    @dataclass
    class ConsoleText(Message):
        text: str

    @dataclass
    class Info(Message):
        info: dict[str, Any]

    def __init__(self, name: str, client: Client) -> None:
        super().__init__()
        self.domain_name = name
        self.client = client
        self.follow = True
        self.record_filter = RecordFilter(set(), None)
        self.history = History()
        self.held_back: list[HypercallInfo] = []
        self.log_start_ns = 0
        self.last_seq = 0
        self._vcpu_cpu: dict[int, tuple[float, float]] = {}
        self.last_info: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        yield Static(self.domain_name, id="title")
        with Horizontal(id="top"):
            table: DataTable[str] = DataTable(id="vcpus", cursor_type="row")
            for key, label in (
                ("id", "VCPU"),
                ("state", "STATE"),
                ("bar", "CPU%"),
                ("pct", ""),
                ("hist", "history"),
                ("cpu", "ON"),
                ("pin", "PINNED"),
                ("calls", "HCALLS"),
            ):
                table.add_column(label, key=key)
            yield table
            yield Static("", id="memory")
        with TabbedContent(initial="log", id="tabs"):
            with TabPane("Hypercall log", id="log"), Vertical():
                yield Input(placeholder="filter: op:console_io vcpu:0 (Enter)", id="logfilter", classes="hidden")
                log: DataTable[str] = DataTable(id="records", cursor_type="row")
                for key, label in (
                    ("t", "TIME(s)"),
                    ("vcpu", "VCPU"),
                    ("op", "OP"),
                    ("args", "ARGS"),
                    ("result", "RESULT"),
                    ("lat", "LAT(us)"),
                ):
                    log.add_column(label, key=key)
                yield log
            with TabPane("Rates", id="rates"):
                rates: DataTable[str] = DataTable(id="rates_table", cursor_type="row")
                for key, label in (
                    ("op", "OP"),
                    ("count", "COUNT"),
                    ("share", "%"),
                    ("avg", "AVG/s"),
                    ("now", "NOW/s"),
                ):
                    rates.add_column(label, key=key)
                yield rates
            with TabPane("Console", id="console"):
                yield RichLog(id="console_log", wrap=True, markup=False, max_lines=5000)
        yield Static("log: following", id="logstatus")
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.follow_events()
        self.set_interval(1.0, self.poll)

    # --- data ------------------------------------------------------------------------
    @work(exclusive=True, group="domain-poll")
    async def poll(self) -> None:
        try:
            info = await self.client.info(self.domain_name)
        except EngineError as exc:
            self.query_one("#title", Static).update(f"{self.domain_name} │ [red]{exc.title}[/red]: {exc.message}")
            return
        self.post_message(self.Info(info))

    @work(exclusive=True, group="domain-events")
    async def follow_events(self) -> None:
        """A connection of its own, subscribed to this domain's console and hypercalls."""
        events = await Client.connect(start=False)
        try:
            text, _ = await events.console(self.domain_name)
            self.post_message(self.ConsoleText(text))
            records = await events.hypercalls(self.domain_name, limit=100)
            self.post_message(self.Records(records))
            await events.subscribe(["console", "hypercalls"], [self.domain_name])
            async for event in events.events():
                data = event.get("data")
                if event.get("event") == "console":
                    self.post_message(self.ConsoleText(data["text"]))
                elif event.get("event") == "hypercalls":
                    self.post_message(self.Records([HypercallInfo.from_dict(r) for r in data]))
        finally:
            await events.close()

    def on_domain_screen_info(self, message: Info) -> None:
        info = message.info
        self.last_info = info
        stats = info.get("stats") or {}
        flags = f"{info['state']}  domid {info['domid']}  up {duration(info['uptime_s'])}  weight {info['weight']} cap {info['cap']}"
        reason = f" │ [red]{info['crash_reason']}[/red]" if info.get("crash_reason") else ""
        self.query_one("#title", Static).update(f"{self.domain_name} │ {flags}{reason}")
        self.query_one("#memory", Static).update(memory_gauge(stats.get("memory") or {}))
        self._update_vcpus(stats.get("vcpus", []))
        self._update_rates(stats, info.get("op_rates", {}))

    def _update_vcpus(self, vcpus: list[dict[str, Any]]) -> None:
        table = self.query_one("#vcpus", DataTable)
        now = time.monotonic()
        for vcpu in vcpus:
            key = str(vcpu["id"])
            then = self._vcpu_cpu.get(vcpu["id"])
            pct = 0.0
            if then and now - then[0] > 0.3:
                pct = max(0.0, (vcpu["cpu_time_s"] - then[1]) / (now - then[0]) * 100)
            if not then or now - then[0] > 0.3:
                self._vcpu_cpu[vcpu["id"]] = (now, vcpu["cpu_time_s"])
                self.history.add(key, pct)
            else:
                pct = self.history.get(key)[-1]
            cells = {
                "id": key,
                "state": vcpu["state"] if vcpu["online"] else "offline",
                "bar": bar(pct / 100, 16),
                "pct": f"{pct:5.1f}",
                "hist": spark(list(self.history.get(key))[-12:], 100),
                "cpu": "-" if vcpu.get("host_cpu") is None or not vcpu["online"] else str(vcpu["host_cpu"]),
                "pin": ",".join(map(str, vcpu["affinity"])) if vcpu.get("affinity") else "all",
                "calls": str(vcpu["hypercalls"]),
            }
            if key in table.rows:
                for column, value in cells.items():
                    table.update_cell(key, column, value)
            else:
                table.add_row(*cells.values(), key=key)

    def _update_rates(self, stats: dict[str, Any], rates: dict[str, float]) -> None:
        table = self.query_one("#rates_table", DataTable)
        per_op: dict[str, int] = stats.get("hypercalls_per_op", {})
        total = sum(per_op.values()) or 1
        uptime = max(stats.get("uptime_s", 0.0), 1e-9)
        table.clear()
        for op, count in sorted(per_op.items(), key=lambda item: -item[1]):
            table.add_row(
                op, str(count), f"{100 * count / total:.1f}", f"{count / uptime:.1f}", f"{rates.get(op, 0.0):.1f}"
            )

    def on_domain_screen_console_text(self, message: ConsoleText) -> None:
        console = self.query_one("#console_log", RichLog)
        for line in message.text.splitlines():
            console.write(line)

    def on_domain_screen_records(self, message: Records) -> None:
        if not self.follow:
            self.held_back.extend(message.records)
            del self.held_back[: max(0, len(self.held_back) - MAX_LOG_ROWS)]
            self._log_status()
            return
        self._append_records(message.records)

    def _append_records(self, records: list[HypercallInfo]) -> None:
        table = self.query_one("#records", DataTable)
        rows = []
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
            rows.append(
                (
                    f"{(record.time_ns - self.log_start_ns) / 1e9:10.4f}",
                    str(record.vcpu),
                    op,
                    args,
                    str(record.result),
                    f"{record.latency_ns / 1000:.1f}",
                )
            )
        table.add_rows(rows)  # one batch: one layout
        while table.row_count > MAX_LOG_ROWS:
            table.remove_row(table.coordinate_to_cell_key((0, 0)).row_key)
        if self.follow and table.row_count:
            table.move_cursor(row=table.row_count - 1, animate=False)

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
        self.query_one("#tabs", TabbedContent).active = "log"
        field = self.query_one("#logfilter", Input)
        field.remove_class("hidden")
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "logfilter":
            return
        self.record_filter = RecordFilter.parse(event.value)
        self.query_one("#records", DataTable).clear()
        self.last_seq = 0
        event.input.add_class("hidden")
        self.query_one("#records", DataTable).focus()
        self._log_status()
        self.reload_records()

    @work(exclusive=True, group="domain-reload")
    async def reload_records(self) -> None:
        records = await self.client.hypercalls(self.domain_name, limit=2000)
        self.post_message(self.Records(records))

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
