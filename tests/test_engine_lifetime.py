"""One engine per runtime directory, and stops that stick.

A stopped pvd stays stopped: read-only verbs and the TUI say so instead of
starting it again; a pvd whose runtime directory vanishes puts it back with
its domains reachable, and no second pvd can start beside it meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import REPO, Engine, wait_until
from textual.widgets import Static

from pvtui.client import Client
from pvtui.daemon.paths import instance_lock_path
from pvtui.ui.app import PvtuiApp


@pytest.fixture
def private_engine(kvm_available: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A pvd of this test's own (not started): tests here stop and lose it."""
    eng = Engine(tmp_path / "run", tmp_path / "domains")
    eng.domains.mkdir()
    for key, value in eng.env.items():
        monkeypatch.setenv(key, value)  # for the in-process client (the TUI)
    try:
        yield eng
    finally:
        eng.cleanup()


def _pvd_running(engine: Engine) -> bool:
    pid = engine.pvd_pid()
    return pid is not None and psutil.pid_exists(pid) and (engine.runtime / "pvd.sock").exists()


@pytest.mark.parametrize("verb", [["list"], ["top", "-b"], ["vcpu-list"], ["log", "x"], ["console", "x", "-n"]])
def test_read_only_verbs_never_start_pvd(private_engine: Engine, verb: list[str]):
    result = private_engine.cli(*verb)
    assert result.returncode == 3
    assert "pvd is not running" in result.stderr and "pvtui engine start" in result.stderr
    assert not (private_engine.runtime / "pvd.sock").exists()


def test_engine_status_and_destroy_do_not_start_pvd_but_create_does(private_engine: Engine):
    status = private_engine.cli("engine", "status")
    assert status.returncode == 3 and "pvd is not running" in status.stdout
    assert private_engine.cli("destroy", "nothing").returncode == 3
    assert not (private_engine.runtime / "pvd.sock").exists()
    private_engine.ok("create", private_engine.define("first", "memory: 32M\n"))
    assert _pvd_running(private_engine)


async def test_the_tui_does_not_restart_a_stopped_engine(private_engine: Engine):
    private_engine.ok("engine", "start")
    app = PvtuiApp(private_engine.domains)
    async with app.run_test(size=(120, 30)) as pilot:
        host_line = app.domains_screen.query_one("#host", Static)

        async def shows(text: str, timeout: float = 10.0) -> bool:
            for _ in range(int(timeout / 0.1)):
                if text in str(host_line.render()):
                    return True
                await pilot.pause(0.1)
            return False

        assert await shows("committed")
        stopped = subprocess.run(
            [sys.executable, "-m", "pvtui", "engine", "stop"],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
        )
        assert stopped.returncode == 0, stopped.stderr
        assert await shows("pvd is not running: press S")
        await pilot.pause(3.0)  # longer than the TUI's reconnect interval
        assert not _pvd_running(private_engine), "the TUI started pvd again by itself"
        await pilot.press("S")
        assert await shows("committed")
        assert _pvd_running(private_engine)


def test_a_vanished_runtime_dir_is_put_back_and_no_second_pvd_starts(private_engine: Engine):
    private_engine.ok("create", private_engine.define("keeper", "memory: 32M\n"))
    pvd = private_engine.pvd_pid()
    monitor = private_engine.monitor_pids()["keeper"]
    shutil.rmtree(private_engine.runtime)
    # Before pvd notices, a second pvd must not start: the instance lock is elsewhere.
    assert instance_lock_path().exists()
    second = subprocess.run(
        [sys.executable, "-m", "pvtui.daemon"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1 and f"already running (pid {pvd})" in second.stderr
    assert wait_until(lambda: (private_engine.runtime / "domains" / "keeper.json").exists(), timeout=5)
    listed = private_engine.json("list")
    assert [d["name"] for d in listed] == ["keeper"] and listed[0]["pid"] == monitor
    assert private_engine.pvd_pid() == pvd
    # The monitor's files are back too: a pvd restarted now takes its domain back.
    os.kill(pvd, 9)
    wait_until(lambda: not psutil.pid_exists(pvd), timeout=5)
    time.sleep(0.1)
    private_engine.ok("engine", "start")
    again = private_engine.json("list")
    assert [d["name"] for d in again] == ["keeper"] and again[0]["pid"] == monitor


def test_many_domains_are_taken_back_and_destroyed_at_once_and_none_is_lost(private_engine: Engine):
    """Reattaches and destroys overlap: every domain still comes back, then ends, once, with its record."""
    count = 24
    files = [private_engine.define(f"many{i:02d}", "memory: 16M\n") for i in range(count)]
    private_engine.ok("create", files[0])  # starts pvd

    async def create_rest() -> None:
        client = await Client.connect(start=False)
        try:
            await asyncio.gather(*(client.create(path) for path in files[1:]))
        finally:
            await client.close()

    asyncio.run(create_rest())
    pids = private_engine.monitor_pids()
    assert len(pids) == count
    # A new pvd takes them all back (REATTACH_PARALLEL at a time), each with its own monitor.
    before = {row["name"]: row["domid"] for row in private_engine.json("list")}
    private_engine.ok("engine", "stop")
    assert wait_until(lambda: not _pvd_running(private_engine), 10)
    private_engine.ok("engine", "start")
    after = private_engine.json("list")
    assert {row["name"]: row["domid"] for row in after} == before
    assert {row["name"]: row["pid"] for row in after} == pids
    assert "0 domains keep running" in private_engine.ok("engine", "stop", "--destroy-domains")
    assert wait_until(lambda: not any(psutil.pid_exists(pid) for pid in pids.values()), 20), "a monitor outlived it"
    assert not private_engine.monitor_pids(), "a domain's state record was left behind"
    journal = [json.loads(line) for line in (private_engine.runtime / "journal.jsonl").read_text().splitlines()]
    destroyed = [e["domain"] for e in journal if e["what"] == "state:dead" and e["detail"] == "destroyed"]
    assert sorted(destroyed) == sorted(pids), "each domain is destroyed exactly once"
