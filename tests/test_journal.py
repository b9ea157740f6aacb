"""pvd's journal through the real CLI: what happened, with the cause, across a pvd restart."""

from __future__ import annotations

import json
import os
import signal
import time

from helpers import Engine, wait_until

from pvtui.cli.events import parse_since


def entries(engine: Engine, *args: str) -> list[dict]:
    return [json.loads(line) for line in engine.ok("events", *args, "--json").splitlines()]


def test_the_journal_says_what_happened_and_survives_a_pvd_restart(engine: Engine) -> None:
    engine.ok("create", engine.define("diary", "memory: 32M\nvcpus: 1\nmaxvcpus: 2\non_crash: destroy\n"))
    engine.ok("pause", "diary")
    engine.ok("unpause", "diary")
    engine.ok("vcpu-set", "diary", "2")
    refused = engine.cli("vcpu-set", "diary", "9")
    assert refused.returncode != 0
    whats = [e["what"] for e in entries(engine, "diary")]
    for expected in ("request:create", "request:pause", "request:unpause", "request:vcpu_set", "refused:vcpu_set"):
        assert expected in whats, whats
    refusal = next(e for e in entries(engine, "diary") if e["what"] == "refused:vcpu_set")
    assert refusal["count"] == 9 and "maxvcpus" in refusal["message"]
    # kill -9 of its monitor: the journal says so, with the cause.
    pid = engine.monitor_pids()["diary"]
    os.kill(pid, signal.SIGKILL)
    killed = f"monitor process {pid} killed"
    assert wait_until(lambda: any(killed in str(e.get("crash_reason")) for e in entries(engine, "diary")), 10)
    assert "monitor process" in engine.ok("events", "diary") and "killed" in engine.ok("events", "diary")
    # pvd restarts; the journal is still there and goes on.
    engine.ok("engine", "stop")
    assert wait_until(lambda: engine.cli("list").returncode != 0, 10)
    engine.ok("engine", "start")
    assert any(e["what"] == "request:create" for e in entries(engine, "diary"))
    text = engine.ok("events", "diary", "--since", "10m")
    assert "diary" in text and "request:pause" in text
    assert entries(engine, "diary", "--since", "0s") == []  # nothing since now


def test_since_takes_ago_and_clock_times() -> None:
    now = time.time()
    assert abs(parse_since("10m") - (now - 600)) < 2
    assert abs(parse_since("2h") - (now - 7200)) < 2
    assert parse_since("2026-01-02 03:04") < now
    assert parse_since("00:00") <= now


async def test_events_pane_and_a_crashed_row_say_what_happened(engine: Engine) -> None:
    """Home: every domain's events; the domain view (j): its own; a monitor killed -9: the row says so."""
    from test_ui import start, until

    from pvtui.ui.app import PvtuiApp
    from pvtui.ui.events_pane import EventsTable
    from pvtui.ui.screens.domain import DomainScreen

    engine.ok("create", engine.define("noted", "memory: 32M\non_crash: preserve\n"))
    engine.ok("create", engine.define("other", "memory: 32M\n"))
    app = PvtuiApp(engine.domains)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await start(app, pilot, ("noted", "other"))
            pane = app.domains_screen.query_one("#events", EventsTable)
            assert not pane.has_class("hidden"), "a tall terminal shows the pane at start"

            def pane_has(what: str, domain: str) -> bool:
                return any(row[1] == domain and row[2] == what for row in (pane.get_row(k) for k in pane.row_keys))

            assert await until(pilot, lambda: pane_has("request:create", "other"))
            engine.ok("pause", "noted")  # a change made elsewhere arrives as it happens
            assert await until(pilot, lambda: pane_has("request:pause", "noted"))
            engine.ok("unpause", "noted")
            pid = engine.monitor_pids()["noted"]
            os.kill(pid, signal.SIGKILL)
            table = app.domains_screen.table
            assert await until(
                pilot, lambda: "noted" in table.row_keys and "monitor killed" in table.get_cell("noted", "state")
            )
            assert await until(pilot, lambda: any("killed" in pane.get_row(k)[3] for k in pane.row_keys))
            await pilot.press("j")
            assert pane.has_class("hidden")
            # The domain view's events tab: this domain's only.
            table.move_cursor(table.get_row_index("other"))
            await pilot.press("enter")
            assert await until(pilot, lambda: isinstance(app.screen, DomainScreen))
            await pilot.press("j")
            events = app.screen.query_one("#events", EventsTable)
            assert await until(pilot, lambda: events.row_count > 0 and events.region.height > 0)
            whats = [events.get_row(k)[1] for k in events.row_keys]
            assert "request:create" in whats and "request:pause" not in whats, whats
    finally:
        engine.cli("destroy", "noted")
        engine.cli("destroy", "other")
