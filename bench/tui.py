"""TUI benchmarks with 100 idle domains and pvd's 1 Hz updates.

    python bench/tui.py [--json] [--quick]

- tui_cpu_percent: the real ``pvtui`` (in tmux) CPU over 60 s after a 15 s warm-up, psutil.
- table_update_ms_p95: the domains table's update (DomainsScreen._render_rows)
  plus the frame that paints it, timed inside an app connected to the same engine.
- key_to_screen_ms_p95 (40 cursor moves), open_domain_view_ms_p95 (40 opens, until
  the view shows the figures pvd sent): from tmux send-keys to the changed screen read back
  with capture-pane, for cursor moves and for opening the domain view.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _common import REPO, percentile, report

COUNT = 100
#: Startup (imports, first layout, the sparklines' first ten samples) is not steady state.
WARM_UP_S = 15.0


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-e", "-p", "-t", session)


def wait_for(session: str, predicate, timeout: float = 30.0) -> float:
    """Poll the pane until predicate(text) holds; returns the time it held."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate(screen(session)):
            return time.perf_counter()
        time.sleep(0.002)
    raise RuntimeError("screen never changed as expected")


async def populate(domains: Path) -> None:
    from pvtui.client import Client

    client = await Client.connect(start=True, domains_dir=domains)
    for i in range(COUNT):
        path = domains / f"idle{i:03d}.yaml"
        path.write_text(f"name: idle{i:03d}\nmemory: 32M\n")
        await client.create(path)
    await client.close()


async def table_update_times(domains: Path, seconds: float) -> list[float]:
    """Each update of the domains table: new figures into rows, then the frame that paints them."""
    from textual.screen import Screen

    from pvtui.ui.app import PvtuiApp
    from pvtui.ui.screens.domains import DomainsScreen

    times: list[float] = []
    painting = [False]
    render_rows, compositor_refresh = DomainsScreen._render_rows, Screen._compositor_refresh

    def timed_rows(self: DomainsScreen) -> None:
        start = time.perf_counter()
        render_rows(self)
        times.append((time.perf_counter() - start) * 1000)
        painting[0] = True

    def timed_paint(self: Screen) -> None:
        start = time.perf_counter()
        compositor_refresh(self)
        if painting[0] and isinstance(self, DomainsScreen):
            times[-1] += (time.perf_counter() - start) * 1000
            painting[0] = False

    DomainsScreen._render_rows = timed_rows  # type: ignore[method-assign]
    Screen._compositor_refresh = timed_paint  # type: ignore[method-assign]
    try:
        app = PvtuiApp(domains)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(seconds)
    finally:
        DomainsScreen._render_rows = render_rows  # type: ignore[method-assign]
        Screen._compositor_refresh = compositor_refresh  # type: ignore[method-assign]
    return times[2:]  # the first renders build the table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("bench/tui.py needs tmux: apt-get install -y tmux")
    cpu_window = 10.0 if args.quick else 60.0
    with tempfile.TemporaryDirectory(prefix="pvtui-tui-bench-") as tmp:
        runtime, domains = Path(tmp) / "run", Path(tmp) / "domains"
        domains.mkdir()
        os.environ.update(PVTUI_RUNTIME_DIR=str(runtime), PVTUI_DOMAINS_DIR=str(domains))
        session = f"pvtui-bench-{os.getpid()}"
        try:
            asyncio.run(populate(domains))
            env = f"PVTUI_RUNTIME_DIR={runtime} PVTUI_DOMAINS_DIR={domains} PYTHONPATH={REPO} TERM=xterm-256color"
            tmux(
                "new-session", "-d", "-s", session, "-x", "120", "-y", "40", f"exec env {env} {sys.executable} -m pvtui"
            )
            wait_for(session, lambda text: "idle099" in text or "idle010" in text)
            time.sleep(WARM_UP_S)
            process = psutil.Process(int(tmux("display", "-p", "-t", session, "#{pane_pid}").strip()))
            before = process.cpu_times()
            time.sleep(cpu_window)
            after = process.cpu_times()
            cpu_percent = ((after.user - before.user) + (after.system - before.system)) / cpu_window * 100

            keys: list[float] = []
            for _ in range(10 if args.quick else 40):
                old = screen(session)
                start = time.perf_counter()
                tmux("send-keys", "-t", session, "Down")
                keys.append((wait_for(session, lambda text, old=old: text != old, 5) - start) * 1000)
                time.sleep(0.05)
            opens: list[float] = []
            for _ in range(3 if args.quick else 40):
                start = time.perf_counter()
                tmux("send-keys", "-t", session, "Enter")
                # The view with its figures (domid comes from pvd), not only its frame.
                opens.append(
                    (wait_for(session, lambda text: "Hypercall log" in text and "domid" in text, 10) - start) * 1000
                )
                tmux("send-keys", "-t", session, "Escape")
                wait_for(session, lambda text: "Hypercall log" not in text, 10)
                time.sleep(0.3)
            tmux("send-keys", "-t", session, "q")
            updates = asyncio.run(table_update_times(domains, 5.0 if args.quick else 20.0))
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)

            async def stop() -> None:
                from pvtui.client import Client

                client = await Client.connect(start=False)
                await client.engine_stop(destroy_domains=True)
                await client.close()

            asyncio.run(stop())
    rows = [
        ("tui_cpu_percent", cpu_percent, "%", "<= 2"),
        ("table_update_ms_p95", percentile(updates, 95), "ms", "<= 16"),
        ("key_to_screen_ms_p95", percentile(keys, 95), "ms", "<= 50 (cursor move)"),
        ("open_domain_view_ms_p95", percentile(opens, 95), "ms", "<= 50"),
    ]
    report(f"pvtui TUI benchmarks ({COUNT} idle domains)", rows, args.json)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
