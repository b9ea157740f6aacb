"""Rebalancing: host capacity against allocations and measured demand; plan, then apply."""

from __future__ import annotations

from dataclasses import dataclass

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from pvtui.client import Client, DomainSummary, HostInfo
from pvtui.domain.units import MIB
from pvtui.rebalance import Allocation, Limits, Outcome, Plan, Step, apply_plan, make_plan, suggest
from pvtui.ui import actions
from pvtui.ui.format import measured, mib
from pvtui.ui.table import LiveTable
from pvtui.ui.widgets import KeyBar

MEMORY_STEP = 64 * MIB
MIN_MEMORY = 16 * MIB


class RebalanceScreen(Screen[None]):
    BINDINGS = actions.bindings(actions.REBALANCE)

    @dataclass
    class Applied(Message):
        outcome: Outcome

    def __init__(self, client: Client, domains: list[DomainSummary], host: HostInfo | None) -> None:
        super().__init__()
        self.client = client
        self.host = host
        self.domains = {d.name: d for d in domains if d.state in ("running", "blocked", "paused")}
        self.current = {n: Allocation(d.vcpus_online, d.memory.target_bytes) for n, d in self.domains.items()}
        self.wanted = dict(self.current)
        self._suggested_values: dict[tuple[str, str], int] = {}
        #: Why each suggested change (by domain and resource), and what the suggestion saw and left.
        self.reasons: dict[tuple[str, str], str] = {}
        self.notes: tuple[str, ...] = ()

    def limits(self) -> dict[str, Limits]:
        return {
            n: Limits(
                d.vcpus_max,
                MIN_MEMORY,
                d.memory.present_bytes,
                d.cpu_percent,
                d.memory.guest_used_bytes,
                d.cpu_wait_percent,
            )
            for n, d in self.domains.items()
        }

    @property
    def host_free(self) -> int:
        """What pvd would still admit: growing a domain commits memory (see docs/daemon.md)."""
        return self.host.memory_commit_limit - self.host.memory_committed if self.host else 0

    def plan(self) -> Plan:
        cpus = self.host.cpus if self.host else 1
        reasons = {key: why for key, why in self.reasons.items() if self._suggested(key)}
        return make_plan(self.current, self.wanted, self.limits(), self.host_free, cpus, reasons, self.notes)

    def _suggested(self, key: tuple[str, str]) -> bool:
        """A reason holds while the operator has not edited that value since the suggestion."""
        return key in self.reasons and self._suggested_values.get(key) == getattr(self.wanted[key[0]], key[1])

    def compose(self) -> ComposeResult:
        yield Static("", id="capacity")
        yield LiveTable(
            [
                ("name", "DOMAIN"),
                ("cpu", "CPU% used"),
                ("wait", "WAIT%"),
                ("vcpus", "VCPUS now→plan"),
                ("max", "MAX"),
                ("used", "GUEST USED (its report)"),
                ("mem", "MEMORY now→plan"),
                ("present", "PRESENT"),
            ],
            id="alloc",
        )
        yield Static("", id="plan")
        yield KeyBar()

    def on_mount(self) -> None:
        self._show()

    @property
    def selected(self) -> str | None:
        return self.query_one("#alloc", LiveTable).cursor_key

    def _show(self) -> None:
        rows = []
        for name, d in sorted(self.domains.items()):
            now, want = self.current[name], self.wanted[name]
            cells = [
                name,
                measured(d.cpu_percent, 0, 0),
                measured(d.cpu_wait_percent, 0, 0),
                f"{now.vcpus} → {want.vcpus}" if want.vcpus != now.vcpus else str(now.vcpus),
                str(d.vcpus_max),
                mib(d.memory.guest_used_bytes),
                f"{mib(now.memory)} → {mib(want.memory)}" if want.memory != now.memory else mib(now.memory),
                mib(d.memory.present_bytes),
            ]
            rows.append((name, cells))
        self.query_one("#alloc", LiveTable).set_rows(rows)
        plan = self.plan()
        capacity = "host: unknown"
        if self.host and plan.before and plan.after:
            capacity = f"host now:   {plan.before.describe()}\nafter plan: {plan.after.describe()}"
        self.query_one("#capacity", Static).update(escape(capacity))
        lines = [
            f"plan: ({len(plan.steps)} steps; donors first: {', '.join(plan.givers()) or 'none'}; "
            f"receivers: {', '.join(plan.takers()) or 'none'})"
        ]
        lines += [f"  {i + 1}. {escape(step.explain())}" for i, step in enumerate(plan.steps)] or [
            "  nothing to change"
        ]
        lines += [f"  [red]{escape(problem)}[/red]" for problem in plan.problems]
        lines += [f"  [dim]note: {escape(note)}[/dim]" for note in plan.notes]
        self.query_one("#plan", Static).update("\n".join(lines))

    def _adjust(self, vcpus: int = 0, memory: int = 0) -> None:
        name = self.selected
        if name is None:
            return
        want = self.wanted[name]
        limit = self.limits()[name]
        self.wanted[name] = Allocation(
            max(1, min(limit.max_vcpus, want.vcpus + vcpus)),
            max(limit.min_memory, min(limit.max_memory, want.memory + memory)),
        )
        self._show()

    def action_vcpus(self, delta: int) -> None:
        self._adjust(vcpus=delta)

    def action_memory(self, delta: int) -> None:
        self._adjust(memory=delta * MEMORY_STEP)

    def action_suggest(self) -> None:
        cpus = self.host.cpus if self.host else 1
        suggestion = suggest(self.current, self.limits(), cpus, self.host_free)
        self.wanted, self.reasons, self.notes = suggestion.wanted, suggestion.reasons, tuple(suggestion.notes)
        self._suggested_values = {key: getattr(self.wanted[key[0]], key[1]) for key in self.reasons}
        self._show()
        self.notify(
            "From measured demand (CPU used + waited) and each guest's report of its memory use; every step says "
            "why (rules: docs/rebalance.md). Review, then press a.",
            title="Suggest",
        )

    def action_reset(self) -> None:
        self.wanted = dict(self.current)
        self.reasons, self.notes = {}, ()
        self._show()

    def action_apply(self) -> None:
        plan = self.plan()
        if not plan.ok:
            self.notify("\n".join(plan.problems), title="Plan refused", severity="error")
            return
        if not plan.steps:
            self.notify("Nothing to change.", title="Plan")
            return
        self.run_plan(plan)

    @work(exclusive=True, group="rebalance")
    async def run_plan(self, plan: Plan) -> None:
        async def apply(step: Step, value: int) -> object:
            if step.resource == "vcpus":
                return await self.client.vcpu_set(step.domain, value)
            return await self.client.mem_set(step.domain, value)

        outcome = await apply_plan(plan, apply)
        self.post_message(self.Applied(outcome))

    def on_rebalance_screen_applied(self, message: Applied) -> None:
        outcome = message.outcome
        self.reasons, self.notes = {}, ()
        if outcome.failed is None:
            self.current = dict(self.wanted)
            self.notify(f"{len(outcome.done)} steps applied.", title="Rebalanced")
        else:
            undone = "rolled back" if outcome.rolled_back else "NOT rolled back"
            self.notify(
                f"{outcome.failed.describe()} failed: {outcome.error}. {len(outcome.done)} earlier steps {undone}.",
                title="Plan failed",
                severity="error",
            )
            self.wanted = dict(self.current)
        self._show()
