"""The actions on the selected domain: keys, palette entries and their dialogs.

Each dialog flow is straight-line code in a worker (``push_screen_wait``);
each engine request goes through :meth:`DomainActions.call`, which shows the
engine's refusal, title and message, as a notification.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import work
from textual.app import SuspendNotSupported

from pvtui.client import Client, EngineError
from pvtui.client.definitions import (
    apply_live,
    aside_path,
    check_and_save,
    fetch_definition,
    parse_or_none,
    run_editor,
    start_text,
)
from pvtui.client.hosts import HostUri, host_target
from pvtui.client.moves import live_move
from pvtui.domain.diff import diff_configs
from pvtui.domain.units import MIB
from pvtui.errors import PvtuiError
from pvtui.ui.dialogs import ConfirmDialog, PickDialog, ValueDialog, cpus_check, int_check, size_check
from pvtui.ui.engine_link import EngineLinkApp
from pvtui.ui.screens.domain import DomainScreen
from pvtui.ui.screens.domains import DomainsScreen
from pvtui.ui.screens.editor import TEMPLATE, EditorScreen
from pvtui.ui.screens.help import HelpScreen
from pvtui.ui.screens.rebalance import RebalanceScreen

MEMORY_STEP = 64 * MIB


class DomainActions(EngineLinkApp):
    # --- selection and calls --------------------------------------------------------------
    def selected_domain(self) -> str | None:
        screen = self.screen
        if isinstance(screen, DomainScreen):
            return screen.domain_name
        if isinstance(screen, DomainsScreen):
            return screen.selected_name
        row = getattr(screen, "selected_row", None)  # the fleet view: HOST/NAME, its host focused
        return row.partition("/")[2] if isinstance(row, str) and row else None

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

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_shutdown(self) -> None:
        if target := self._target():
            self.call(f"asked {target[1]} to shut down", "shutdown", target[1])

    def action_reboot(self) -> None:
        if target := self._target():
            self.call(f"asked {target[1]} to reboot", "reboot", target[1])

    @work(group="dialogs")
    async def action_destroy(self) -> None:
        if not (target := self._target()):
            return
        name = target[1]
        question = f"Destroy {name} now? Its guest gets no chance to shut down."
        if await self.push_screen_wait(ConfirmDialog(question)):
            if isinstance(self.screen, DomainScreen):
                self.pop_screen()
            self.call(f"{name} destroyed", "destroy", name)

    def action_pause(self) -> None:
        if target := self._target():
            name = target[1]
            paused = self.domains.get(name) and self.domains[name].state == "paused"
            self.call(f"{name} {'unpaused' if paused else 'paused'}", "unpause" if paused else "pause", name)

    def action_suspend(self) -> None:
        if target := self._target():
            name = target[1]
            suspended = self.domains.get(name) and self.domains[name].state == "suspended"
            self.call(f"{name} {'resumed' if suspended else 'suspended'}", "resume" if suspended else "suspend", name)

    @work(group="dialogs")
    async def action_migrate(self) -> None:
        if not ((target := self._target()) and (domain := self.domains.get(target[1]))):
            return
        if domain.migration is not None:
            if await self.push_screen_wait(ConfirmDialog(f"Cancel the migration of {domain.name}? It stays here.")):
                self.call(f"cancelling {domain.name}'s migration", "migrate_cancel", domain.name)
            return
        where = await self.push_screen_wait(
            ValueDialog(
                f"Migrate {domain.name} live to which pvd?",
                "",
                "a host (pvtui host ls, or ssh://...), or a pvd's runtime directory here",
                _target_check,
            )
        )
        host = host_target(where) if where else None
        if host is not None:
            self.move_live(domain.name, host)
        elif where:
            self.call(f"{domain.name} migrated to {where}", "migrate", domain.name, where)

    @work(group="actions")
    async def move_live(self, name: str, target: HostUri) -> None:
        """A live move to another host (the app relays the stream; progress arrives as events)."""
        try:
            result = await live_move(self.host_uri, target, name)
        except EngineError as exc:
            self.notify(exc.message, title=exc.title, severity="error", timeout=8)
            return
        self.notify(f"{name} moved to {target} (downtime {result.get('downtime_ms', 0):.1f} ms)", title="Moved")
        await self.reload()

    def action_vcpus_delta(self, delta: int) -> None:
        if (target := self._target()) and (domain := self.domains.get(target[1])):
            count = domain.vcpus_online + delta
            self.call(f"{domain.name}: {count} vCPUs", "vcpu_set", domain.name, count)

    def action_memory_delta(self, delta: int) -> None:
        if (target := self._target()) and (domain := self.domains.get(target[1])):
            size = domain.memory.target_bytes + delta * MEMORY_STEP
            self.call(f"{domain.name}: memory target {size // MIB} MiB", "mem_set", domain.name, size)

    @work(group="dialogs")
    async def action_set_vcpus(self) -> None:
        if not ((target := self._target()) and (domain := self.domains.get(target[1]))):
            return
        hint = f"1 to {domain.vcpus_max} (maxvcpus)"
        value = await self.push_screen_wait(
            ValueDialog(
                f"vCPUs online for {domain.name}", str(domain.vcpus_online), hint, int_check(1, domain.vcpus_max)
            )
        )
        if value is not None:
            self.call(f"{domain.name}: {value} vCPUs", "vcpu_set", domain.name, int(value))

    @work(group="dialogs")
    async def action_set_memory(self) -> None:
        if not ((target := self._target()) and (domain := self.domains.get(target[1]))):
            return
        memory = domain.memory
        hint = f"up to {memory.present_bytes // MIB}M present (mem-max grows to {memory.max_bytes // MIB}M)"
        value = await self.push_screen_wait(
            ValueDialog(f"Memory target for {domain.name}", f"{memory.target_bytes // MIB}M", hint, size_check)
        )
        if value is not None:
            self.call(f"{domain.name}: memory target {value}", "mem_set", domain.name, value)

    @work(group="dialogs")
    async def action_pin(self) -> None:
        if not ((target := self._target()) and (domain := self.domains.get(target[1]))):
            return
        last = domain.vcpus_max - 1
        vcpu = await self.push_screen_wait(
            ValueDialog(f"Which vCPU of {domain.name}?", "0", f"0 to {last}", int_check(0, last))
        )
        if vcpu is None:
            return
        hint = 'Xen syntax: "0-3,^1", "2", "all"'
        cpus = await self.push_screen_wait(
            ValueDialog(f"Host CPUs for {domain.name} vCPU {vcpu}", "all", hint, cpus_check)
        )
        if cpus is not None:
            self.call(f"{domain.name} vCPU {vcpu} pinned to {cpus}", "vcpu_pin", domain.name, int(vcpu), cpus)

    @work(group="dialogs")
    async def action_sched(self) -> None:
        if not ((target := self._target()) and (domain := self.domains.get(target[1]))):
            return
        weight = await self.push_screen_wait(
            ValueDialog(
                f"Weight for {domain.name}", str(domain.weight), "1 to 65535 (default 256)", int_check(1, 65535)
            )
        )
        if weight is None:
            return
        cap = await self.push_screen_wait(
            ValueDialog(
                f"Cap for {domain.name}", str(domain.cap), "percent of one host CPU, 0 = none", int_check(0, 3200)
            )
        )
        if cap is not None:
            title = f"{domain.name}: weight {weight}, cap {cap}"
            self.call(title, "sched_credit", domain.name, int(weight), int(cap))

    @work(group="dialogs")
    async def action_create(self) -> None:
        running = set(self.domains)
        files = sorted(p.name for p in self.domains_dir.glob("*.yaml"))
        choices = [f for f in files if Path(f).stem not in running] or files
        if not choices:
            self.notify(f"No definitions in {self.domains_dir}; press n for a new one.", title="Create")
            return
        choice = await self.push_screen_wait(PickDialog(f"Start which definition? ({self.domains_dir})", choices))
        if choice:
            path = self.domains_dir / choice
            if self.host_uri.is_local:
                self.call(f"created from {choice}", "create", str(path))
            else:  # another host's pvd cannot read this machine's files: send the text
                self.call(f"created from {choice} on {self.host_uri}", "create_from_text", path.read_text(), str(path))

    @work(group="dialogs")
    async def action_new_domain(self) -> None:
        name = await self.push_screen_wait(
            ValueDialog("Name of the new domain", "", "letters, digits, _ . -", _name_check)
        )
        if name:
            path = self.domains_dir / f"{name}.yaml"
            text = path.read_text() if path.exists() else TEMPLATE.format(name=name)
            self.push_screen(EditorScreen(path, text))

    def action_edit(self) -> None:
        if not (target := self._target()):
            return
        if not self.host_uri.is_local:
            # The definition is a file on that host: its pvd hands it over and writes it back.
            self.edit_remote(target[0], target[1])
            return
        domain = self.domains.get(target[1])
        path = Path(domain.definition) if domain and domain.definition else self.domains_dir / f"{target[1]}.yaml"
        if not path.exists():
            self.notify(f"{path} does not exist.", title="No definition", severity="error")
            return
        self.push_screen(EditorScreen(path))

    @work(group="dialogs")
    async def edit_remote(self, client: Client, name: str) -> None:
        try:
            definition = await client.call("definition", name=name)
        except EngineError as exc:
            self.notify(exc.message, title=exc.title, severity="error")
            return

        async def store(text: str) -> object:
            return await client.call("definition_put", name=name, text=text)

        self.push_screen(EditorScreen(Path(definition["path"]), definition["text"], store=store))

    def on_editor_screen_saved(self, message: EditorScreen.Saved) -> None:
        self.apply_definition(message)

    @work(group="actions")
    async def apply_definition(self, message: EditorScreen.Saved) -> None:
        new = message.new
        domain = self.domains.get(new.name)
        if domain is None or self.client is None or message.old is None:
            self.notify(f"Saved {message.path.name}. Press c to start it.", title="Saved")
            return
        try:
            done = await apply_live(self.client, message.old, new, domain.memory.present_bytes)
        except EngineError as exc:
            self.notify(exc.message, title=exc.title, severity="error")
            return
        parts = [f"saved {message.path.name}"]
        if done.applied:
            parts.append("applied live: " + ", ".join(done.applied))
        if done.restart:
            parts.append("needs a restart: " + ", ".join(done.restart))
        self.notify("; ".join(parts), title="Definition", timeout=8)
        await self.reload()

    @work(group="dialogs")
    async def action_external_edit(self) -> None:
        """The definition in $VISUAL / $EDITOR with the UI suspended; checked on return, then saved and,
        if the operator says so, applied live (an invalid edit is kept aside, never saved)."""
        if not (target := self._target()):
            return
        client, name = target
        domain = self.domains.get(name)
        here = self.domains_dir / f"{name}.yaml"
        local_path = Path(domain.definition) if domain and domain.definition else here
        try:
            definition = await fetch_definition(client, self.host_uri, name, local_path)
            text, continuing = start_text(definition)
            with self.suspend():
                if continuing:
                    print(f"pvtui: continuing your edit kept in {aside_path(definition)}", flush=True)
                edited = run_editor(text, name)
            outcome = await check_and_save(definition, edited)
        except SuspendNotSupported:
            self.notify("This terminal cannot hand over to an editor; press e.", title="Editor", severity="error")
            return
        except (PvtuiError, EngineError) as exc:
            self.notify(exc.message, title=exc.title, severity="error", timeout=10)
            return
        if not outcome.changed:
            self.notify(f"{definition.path.name}: no change.", title="Definition")
            return
        if outcome.config is None:
            problems = "\n".join(outcome.problems[:6])
            self.notify(
                f"{problems}\nNot saved, nothing applied; your edit is kept in {outcome.kept_at}: E continues it.",
                title="Invalid definition",
                severity="error",
                timeout=15,
            )
            return
        old = parse_or_none(definition.text, definition.path)
        live, restart = diff_configs(old, outcome.config) if old else ([], [])
        question = ConfirmDialog(
            f"Saved {definition.path}. Apply live now: {', '.join(c.key for c in live)}?"
            + (f" ({', '.join(restart)} need a restart)" if restart else "")
        )
        wants_live: bool = False
        if live:
            wants_live = await self.push_screen_wait(question)
        if wants_live:
            self.apply_definition(EditorScreen.Saved(definition.path, old, outcome.config))
            return
        said = f"Saved {definition.path}" + ("; not applied (e or E again, or restart it)" if live else "")
        self.notify(said + (f"; needs a restart: {', '.join(restart)}" if restart else ""), title="Definition")

    def action_rebalance(self) -> None:
        if self.client is not None:
            self.push_screen(RebalanceScreen(self.client, list(self.domains.values()), self.host))


def _name_check(value: str) -> str | None:
    """A domain name: letters, digits, ``_ . -`` (the schema checks the rest when saved)."""
    if value and value.replace("-", "").replace("_", "").replace(".", "").isalnum():
        return None
    return "letters, digits, _ . -"


def _target_check(value: str) -> str | None:
    """Another pvd: a host (named or a URI), a runtime directory holding pvd.sock, or the socket itself."""
    try:
        if host_target(value) is not None:
            return None
    except PvtuiError as exc:
        return exc.title
    path = Path(value).expanduser()
    if (path / "pvd.sock").exists() or (path.name.endswith(".sock") and path.exists()):
        return None
    return "no host of that name, and no pvd.sock there"
