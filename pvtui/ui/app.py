"""The pvtui application: its screens and how a domain's view opens.

The engine link is in ``engine_link.py``, the actions on the selected domain
in ``domain_actions.py``, every key in ``actions.py``.

The engine is reached through :class:`pvtui.client.Client` in async workers,
so nothing blocks the UI; pvd's events arrive as :class:`EngineEvent`
messages, its once-a-second figures for every domain as one
:class:`StatsTick`. Screens get data pushed down; they post messages up.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import SystemCommand
from textual.screen import Screen

from pvtui.client import Client, DomainSummary, EngineError, HostInfo, default_domains_dir
from pvtui.client.hosts import HostUri
from pvtui.domain.model import DomainInfo
from pvtui.ui import actions
from pvtui.ui.domain_actions import DomainActions
from pvtui.ui.engine_link import PREFETCH_FRESH_S, EngineEvent, StatsTick
from pvtui.ui.fleet.links import HostLink
from pvtui.ui.screens.domain import DomainScreen
from pvtui.ui.screens.domains import DomainsScreen

__all__ = ["EngineEvent", "PvtuiApp", "StatsTick", "main"]


class PvtuiApp(DomainActions):
    CSS_PATH = "pvtui.tcss"
    TITLE = "pvtui"
    SUB_TITLE = "paravirtual domains on KVM"
    BINDINGS = actions.bindings(actions.APP)

    def __init__(
        self,
        domains_dir: Path | None = None,
        host: HostUri | None = None,
        fleet: list[tuple[str, HostUri]] | None = None,
        theme: str | None = None,
    ) -> None:
        super().__init__(theme)
        #: Several hosts at once (pvtui -H a,b): the fleet view, one link per host.
        self.fleet = fleet
        self.domains_dir = domains_dir or default_domains_dir()
        #: The pvd this app shows (``pvtui -H``); only ``local`` is ever started by the app itself.
        self.host_uri = host or HostUri("local")
        self.client: Client | None = None
        self.domains: dict[str, DomainSummary] = {}
        self.host: HostInfo | None = None
        self.domains_screen = DomainsScreen()
        self.domain_screen = DomainScreen()
        self._domain_screen_built = False
        self._prefetched: tuple[str, float, DomainInfo] | None = None  # (domain, when, info)

    def on_mount(self) -> None:
        if self.fleet:
            self._mount_fleet(self.fleet)
            return
        # Installed, the domain view stays built when popped: opening a domain
        # pushes a ready screen instead of composing one.
        self.install_screen(self.domain_screen, "domain")
        self.push_screen(self.domains_screen)
        self.screen_change_signal.subscribe(self, self._screen_changed)
        self.connect_engine()

    def _mount_fleet(self, fleet: list[tuple[str, HostUri]]) -> None:
        from pvtui.ui.fleet.links import HostLink
        from pvtui.ui.fleet.screen import FleetScreen

        def changed(link: HostLink) -> None:
            screen.post_message(FleetScreen.Changed(link.name))

        self.fleet_links = [HostLink(label, uri, changed) for label, uri in fleet]
        screen = FleetScreen(self.fleet_links)
        self.push_screen(screen)
        for link in self.fleet_links:
            link.start()

    def focus_fleet_host(self, link: HostLink) -> None:
        """Point the app's own domain actions (v, m, i, w, z, e, E, c...) at a fleet row's host."""
        self.client, self.host_uri, self.host = link.client, link.uri, link.host
        self.domains = {d.name: d for d in link.domains}

    @work(exclusive=True, group="open-domain")
    async def open_fleet_domain(self, link: HostLink, name: str) -> None:
        """The domain view for a fleet row: the app's client and host become the row's host's
        while it is open, so every key of the view acts there."""
        if link.client is None or (info := await self._info_or_notice(link.client, name)) is None:
            return
        self.focus_fleet_host(link)
        self.domains[name] = info.summary  # fresher than the link's last poll
        screen = DomainScreen()
        screen.show_domain(name, link.client, info)
        self.push_screen(screen)

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
        if self.client is None or (info := await self._info_or_notice(self.client, name)) is None:
            return
        self._show_domain(name, self.client, info)

    async def _info_or_notice(self, client: Client, name: str) -> DomainInfo | None:
        """The domain's figures, or None with the engine's refusal shown."""
        try:
            return await client.info(name)
        except EngineError as exc:
            self.notify(exc.message, title=exc.title, severity="error")
            return None

    def _show_domain(self, name: str, client: Client, info: DomainInfo) -> None:
        if self.screen is self.domains_screen:
            self.domain_screen.show_domain(name, client, info)
            self.push_screen("domain")

    def _screen_changed(self, _screen: Screen[Any]) -> None:
        """Back home: fetch the highlighted domain's figures now rather than at the next round."""
        self._prefetch_highlighted()

    # --- command palette -----------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for action, title, help_text in actions.palette():
            yield SystemCommand(title, help_text, lambda a=action: self.run_action(a))


def main(
    domains_dir: Path | None = None,
    host: HostUri | None = None,
    fleet: list[tuple[str, HostUri]] | None = None,
    theme: str | None = None,
) -> int:
    PvtuiApp(domains_dir, host=host, fleet=fleet, theme=theme).run()
    return 0
