"""The rebalance screen's fleet mode: moves between hosts and resizes, planned from measured demand.

A dry run until the operator presses ``a`` and confirms: the hosts before
and after, every domain with where it goes and what it is given, and each
step with its reason (pvtui/fleet_rebalance.py's rules, docs/rebalance.md).
``x`` marks a domain "never move", ``c`` sets how many moves run at once.
While a plan runs each step shows its state; a failure undoes what was done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Static

from pvtui.client import EngineError
from pvtui.client.moves import Endpoint, move_domain
from pvtui.fleet_rebalance import FleetPlan, FleetStep, HostState, Move, Outcome, Resize, apply, suggest
from pvtui.ui import actions
from pvtui.ui.dialogs import ConfirmDialog
from pvtui.ui.format import measured, mib
from pvtui.ui.table import LiveTable
from pvtui.ui.widgets import KeyBar

if TYPE_CHECKING:
    from pvtui.ui.fleet.links import HostLink

#: The concurrency cap cycles through these (``c``).
CONCURRENCY_CHOICES = (1, 2, 3, 4)
STEP_MARKS = {"start": "…", "done": "✓", "failed": "✗", "undone": "↶"}


def _change(now: str, then: str) -> str:
    return now if now == then else f"{now} → {then}"


class FleetRebalanceScreen(Screen[None]):
    BINDINGS = actions.bindings(actions.FLEET_REBALANCE)
    AUTO_FOCUS = "#fleet-domains"

    def __init__(self, links: dict[str, HostLink], excluded: set[str], concurrency: int = 1) -> None:
        super().__init__()
        self.links = links
        #: Shared with the fleet view: "never move" outlives this screen.
        self.excluded = excluded
        self.concurrency = concurrency
        self.resize = True
        self.plan: FleetPlan | None = None
        self.progress: dict[int, str] = {}
        self.running = False

    def compose(self) -> ComposeResult:
        yield Static("", id="fleet-plan-title")
        yield LiveTable(
            [
                ("host", "HOST"),
                ("cpus", "CPUS"),
                ("load", "LOAD now→plan"),
                ("vcpus", "vCPUs/CPU now→plan"),
                ("free", "MEM FREE now→plan"),
            ],
            id="fleet-hosts",
        )
        yield LiveTable(
            [
                ("host", "HOST"),
                ("name", "DOMAIN"),
                ("cpu", "CPU%"),
                ("wait", "WAIT%"),
                ("vcpus", "VCPUS now→plan"),
                ("mem", "MEMORY now→plan"),
                ("used", "GUEST USED"),
                ("move", "MOVE TO"),
                ("never", "NEVER MOVE"),
            ],
            id="fleet-domains",
        )
        yield Static("", id="fleet-steps")
        yield KeyBar()

    def on_mount(self) -> None:
        self.action_suggest()

    # --- planning -------------------------------------------------------------------------
    def figures(self) -> dict[str, tuple]:
        return {n: (link.host, link.domains) for n, link in self.links.items() if link.reachable and link.host}

    def action_suggest(self) -> None:
        """A fresh plan from the links' latest figures (the hosts that answer)."""
        if self.running:
            self.notify("A plan is running; wait for it to end.", title="Busy", severity="warning")
            return
        self.plan = suggest(self.figures(), self.excluded, resize=self.resize)
        self.progress = {}
        self._show()

    def action_never_move(self) -> None:
        key = self.query_one("#fleet-domains", LiveTable).cursor_key
        if key is None:
            return
        name = key.partition("/")[2]
        self.excluded ^= {name}
        self.action_suggest()

    def action_concurrency(self) -> None:
        index = CONCURRENCY_CHOICES.index(self.concurrency) if self.concurrency in CONCURRENCY_CHOICES else 0
        self.concurrency = CONCURRENCY_CHOICES[(index + 1) % len(CONCURRENCY_CHOICES)]
        self._show()

    def action_toggle_resize(self) -> None:
        self.resize = not self.resize
        self.action_suggest()

    # --- showing ----------------------------------------------------------------------------
    def _show(self) -> None:
        plan = self.plan
        if plan is None:
            return
        never = ", ".join(sorted(self.excluded)) or "none"
        unreachable = [n for n, link in self.links.items() if not (link.reachable and link.host)]
        title = (
            f"fleet rebalance — {'RUNNING' if self.running else 'dry run: nothing changes until you press a'}  │  "
            f"moves at once: {self.concurrency}  │  resizes: {'on' if self.resize else 'off'}  │  never move: {never}"
        )
        if unreachable:
            title += f"  │  not in the plan (unreachable): {', '.join(unreachable)}"
        self.query_one("#fleet-plan-title", Static).update(escape(title))
        self.query_one("#fleet-hosts", LiveTable).set_rows(
            (name, self._host_cells(before, plan.after[name])) for name, before in plan.before.items()
        )
        self.query_one("#fleet-domains", LiveTable).set_rows(self._domain_rows(plan))
        self.query_one("#fleet-steps", Static).update(self._steps_text(plan))

    @staticmethod
    def _host_cells(before: HostState, after: HostState) -> list[str]:
        return [
            before.name,
            str(before.cpus),
            _change(f"{100 * before.load:.0f}%", f"{100 * after.load:.0f}%"),
            _change(f"{before.vcpus / max(1, before.cpus):.1f}", f"{after.vcpus / max(1, after.cpus):.1f}"),
            _change(mib(max(0, before.memory_free)), mib(max(0, after.memory_free))),
        ]

    def _domain_rows(self, plan: FleetPlan) -> list[tuple[str, list[str]]]:
        moves = {(m.source, m.domain): m.target for m in plan.moves}
        resized = {(r.step.domain, r.step.resource): r.step.new for r in plan.resizes}
        rows = []
        for host, (_, domains) in self.figures().items():
            for d in sorted(domains, key=lambda d: d.name):
                vcpus = resized.get((d.name, "vcpus"), d.vcpus_online)
                memory = resized.get((d.name, "memory"), d.memory.target_bytes)
                rows.append(
                    (
                        f"{host}/{d.name}",
                        [
                            host,
                            d.name,
                            measured(d.cpu_percent, 0, 0),
                            measured(d.cpu_wait_percent, 0, 0),
                            _change(str(d.vcpus_online), str(vcpus)),
                            _change(mib(d.memory.target_bytes), mib(memory)),
                            mib(d.memory.guest_used_bytes) if d.memory.guest_used_bytes else "—",
                            moves.get((host, d.name), ""),
                            "✓" if d.name in self.excluded else "",
                        ],
                    )
                )
        return rows

    def _steps_text(self, plan: FleetPlan) -> str:
        lines = [
            f"spread of load between hosts: {100 * plan.spread_before:.0f}% → {100 * plan.spread_after:.0f}%; "
            f"order: shrinks, then moves ({self.concurrency} at once), then grows; a failure undoes what was done"
        ]
        for index, step in enumerate(plan.ordered()):
            mark = STEP_MARKS.get(self.progress.get(index, ""), " ")
            lines.append(f" {mark} {index + 1}. {escape(step.describe())}")
        if plan.empty:
            lines.append("   nothing to change: no move lowers the spread and every domain fits its demand")
        lines += [f"   [dim]note: {escape(note)}[/dim]" for note in plan.notes]
        return "\n".join(lines)

    # --- applying ------------------------------------------------------------------------------
    @work(group="fleet-rebalance-dialogs")
    async def action_apply(self) -> None:
        plan = self.plan
        if plan is None or plan.empty:
            self.notify("Nothing to change.", title="Plan")
            return
        if self.running:
            return
        question = (
            f"Run {len(plan.moves)} moves and {len(plan.resizes)} resizes ({self.concurrency} moves at once)? "
            "A failed step undoes what the plan had done."
        )
        if await self.app.push_screen_wait(ConfirmDialog(question)):
            self.run_plan(plan)

    @work(exclusive=True, group="fleet-rebalance")
    async def run_plan(self, plan: FleetPlan) -> None:
        order = {id(step): index for index, step in enumerate(plan.ordered())}
        self.running, self.progress = True, {}
        self._show()

        def on_step(step: FleetStep, what: str) -> None:
            index = order.get(id(step))
            if index is not None:
                self.progress[index] = what
                self._show()

        try:
            outcome = await apply(plan, self._move, self._resize, self.concurrency, on_step)
        finally:
            self.running = False
        self._report(outcome)
        self._show()

    async def _move(self, step: Move) -> object:
        source, target = self.links[step.source], self.links[step.target]
        if source.client is None or target.client is None:
            raise EngineError(f"{step.source} or {step.target} is not reachable", "Try again once both answer.")
        return await move_domain(Endpoint(source.uri, source.client), Endpoint(target.uri, target.client), step.domain)

    async def _resize(self, step: Resize) -> object:
        client = self.links[step.host].client
        if client is None:
            raise EngineError(f"{step.host} is not reachable", "Try again once it answers.")
        if step.step.resource == "vcpus":
            return await client.vcpu_set(step.domain, step.step.new)
        return await client.mem_set(step.domain, step.step.new)

    def _report(self, outcome: Outcome) -> None:
        if outcome.failed is None:
            self.notify(f"{len(outcome.done)} steps done.", title="Fleet plan applied")
            return
        step, why = outcome.failed
        text = f"{step.describe()} failed: {why}."
        if outcome.undo_failed is not None:
            undo, undo_why = outcome.undo_failed
            text += f" Undoing {undo.describe()} failed too ({undo_why}): check it by hand."
        else:
            text += f" {len(outcome.undone)} done steps were undone."
        self.notify(text, title="Fleet plan failed", severity="error", timeout=15)
