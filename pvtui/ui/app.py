"""The pvtui application: screens, actions on the selected domain, the engine link.

The engine is reached through :class:`pvtui.client.Client` in async workers,
so nothing blocks the UI; pvd's events arrive as :class:`EngineEvent`
messages, its once-a-second figures for every domain as one
:class:`StatsTick`. Screens get data pushed down; they post messages up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.screen import Screen

from pvtui.client import Client, DomainSummary, EngineError, HostInfo, default_domains_dir
from pvtui.domain.model import DomainInfo
from pvtui.domain.units import MIB
from pvtui.ui import actions
from pvtui.ui.dialogs import ConfirmDialog, PickDialog, ValueDialog, cpus_check, int_check, size_check
from pvtui.ui.screens.domain import DomainScreen
from pvtui.ui.screens.domains import DomainsScreen
from pvtui.ui.screens.editor import TEMPLATE, EditorScreen, diff_configs
from pvtui.ui.screens.help import HelpScreen
from pvtui.ui.screens.rebalance import RebalanceScreen
from pvtui.ui.table import LiveTable

MEMORY_STEP = 64 * MIB
#: The highlighted domain's figures are fetched ahead (once a second and after
#: the cursor settles); Enter uses them while they are this fresh.
PREFETCH_FRESH_S = 1.5
PREFETCH_SETTLE_S = 0.15


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


class PvtuiApp(App[None]):
    CSS_PATH = "pvtui.tcss"
    TITLE = "pvtui"
    SUB_TITLE = "paravirtual domains on KVM"
    BINDINGS = actions.bindings(actions.APP)

    def __init__(self, domains_dir: Path | None = None) -> None:
        super().__init__()
        self.domains_dir = domains_dir or default_domains_dir()
        self.client: Client | None = None
        self.domains: dict[str, DomainSummary] = {}
        self.host: HostInfo | None = None
        self.domains_screen = DomainsScreen()
        self.domain_screen = DomainScreen()
        self._domain_screen_built = False
        self._prefetched: tuple[str, float, DomainInfo] | None = None  # (domain, when, info)

    # --- engine ------------------------------------------------------------------------
    def on_mount(self) -> None:
        # Installed, the domain view stays built when popped: opening a domain
        # pushes a ready screen instead of composing one.
        self.install_screen(self.domain_screen, "domain")
        self.push_screen(self.domains_screen)
        self.screen_change_signal.subscribe(self, self._screen_changed)
        self.connect_engine()

    @work(exclusive=True, group="engine")
    async def connect_engine(self) -> None:
        """Connect (starting pvd if needed), load the registry, then follow events."""
        while True:
            try:
                self.client = await Client.connect(start=True, domains_dir=self.domains_dir)
                events = await Client.connect(start=False)
                await events.subscribe(["stats", "state", "lifecycle"])
                await self.reload()
                await self._follow(events)
                self.notify("Lost the connection to pvd; reconnecting…", title="Engine", severity="warning")
            except EngineError as exc:
                self.notify(exc.message, title=exc.title, severity="error")
            await asyncio.sleep(2.0)

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
        """Keep the garbage collector off everything built so far (gc.freeze).

        Modules, widgets, styles and caches live as long as the app; without
        this, every full collection walks them all (~40 ms here, in the middle
        of a key press).
        """
        gc.collect()
        gc.freeze()

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
        elif kind == "lifecycle" and data.get("what") in ("restarted", "preserved", "crash_loop", "destroyed"):
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

    # --- selection and calls --------------------------------------------------------------
    def selected_domain(self) -> str | None:
        screen = self.screen
        if isinstance(screen, DomainScreen):
            return screen.domain_name
        if isinstance(screen, DomainsScreen):
            return screen.selected_name
        return None

    def _target(self) -> tuple[Client, str] | None:
        name = self.selected_domain()
        if self.client is None:
            self.notify("Not connected to pvd yet.", title="Engine", severity="warning")
            return None
        if name is None:
            self.notify("Select a domain first.", title="No domain")
            return None
        return self.client, name

    @work(group="actions")
    async def call(self, title: str, op: str, *args: Any, **kwargs: Any) -> None:
        """Run one engine call; a refusal is shown with the engine's own message."""
        if self.client is None:
            return
        try:
            await getattr(self.client, op)(*args, **kwargs)
        except EngineError as exc:
            self.notify(exc.message, title=exc.title, severity="error", timeout=8)
            return
        self.notify(title)
        await self.reload()

    def on_domains_screen_selected(self, message: DomainsScreen.Selected) -> None:
        held = self._prefetched
        if (
            held is not None
            and held[0] == message.name
            and time.monotonic() - held[1] < PREFETCH_FRESH_S
            and self.client is not None
        ):
            self._show_domain(message.name, self.client, held[2])
        else:
            self.open_domain(message.name)

    @work(exclusive=True, group="open-domain")
    async def open_domain(self, name: str) -> None:
        """Fetch the domain's figures first, so the view's first frame already shows them."""
        if self.client is None:
            return
        try:
            info = await self.client.info(name)
        except EngineError as exc:
            self.notify(exc.message, title=exc.title, severity="error")
            return
        self._show_domain(name, self.client, info)

    def _show_domain(self, name: str, client: Client, info: DomainInfo) -> None:
        if self.screen is self.domains_screen:
            self.domain_screen.show_domain(name, client, info)
            self.push_screen("domain")

    def _screen_changed(self, _screen: Screen[Any]) -> None:
        """Back home: fetch the highlighted domain's figures now rather than at the next round."""
        self._prefetch_highlighted()

    def _prefetch_highlighted(self) -> None:
        if self.screen is self.domains_screen and (name := self.domains_screen.selected_name):
            self.prefetch_info(name)

    def on_live_table_row_highlighted(self, message: LiveTable.RowHighlighted) -> None:
        if message.table is self.domains_screen.table:
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
    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_shutdown(self) -> None:
        if target := self._target():
            self.call(f"asked {target[1]} to shut down", "shutdown", target[1])

    def action_reboot(self) -> None:
        if target := self._target():
            self.call(f"asked {target[1]} to reboot", "reboot", target[1])

    def action_destroy(self) -> None:
        if not (target := self._target()):
            return
        name = target[1]

        def confirmed(yes: bool | None) -> None:
            if yes:
                if isinstance(self.screen, DomainScreen):
                    self.pop_screen()
                self.call(f"{name} destroyed", "destroy", name)

        self.push_screen(ConfirmDialog(f"Destroy {name} now? Its guest gets no chance to shut down."), confirmed)

    def action_pause(self) -> None:
        if target := self._target():
            name = target[1]
            paused = self.domains.get(name) and self.domains[name].state == "paused"
            self.call(f"{name} {'unpaused' if paused else 'paused'}", "unpause" if paused else "pause", name)

    def action_vcpus_delta(self, delta: int) -> None:
        if (target := self._target()) and (domain := self.domains.get(target[1])):
            self.call(
                f"{domain.name}: {domain.vcpus_online + delta} vCPUs",
                "vcpu_set",
                domain.name,
                domain.vcpus_online + delta,
            )

    def action_memory_delta(self, delta: int) -> None:
        if (target := self._target()) and (domain := self.domains.get(target[1])):
            size = domain.memory.target_bytes + delta * MEMORY_STEP
            self.call(f"{domain.name}: memory target {size // MIB} MiB", "mem_set", domain.name, size)

    def action_set_vcpus(self) -> None:
        if (target := self._target()) and (domain := self.domains.get(target[1])):
            self._ask(
                ValueDialog(
                    f"vCPUs online for {domain.name}",
                    str(domain.vcpus_online),
                    f"1 to {domain.vcpus_max} (maxvcpus)",
                    int_check(1, domain.vcpus_max),
                ),
                lambda value: self.call(f"{domain.name}: {value} vCPUs", "vcpu_set", domain.name, int(value)),
            )

    def action_set_memory(self) -> None:
        if (target := self._target()) and (domain := self.domains.get(target[1])):
            self._ask(
                ValueDialog(
                    f"Memory target for {domain.name}",
                    f"{domain.memory.target_bytes // MIB}M",
                    f"up to {domain.memory.present_bytes // MIB}M present (mem-max grows to "
                    f"{domain.memory.max_bytes // MIB}M)",
                    size_check,
                ),
                lambda value: self.call(f"{domain.name}: memory target {value}", "mem_set", domain.name, value),
            )

    def action_pin(self) -> None:
        if (target := self._target()) and (domain := self.domains.get(target[1])):

            def pick_cpus(vcpu: str | None) -> None:
                if vcpu is None:
                    return
                self._ask(
                    ValueDialog(
                        f"Host CPUs for {domain.name} vCPU {vcpu}",
                        "all",
                        'Xen syntax: "0-3,^1", "2", "all"',
                        cpus_check,
                    ),
                    lambda cpus: self.call(
                        f"{domain.name} vCPU {vcpu} pinned to {cpus}", "vcpu_pin", domain.name, int(vcpu), cpus
                    ),
                )

            self._ask(
                ValueDialog(
                    f"Which vCPU of {domain.name}?",
                    "0",
                    f"0 to {domain.vcpus_max - 1}",
                    int_check(0, domain.vcpus_max - 1),
                ),
                pick_cpus,
            )

    def action_sched(self) -> None:
        if (target := self._target()) and (domain := self.domains.get(target[1])):

            def set_cap(weight: str | None) -> None:
                if weight is None:
                    return
                self._ask(
                    ValueDialog(
                        f"Cap for {domain.name}",
                        str(domain.cap),
                        "percent of one host CPU, 0 = none",
                        int_check(0, 3200),
                    ),
                    lambda cap: self.call(
                        f"{domain.name}: weight {weight}, cap {cap}", "sched_credit", domain.name, int(weight), int(cap)
                    ),
                )

            self._ask(
                ValueDialog(
                    f"Weight for {domain.name}", str(domain.weight), "1 to 65535 (default 256)", int_check(1, 65535)
                ),
                set_cap,
            )

    def _ask(self, dialog: Screen[str | None], then: Any) -> None:
        def done(value: str | None) -> None:
            if value is not None:
                then(value)

        self.push_screen(dialog, done)

    def action_create(self) -> None:
        running = set(self.domains)
        files = sorted(p.name for p in self.domains_dir.glob("*.yaml"))
        choices = [f for f in files if Path(f).stem not in running] or files
        if not choices:
            self.notify(f"No definitions in {self.domains_dir}; press n for a new one.", title="Create")
            return

        def picked(choice: str | None) -> None:
            if choice:
                self.call(f"created from {choice}", "create", str(self.domains_dir / choice))

        self.push_screen(PickDialog(f"Start which definition? ({self.domains_dir})", choices), picked)

    def action_new_domain(self) -> None:
        def open_editor(name: str | None) -> None:
            if name:
                path = self.domains_dir / f"{name}.yaml"
                text = path.read_text() if path.exists() else TEMPLATE.format(name=name)
                self.push_screen(EditorScreen(path, text))

        self._ask(
            ValueDialog(
                "Name of the new domain",
                "",
                "letters, digits, _ . -",
                lambda v: (
                    None
                    if v and v.replace("-", "").replace("_", "").replace(".", "").isalnum()
                    else "letters, digits, _ . -"
                ),
            ),
            open_editor,
        )

    def action_edit(self) -> None:
        if not (target := self._target()):
            return
        domain = self.domains.get(target[1])
        path = Path(domain.definition) if domain and domain.definition else self.domains_dir / f"{target[1]}.yaml"
        if not path.exists():
            self.notify(f"{path} does not exist.", title="No definition", severity="error")
            return
        self.push_screen(EditorScreen(path))

    def on_editor_screen_saved(self, message: EditorScreen.Saved) -> None:
        self.apply_definition(message)

    @work(group="actions")
    async def apply_definition(self, message: EditorScreen.Saved) -> None:
        new = message.new
        domain = self.domains.get(new.name)
        if domain is None or self.client is None or message.old is None:
            self.notify(f"Saved {message.path.name}. Press c to start it.", title="Saved")
            return
        live, restart = diff_configs(message.old, new)
        applied: list[str] = []
        try:
            for change in live:
                if change.key == "vcpus":
                    await self.client.vcpu_set(new.name, new.vcpus)
                elif change.key == "memory":
                    if new.memory > domain.memory.present_bytes:
                        await self.client.mem_max(new.name, new.memory)
                    await self.client.mem_set(new.name, new.memory)
                elif change.key in ("cpu_weight", "cpu_cap"):
                    await self.client.sched_credit(new.name, new.cpu_weight, new.cpu_cap)
                elif change.key == "cpus":
                    for vcpu in range(new.maxvcpus_or_vcpus):
                        cpus = new.vcpu_affinity(vcpu)
                        await self.client.vcpu_pin(new.name, vcpu, ",".join(map(str, sorted(cpus))) if cpus else "all")
                applied.append(change.key)
        except EngineError as exc:
            self.notify(
                f"{exc.message} (applied so far: {', '.join(applied) or 'nothing'})", title=exc.title, severity="error"
            )
            return
        parts = [f"saved {message.path.name}"]
        if applied:
            parts.append("applied live: " + ", ".join(applied))
        if restart:
            parts.append("needs a restart: " + ", ".join(restart))
        self.notify("; ".join(parts), title="Definition", timeout=8)
        await self.reload()

    def action_rebalance(self) -> None:
        if self.client is not None:
            self.push_screen(RebalanceScreen(self.client, list(self.domains.values()), self.host))

    # --- command palette -----------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for action, title, help_text in actions.palette():
            yield SystemCommand(title, help_text, lambda a=action: self.run_action(a))


def main(domains_dir: Path | None = None) -> int:
    PvtuiApp(domains_dir).run()
    return 0
