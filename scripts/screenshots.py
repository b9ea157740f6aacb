"""Regenerate screenshots/*.svg: every screen of the real app on a private engine.

    python scripts/screenshots.py

Starts a pvd of its own (temporary runtime directory) with the sample
domains, lets them run a few seconds so histories fill, then visits each
screen with Textual's Pilot and saves an SVG. Needs /dev/kvm.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "screenshots"
SIZE = (120, 36)


async def capture(domains_dir: Path) -> None:
    from pvtui.client import Client
    from pvtui.ui.app import PvtuiApp

    app = PvtuiApp(domains_dir)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.1)
            if len(app.domains) >= 3 and app.host:
                break
        client = await Client.connect(start=False)
        await client.create(domains_dir / "batch.yaml")
        await client.close()
        await pilot.pause(6.0)
        shots = [
            ("domains", []),
            ("domain", ["down", "down", "enter", "wait"]),
            ("domain-rates", ["t", "wait"]),
            ("domain-console", ["c"]),
            ("domain-events", ["j"]),
            ("domain-history", ["h", "wait"]),
            ("domain-memory-history", ["h"]),
            ("domains-host-history", ["escape", "h"]),
            ("rebalance", ["h", "b", "g"]),
            ("editor", ["escape", "escape", "e"]),
            ("help", ["escape", "question_mark"]),
        ]
        for name, keys in shots:
            for key in keys:
                if key == "wait":
                    await pilot.pause(2.5)
                else:
                    await pilot.press(key)
            await pilot.pause(0.6)
            app.save_screenshot(str(OUT / f"{name}.svg"))
            print(f"screenshots/{name}.svg")
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"vcpu")
        await pilot.pause(0.6)
        app.save_screenshot(str(OUT / "palette.svg"))
        print("screenshots/palette.svg")


async def capture_home(domains_dir: Path, name: str, size: tuple[int, int], theme: str | None = None) -> None:
    """The home screen alone: at 80x24 (the smallest terminal it is laid out for), or in another theme."""
    from pvtui.ui.app import PvtuiApp

    app = PvtuiApp(domains_dir, theme=theme)
    async with app.run_test(size=size) as pilot:
        for _ in range(100):
            await pilot.pause(0.1)
            if len(app.domains) >= 3 and app.host:
                break
        await pilot.pause(2.5)
        app.save_screenshot(str(OUT / f"{name}.svg"))
        print(f"screenshots/{name}.svg")


async def capture_fleet(second: Path) -> None:
    """The fleet view: this pvd, a second one (its own runtime directory), and a host that is gone."""
    from pvtui.client.hosts import HostUri, parse_host_uri
    from pvtui.ui.app import PvtuiApp

    fleet = [
        ("here", HostUri("local")),
        ("there", parse_host_uri(f"unix://{second}/pvd.sock")),
        ("gone", parse_host_uri("unix:///nonexistent/pvd.sock")),
    ]
    app = PvtuiApp(fleet=fleet)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.1)
            links = app.fleet_links
            if all(link.domains for link in links[:2]) and links[2].down_since is not None:
                break
        await pilot.pause(2.5)  # two polls: measured CPU
        app.save_screenshot(str(OUT / "fleet.svg"))
        print("screenshots/fleet.svg")
        await pilot.press("b")  # the rebalance screen's fleet mode: a dry-run plan
        await pilot.pause(0.5)
        app.save_screenshot(str(OUT / "fleet-rebalance.svg"))
        print("screenshots/fleet-rebalance.svg")


def main() -> int:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pvtui-shots-") as tmp:
        runtime, domains = Path(tmp) / "run", Path(tmp) / "domains"
        shutil.copytree(REPO / "domains", domains)
        os.environ.update(PVTUI_RUNTIME_DIR=str(runtime), PVTUI_DOMAINS_DIR=str(domains))
        second = Path(tmp) / "run-b"
        try:
            asyncio.run(capture(domains))
            asyncio.run(capture_home(domains, "domains-80x24", (80, 24)))
            asyncio.run(capture_home(domains, "domains-colour-blind", SIZE, "pvtui-colour-blind"))
            from pvtui.client.connect import start_engine_on
            from pvtui.client.hosts import parse_host_uri

            start_engine_on(parse_host_uri(f"unix://{second}/pvd.sock"))  # autostarts the same samples
            asyncio.run(capture_fleet(second))
        finally:
            from pvtui.client.connect import connect_host
            from pvtui.client.hosts import parse_host_uri

            async def stop_second() -> None:
                if (second / "pvd.sock").exists():
                    client = await connect_host(parse_host_uri(f"unix://{second}/pvd.sock"))
                    await client.engine_stop(destroy_domains=True)
                    await client.close()

            asyncio.run(stop_second())

            async def stop() -> None:
                from pvtui.client import Client

                client = await Client.connect(start=False)
                await client.engine_stop(destroy_domains=True)
                await client.close()

            asyncio.run(stop())
    return 0


if __name__ == "__main__":
    sys.exit(main())
