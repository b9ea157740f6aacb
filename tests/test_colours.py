"""Colour that means something: the CLI's on a terminal only, NO_COLOR honoured; the TUI's tones per theme."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO, Engine
from snapshot_app import DomainsSnapshotApp

from pvtui.levels import cpu_tone, mem_tone
from pvtui.ui.tones import STATES, tone_colours


def _on_a_terminal(engine: Engine, *args: str, no_color: str | None = None) -> str:
    """Run the real CLI with stdout on a pseudo-terminal; what it wrote."""
    leader, follower = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), **engine.env}
    env.pop("NO_COLOR", None)
    if no_color is not None:
        env["NO_COLOR"] = no_color
    result = subprocess.run([sys.executable, "-m", "pvtui", *args], stdout=follower, env=env, timeout=60, cwd=REPO)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert result.returncode == 0
    return b"".join(chunks).decode()


def test_list_is_coloured_on_a_terminal_only(engine: Engine) -> None:
    engine.ok("create", engine.define("tint", "memory: 32M\n"))
    engine.ok("pause", "tint")
    try:
        coloured = _on_a_terminal(engine, "list")
        assert "\x1b[33;1m--p---" in coloured, repr(coloured)  # paused: its own colour and weight
        assert "\x1b[" not in _on_a_terminal(engine, "list", no_color="1")
        assert "\x1b[" not in engine.ok("list"), "a pipe gets plain text"
        assert "\x1b[" in _on_a_terminal(engine, "list", no_color=""), "an empty NO_COLOR asks for nothing"
    finally:
        engine.ok("destroy", "tint")


def test_every_state_has_its_own_colour_in_every_theme() -> None:
    app = DomainsSnapshotApp()
    for name, theme in app.available_themes.items():
        colours = tone_colours(theme)
        distinct = {(c.rgb, c.ansi) for state, c in colours.items() if state in STATES}
        assert len(distinct) == len(STATES), f"{name}: two states share a colour"


def test_levels_have_documented_thresholds() -> None:
    assert cpu_tone(None, 1) is None and cpu_tone(50.0, 1) is None
    assert cpu_tone(120.0, 2) == "warn" and cpu_tone(90.0, 1) == "high"
    assert mem_tone(0.1) is None and mem_tone(0.3) == "warn" and mem_tone(0.6) == "high"


async def test_no_color_draws_the_tui_in_monochrome(monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = DomainsSnapshotApp()
    async with app.run_test(size=(120, 16)) as pilot:
        await pilot.pause(0.2)
        assert app.no_color
        screenshot = app.export_screenshot()
        assert "#4ebf71" not in screenshot.lower(), "running's green is not drawn"
