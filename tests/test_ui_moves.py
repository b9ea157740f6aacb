"""The TUI's suspend/resume and live-migration keys, against real pvds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import Engine
from test_migration import domain, start_engine
from test_ui import _eq, live_value, start, until

from pvtui.domain.model import DomainSummary
from pvtui.ui.app import PvtuiApp
from pvtui.ui.format import History, migration_text
from pvtui.ui.screens.domains import row_cells


@pytest.fixture
def napper(engine: Engine) -> Iterator[str]:
    engine.ok("create", engine.define("napper", "memory: 64M\nworkload: {type: verify, wss: 4M}\n"))
    yield "napper"
    if domain(engine, "napper") and domain(engine, "napper")["state"] != "suspended":
        engine.ok("destroy", "napper")
    elif domain(engine, "napper"):
        engine.ok("resume", "napper")
        engine.ok("destroy", "napper")


async def _running(name: str) -> bool:
    return await live_value(name, "state") in ("running", "blocked")


async def test_z_suspends_and_resumes(engine: Engine, napper: str) -> None:
    app = PvtuiApp(engine.domains)
    async with app.run_test(size=(120, 30)) as pilot:
        await start(app, pilot, (napper,))
        table = app.domains_screen.table
        table.move_cursor(table.get_row_index(napper))
        await pilot.press("z")
        assert await until(pilot, lambda: _eq(live_value(napper, "state"), "suspended"))
        assert await until(pilot, lambda: napper in app.domains and app.domains[napper].state == "suspended")
        assert await until(pilot, lambda: "suspended" in table.render_line(1 + table.get_row_index(napper)).text)
        table.move_cursor(table.get_row_index(napper))
        await pilot.press("z")
        assert await until(pilot, lambda: _running(napper), 15)
        assert "MISMATCH" not in engine.ok("console", "-n", napper)


async def test_m_migrates_to_the_pvd_named(engine: Engine, napper: str, tmp_path_factory) -> None:
    target = start_engine(tmp_path_factory, "ui-target")
    try:
        app = PvtuiApp(engine.domains)
        async with app.run_test(size=(120, 30)) as pilot:
            await start(app, pilot, (napper,))
            table = app.domains_screen.table
            table.move_cursor(table.get_row_index(napper))
            await pilot.press("M")
            dialog = app.screen
            dialog.query_one("#value").value = str(target.runtime)
            await pilot.press("enter")
            assert await until(pilot, lambda: domain(target, napper) is not None, 20)
            assert await until(pilot, lambda: napper not in app.domains, 10), "its row goes with it"
        assert domain(engine, napper) is None
        target.ok("destroy", napper)
    finally:
        target.cleanup()


def test_a_migrating_row_shows_its_progress() -> None:
    progress = {"stage": "copying", "round": 2, "sent_bytes": 48 << 20, "total_bytes": 64 << 20, "pages_left": 10}
    summary = DomainSummary(name="m", domid=1, state="running", migration=progress)
    assert migration_text(progress) == "⇄ r2 75%"
    assert row_cells(summary, History(), 1 << 30)["state"] == "⇄ r2 75%"
    assert migration_text({**progress, "stage": "stopped"}) == "⇄ stop&copy"
    assert row_cells(DomainSummary(name="m", domid=1, state="suspended"), History(), 1)["state"].endswith("suspended")
