"""The TUI driven with Pilot against a real pvd and real domains.

Every action is checked in the engine (through the CLI), not only on screen.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from helpers import Engine
from textual.widgets import RichLog, Static, TextArea

from pvtui.ui.app import PvtuiApp
from pvtui.ui.screens.domain import DomainScreen
from pvtui.ui.screens.domains import COLUMNS
from pvtui.ui.screens.editor import EditorScreen
from pvtui.ui.screens.rebalance import RebalanceScreen
from pvtui.ui.table import LiveTable

MIB = 1 << 20


def engine_domain(engine: Engine, name: str) -> dict | None:
    return next((d for d in engine.json("list") if d["name"] == name), None)


async def until(pilot, predicate, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` (plain or async) while the app keeps running."""

    async def check() -> bool:
        value = predicate()
        return bool(await value if asyncio.iscoroutine(value) else value)

    for _ in range(int(timeout / 0.1)):
        if await check():
            return True
        await pilot.pause(0.1)
    return await check()


async def _eq(value, expected) -> bool:
    return (await value) == expected


async def _ne(value, expected) -> bool:
    return (await value) != expected


async def live(name: str) -> dict | None:
    """The engine's view of a domain, asked through a client of its own (not the UI's)."""
    from pvtui.client import Client

    async with await Client.connect(start=False) as client:
        for domain in await client.call("list"):
            if domain["name"] == name:
                return domain
    return None


async def live_value(name: str, *path: str) -> object:
    value = await live(name)
    for key in path:
        if value is None:
            return None
        value = value[key]
    return value


@pytest.fixture
def two_domains(engine: Engine):
    engine.ok(
        "create", engine.define("alpha", "vcpus: 1\nmaxvcpus: 3\nmemory: 128M\nworkload: {type: cpu, duty: 60}\n")
    )
    engine.ok("create", engine.define("beta", "workload: {type: chatty, lines_per_sec: 10}\n"))
    yield ("alpha", "beta")
    for name in ("alpha", "beta"):
        if engine_domain(engine, name):
            engine.ok("destroy", name)


async def start(app: PvtuiApp, pilot, names: tuple[str, ...]) -> None:
    assert await until(pilot, lambda: set(names) <= set(app.domains) and app.host is not None)
    await until(pilot, lambda: app.domains_screen.table.row_count >= len(names))


async def test_domains_view_sorts_and_filters(engine: Engine, two_domains):
    app = PvtuiApp(engine.domains)
    async with app.run_test(size=(120, 30)) as pilot:
        await start(app, pilot, two_domains)

        def alpha_busier() -> bool:  # measured figures for both (two samples each)
            alpha, beta = app.domains["alpha"].cpu_percent, app.domains["beta"].cpu_percent
            return alpha is not None and beta is not None and alpha > beta

        assert await until(pilot, alpha_busier)
        table = app.domains_screen.table
        await pilot.press("3")  # CPU%, descending
        assert table.row_keys[0] == "alpha"
        await pilot.press("1")  # name
        names = table.row_keys
        assert names == sorted(names)
        for _ in range(len(COLUMNS) - 1):  # < walks left through every column, wrapping round
            await pilot.press("less_than_sign")
        assert app.domains_screen.sort_column == COLUMNS[1][0]
        await pilot.press("1")
        header = table.render_line(0).text
        await pilot.click("#domains", offset=(header.index("CPU%"), 0))  # a click on a label sorts by it
        assert app.domains_screen.sort_column == "cpu_pct" and "CPU%▼" in table.render_line(0).text
        await pilot.press("1")
        await pilot.press("slash", *"bet", "enter")
        assert table.row_keys == ["beta"]
        await pilot.press("escape")
        assert table.row_count >= 2
        assert "domains:" in str(app.domains_screen.query_one("#host", Static).render())


async def test_domain_view_vcpus_log_rates_console(engine: Engine, two_domains):
    app = PvtuiApp(engine.domains)
    async with app.run_test(size=(120, 36)) as pilot:
        await start(app, pilot, two_domains)
        app.domains_screen.table.move_cursor(app.domains_screen.table.get_row_index("beta"))
        await pilot.press("enter")
        assert await until(pilot, lambda: isinstance(app.screen, DomainScreen))
        screen = app.screen
        records = screen.query_one("#records", LiveTable)
        assert await until(
            pilot, lambda: records.row_count > 5 and screen.query_one("#vcpus", LiveTable).row_count == 1
        )
        await pilot.press("slash", *"op:console_io", "enter")
        assert await until(pilot, lambda: records.row_count > 0)
        ops = {records.get_cell(key, "op") for key in records.row_keys}
        assert ops == {"console_io"}
        await pilot.press("f")
        assert "paused" in str(screen.query_one("#logstatus", Static).render())
        await pilot.press("t")
        assert await until(pilot, lambda: screen.query_one("#rates", LiveTable).row_count >= 3)
        await pilot.press("c")
        console = screen.query_one("#console", RichLog)
        assert await until(pilot, lambda: any("chatty" in str(line.text) for line in console.lines))
        await pilot.press("escape")  # home again, the cursor still on beta
        home = app.domains_screen
        assert await until(pilot, lambda: app.screen is home)
        assert home.table.cursor_key == "beta"
        home.table.move_cursor(home.table.get_row_index("alpha"))
        await pilot.press("enter")  # the same built screen, now alpha's, nothing of beta's left
        assert await until(pilot, lambda: app.screen is screen and "alpha" in str(screen.query_one("#title").render()))
        assert await until(pilot, lambda: records.row_count > 0)
        assert screen.query_one("#tabs").current == "log" and "following" in str(
            screen.query_one("#logstatus").render()
        )
        # The view skips Textual's restyle on reopening, but not after a theme change.
        dark_background = screen.query_one("#records").styles.background
        await pilot.press("escape")
        app.theme = "textual-light" if app.theme != "textual-light" else "textual-dark"
        await pilot.pause()
        await pilot.press("enter")
        assert await until(pilot, lambda: app.screen is screen)
        assert screen.query_one("#records").styles.background != dark_background


async def test_actions_reach_the_engine(engine: Engine, two_domains):
    app = PvtuiApp(engine.domains)
    async with app.run_test(size=(120, 30)) as pilot:
        await start(app, pilot, two_domains)
        table = app.domains_screen.table
        table.move_cursor(table.get_row_index("alpha"))
        await pilot.press("p")
        assert await until(pilot, lambda: _eq(live_value("alpha", "state"), "paused"))
        await pilot.press("p")
        assert await until(pilot, lambda: _ne(live_value("alpha", "state"), "paused"))
        await pilot.press("plus")
        assert await until(pilot, lambda: _eq(live_value("alpha", "vcpus_online"), 2))
        await pilot.press("right_square_bracket")
        assert await until(pilot, lambda: _eq(live_value("alpha", "memory", "target_bytes"), 128 * MIB))
        await pilot.press("left_square_bracket")
        assert await until(pilot, lambda: _eq(live_value("alpha", "memory", "target_bytes"), 64 * MIB))
        await pilot.press("v")
        dialog = app.screen
        field = dialog.query_one("#value")
        field.value = "9"
        assert await until(pilot, lambda: "must be 1 to 3" in str(dialog.query_one("#hint", Static).render()))
        sent: list[tuple[str, dict]] = []
        call = app.client.call

        async def recording_call(op: str, **args):
            sent.append((op, args))
            return await call(op, **args)

        app.client.call = recording_call  # type: ignore[method-assign]
        await pilot.press("enter")  # refused by the dialog itself: nothing is sent
        await pilot.pause(0.3)
        assert app.screen is dialog, "the dialog stays open on a value it refuses"
        assert not [op for op, _ in sent if op == "vcpu_set"], "nothing is sent for a refused value"
        assert await live_value("alpha", "vcpus_online") == 2
        field.value = "3"
        await pilot.press("enter")
        assert await until(pilot, lambda: _eq(live_value("alpha", "vcpus_online"), 3))
        assert ("vcpu_set", {"name": "alpha", "count": 3}) in sent
        # A refusal is shown, nothing freezes: beta has maxvcpus 1.
        table.move_cursor(table.get_row_index("beta"))
        await pilot.press("plus")

        def refusal_shown() -> bool:  # Textual keeps the notifications on screen in App._notifications
            return any(n.severity == "error" and "maxvcpus" in n.message for n in app._notifications)

        assert await until(pilot, refusal_shown), "the engine's refusal reaches the operator"
        assert await live_value("beta", "vcpus_online") == 1
        await pilot.press("up")  # and the UI still answers keys
        assert table.cursor_key == "alpha"
        await pilot.press("down")
        assert table.cursor_key == "beta"
        await pilot.press("D", "y")
        assert await until(pilot, lambda: _eq(live("beta"), None))


async def test_editor_validates_saves_atomically_and_applies_live(engine: Engine, two_domains):
    path = Path(engine.domains / "alpha.yaml")
    original = path.read_text()
    app = PvtuiApp(engine.domains)
    async with app.run_test(size=(120, 30)) as pilot:
        await start(app, pilot, two_domains)
        table = app.domains_screen.table
        table.move_cursor(table.get_row_index("alpha"))
        await pilot.press("e")
        assert await until(pilot, lambda: isinstance(app.screen, EditorScreen))
        editor = app.screen.query_one("#yaml", TextArea)
        editor.text = original.replace("vcpus: 1\n", "vcpus: 1\nvcpu: 2\n")
        await pilot.pause(0.2)
        problems = str(app.screen.query_one("#problems", Static).render())
        assert "alpha.yaml:3:1: unknown key 'vcpu'; did you mean 'vcpus'?" in problems
        await pilot.press("ctrl+s")
        assert path.read_text() == original, "an invalid definition is never written"
        edited = original.replace("vcpus: 1\n", "vcpus: 2\ncpu_weight: 512\n").replace("duty: 60", "duty: 30")
        editor.text = edited
        await pilot.pause(0.2)
        await pilot.press("ctrl+s")
        assert path.read_text() == edited
        assert await until(pilot, lambda: _eq(live_value("alpha", "vcpus_online"), 2))
        assert await until(pilot, lambda: _eq(live_value("alpha", "weight"), 512))
        assert not list(engine.domains.glob(".alpha.yaml.*")), "no temporary file left behind"
        path.write_text(original)


async def test_new_domain_from_template_and_create(engine: Engine):
    app = PvtuiApp(engine.domains)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.host is not None)
        await pilot.press("n", *"fresh", "enter")
        assert await until(pilot, lambda: isinstance(app.screen, EditorScreen))
        await pilot.press("ctrl+s")
        assert (engine.domains / "fresh.yaml").exists()
        await pilot.press("escape", "c")
        await pilot.pause(0.3)
        options = app.screen.query_one("#options")
        index = app.screen.options.index("fresh.yaml")
        options.highlighted = index
        await pilot.press("enter")
        assert await until(pilot, lambda: _ne(live("fresh"), None))
    engine.ok("destroy", "fresh")
    (engine.domains / "fresh.yaml").unlink()


async def test_rebalance_plans_shrinks_first_and_applies(engine: Engine, two_domains):
    app = PvtuiApp(engine.domains)
    async with app.run_test(size=(120, 30)) as pilot:
        await start(app, pilot, two_domains)
        engine.ok("vcpu-set", "alpha", "3")
        await app.reload()
        await pilot.press("b")
        assert await until(pilot, lambda: isinstance(app.screen, RebalanceScreen))
        screen = app.screen
        table = screen.query_one("#alloc", LiveTable)
        table.move_cursor(table.get_row_index("alpha"))
        await pilot.press("minus", "left_square_bracket")
        plan = screen.plan()
        assert [s.describe() for s in plan.steps] == ["alpha: memory 128 MiB -> 64 MiB", "alpha: vCPUs 3 -> 2"]
        assert "donors first: alpha" in str(screen.query_one("#plan", Static).render())
        await pilot.press("a")
        assert await until(pilot, lambda: _eq(live_value("alpha", "vcpus_online"), 2))
        assert await live_value("alpha", "memory", "target_bytes") == 64 * MIB


async def test_command_palette_offers_every_action(engine: Engine, two_domains):
    app = PvtuiApp(engine.domains)
    async with app.run_test(size=(120, 30)) as pilot:
        await start(app, pilot, two_domains)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {"Rebalance", "Destroy domain", "Set vCPUs", "Edit definition", "Pin a vCPU", "Weight and cap"} <= titles
        await pilot.press("ctrl+p", *"Rebalance")
        await pilot.pause(0.6)
        await pilot.press("enter")
        assert await until(pilot, lambda: isinstance(app.screen, RebalanceScreen))


def test_ui_survives_80x24(engine: Engine, two_domains):
    """At 80x24 every screen still shows its essentials: rows, the domain view's figures, the help."""

    async def run() -> None:
        app = PvtuiApp(engine.domains)
        async with app.run_test(size=(80, 24)) as pilot:
            await start(app, pilot, two_domains)
            table = app.domains_screen.table
            assert {"alpha", "beta"} <= set(table.row_keys)
            assert "NAME" in table.render_line(0).text and "alpha" in "".join(
                table.render_line(y).text for y in range(1, 4)
            )
            table.move_cursor(table.get_row_index("alpha"))
            await pilot.press("enter")
            assert await until(pilot, lambda: isinstance(app.screen, DomainScreen))
            view = app.screen
            assert await until(pilot, lambda: "domid" in str(view.query_one("#title").render()))
            assert view.query_one("#vcpus", LiveTable).row_count == 1
            assert view.query_one("#vcpus").region.height > 0 and view.query_one("#records").region.height > 0
            await pilot.press("question_mark")
            assert await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
            await pilot.press("escape")
            assert await until(pilot, lambda: app.screen is view)

    asyncio.run(run())


def test_rebalance_rollback_on_a_failed_step(engine: Engine):
    """A plan whose second step fails undoes the first, on the real engine."""
    from pvtui.client import Client
    from pvtui.rebalance import Allocation, Limits, apply_plan, make_plan

    engine.ok("create", engine.define("donor", "vcpus: 2\nmaxvcpus: 2\nmemory: 128M\n"))
    engine.ok("create", engine.define("taker", "vcpus: 1\nmaxvcpus: 2\n"))

    async def run() -> None:
        client = await Client.connect(start=False)
        current = {"donor": Allocation(2, 128 * MIB), "taker": Allocation(1, 64 * MIB)}
        wanted = {"donor": Allocation(1, 128 * MIB), "taker": Allocation(2, 64 * MIB)}
        limits = {n: Limits(2, 16 * MIB, 128 * MIB, 0.0, 0) for n in current}
        plan = make_plan(current, wanted, limits, 1 << 40, 2)
        assert [s.domain for s in plan.steps] == ["donor", "taker"]  # donors shrink first
        engine.ok("destroy", "taker")  # the receiver vanishes before its step

        async def apply(step, value):
            if step.resource == "vcpus":
                return await client.vcpu_set(step.domain, value)
            return await client.mem_set(step.domain, value)

        outcome = await apply_plan(plan, apply)
        await client.close()
        assert outcome.failed is not None and outcome.failed.domain == "taker"
        assert outcome.rolled_back and "No domain named taker" in (outcome.error or "")

    asyncio.run(run())
    assert engine_domain(engine, "donor")["vcpus_online"] == 2
    engine.ok("destroy", "donor")


def test_json_list_matches_screen_columns(engine: Engine, two_domains):
    """``pvtui list --json`` and the domains table show the same figures for the same domain."""
    listed = {d["name"]: d for d in json.loads(engine.ok("list", "--json"))}
    assert {"name", "state", "cpu_percent", "engine_cpu_percent", "vcpus_online", "memory"} <= set(listed["alpha"])

    async def run() -> dict[str, dict[str, str]]:
        app = PvtuiApp(engine.domains)
        async with app.run_test(size=(160, 30)) as pilot:
            await start(app, pilot, two_domains)
            table = app.domains_screen.table
            keys = [key for key, _ in COLUMNS]
            return {name: {key: table.get_cell(name, key).strip() for key in keys} for name in two_domains}

    shown = asyncio.run(run())
    for name in two_domains:
        d, row = listed[name], shown[name]
        assert row["name"] == name and row["id"] == str(d["domid"])
        live = ("running", "blocked")  # a guest flips between them by itself: either is this domain's state
        assert row["state"].split()[-1] in live if d["state"] in live else row["state"].endswith(d["state"])
        assert row["vcpus"] == f"{d['vcpus_online']}/{d['vcpus_max']}"
        assert row["mem"] == f"{d['memory']['held_bytes'] >> 20}M"
        assert row["maxmem"] == f"{d['memory']['max_bytes'] >> 20}M"


async def test_full_garbage_collections_run_on_a_clock_and_end_with_the_app(engine: Engine, two_domains, monkeypatch):
    """Not when a burst of rendering trips them (an open of a domain view): on a clock; and the
    collector works as before once the app is gone."""
    import gc

    from pvtui.ui import engine_link

    monkeypatch.setattr(engine_link, "FULL_COLLECTION_S", 0.2)
    before = gc.get_threshold()
    full_collections: list[int] = []

    def seen(phase: str, info: dict) -> None:
        if phase == "stop" and info["generation"] == 2:
            full_collections.append(1)

    app = PvtuiApp(engine.domains)
    gc.callbacks.append(seen)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await start(app, pilot, two_domains)
            assert await until(pilot, lambda: gc.get_threshold()[2] == engine_link.NEVER_BY_COUNT)
            full_collections.clear()
            await pilot.pause(1.0)
            assert len(full_collections) >= 3, "about five in a second at 0.2 s"
        assert gc.get_threshold() == before
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*before)
