"""The fleet view against real pvds: one table of two hosts' domains, a host that is gone, actions per row."""

from __future__ import annotations

import json

from helpers import Engine, run_pvtui
from test_hosts import remote  # noqa: F401 - the second pvd, reached as unix://
from test_ui import until

from pvtui.client.hosts import HostUri, parse_host_uri
from pvtui.ui.app import PvtuiApp
from pvtui.ui.fleet.rebalance import FleetRebalanceScreen
from pvtui.ui.fleet.screen import FleetScreen
from pvtui.ui.screens.domain import DomainScreen
from pvtui.ui.table import LiveTable


def remote_state(uri: str, name: str) -> str | None:
    rows = json.loads(run_pvtui("-H", uri, "list", "--json").stdout or "[]")
    return next((d["state"] for d in rows if d["name"] == name), None)


async def test_fleet_shows_every_host_and_acts_on_the_row_host(engine: Engine, remote, tmp_path) -> None:  # noqa: F811
    _, uri = remote
    engine.ok("create", engine.define("web", "memory: 32M\n"))
    twin = tmp_path / "web.yaml"
    twin.write_text("name: web\nmemory: 32M\n")  # the same name on the other host: a row of its own
    assert run_pvtui("-H", uri, "create", str(twin)).returncode == 0
    fleet = [
        ("here", HostUri("local")),
        ("there", parse_host_uri(uri)),
        ("gone", parse_host_uri("unix:///nonexistent/pvd.sock")),
    ]
    app = PvtuiApp(engine.domains, fleet=fleet)
    try:
        async with app.run_test(size=(140, 36)) as pilot:
            screen = app.screen
            assert isinstance(screen, FleetScreen)
            table = screen.table
            assert await until(pilot, lambda: {"here/web", "there/web"} <= set(table.row_keys))
            hosts_text = str(screen.query_one("#hosts").render())
            assert await until(pilot, lambda: "unreachable since" in str(screen.query_one("#hosts").render()))
            assert "● here" in str(screen.query_one("#hosts").render()), hosts_text
            # An action goes to the row's own host.
            table.move_cursor(table.get_row_index("there/web"))
            await pilot.press("p")
            ok = await until(pilot, lambda: remote_state(uri, "web") == "paused")
            assert ok, [(n.title, n.message) for n in app._notifications]
            assert (
                engine.json("list") and next(d for d in engine.json("list") if d["name"] == "web")["state"] != "paused"
            )
            # Enter opens the domain view on the row's host; its keys act there.
            await pilot.press("enter")
            assert await until(pilot, lambda: isinstance(app.screen, DomainScreen))
            assert app.screen.domain_name == "web" and app.client is not None
            assert await until(pilot, lambda: "web" in str(app.screen.query_one("#title").render()))
            await pilot.press("p")  # unpause, on the far host
            assert await until(pilot, lambda: remote_state(uri, "web") != "paused")
            await pilot.press("escape")
            assert await until(pilot, lambda: isinstance(app.screen, FleetScreen))
            # The filter by host.
            await pilot.press("slash", *"host:here", "enter")
            assert await until(pilot, lambda: table.row_keys == ["here/web"])
            await pilot.press("escape")
            # The app's own keys act on the highlighted row's host; c asks which host first.
            table.move_cursor(table.get_row_index("there/web"))
            assert await until(pilot, lambda: app.client is screen.links["there"].client)
            assert app.selected_domain() == "web" and app.host_uri == screen.links["there"].uri
            await pilot.press("c")
            assert await until(pilot, lambda: app.screen.__class__.__name__ == "PickDialog")
            assert app.screen.options[0] == "there"
            await pilot.press("escape")
            assert await until(pilot, lambda: app.screen is screen)
            # b: the rebalance screen in fleet mode, a dry run with the hosts before and after.
            await pilot.press("b")
            assert await until(pilot, lambda: isinstance(app.screen, FleetRebalanceScreen))
            rebalance = app.screen
            domains = rebalance.query_one("#fleet-domains", LiveTable)
            assert await until(pilot, lambda: {"here/web", "there/web"} <= set(domains.row_keys)), (
                domains.row_keys,
                [(n.title, n.message) for n in app._notifications],
            )
            assert set(rebalance.query_one("#fleet-hosts", LiveTable).row_keys) == {"here", "there"}
            title = str(rebalance.query_one("#fleet-plan-title").render())
            assert "dry run" in title and "unreachable): gone" in title
            domains.move_cursor(domains.get_row_index("here/web"))
            await pilot.press("x", "c")
            assert screen.excluded == {"web"} and rebalance.concurrency == 2
            assert domains.get_cell("here/web", "never") == "✓"
            assert "spread of load" in str(rebalance.query_one("#fleet-steps").render())
            await pilot.press("escape")
            assert await until(pilot, lambda: app.screen is screen)
            # A host that goes away: its rows stay, greyed, and its line says since when.
            assert run_pvtui("-H", uri, "engine", "stop").returncode == 0
            assert await until(pilot, lambda: "there/web" in table._dimmed, 10)
            assert "✗ there" in str(screen.query_one("#hosts").render())
            assert "here/web" not in table._dimmed
    finally:
        run_pvtui("-H", uri, "engine", "start")
        run_pvtui("-H", uri, "destroy", "web")
        engine.ok("destroy", "web")
