"""A thousand idle domains on one host: what they cost, how fast they come, how the tools keep up.

    python bench/density.py [--json] [--quick]     # --quick: 100 domains

Part of ``bench/daemon.py`` (its 1,000-domain keys), runnable alone. A
private pvd; ``COUNT`` idle 16 MiB domains created through the client, four
requests in flight; then, with all of them running:

- create_per_s: domains created per second, first request to last reply;
- density_1000_list_ms_p95: ``Client.list_domains()``;
- idle_1000_total_cpu_percent: pvd plus every monitor (every thread), over 10 s, % of one core;
- idle_overhead_percent_per_domain_1000: the same per domain;
- tui_cpu_percent_1000: the real ``pvtui`` in tmux over 10 s after a warm-up;
- key_to_screen_ms_p95_1000 and open_domain_view_ms_p95_1000: as bench/tui.py measures them;
- engine_stop_destroy_s: ``engine stop --destroy-domains`` with all of them running, request to reply.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _common import REPO, cpu_seconds, percentile, report

COUNT = 1000
IN_FLIGHT = 4
MEMORY = "16M"
CPU_WINDOW_S = 10.0
#: Prefetched opens of a domain view timed (of ten, the p95 was the slowest one: the first).
OPENS = 30


async def create_all(client, domains: Path, count: int) -> tuple[float, list[int]]:
    """``count`` idle domains, ``IN_FLIGHT`` requests at once; (domains per second, monitor pids)."""
    for i in range(count):
        (domains / f"idle{i:04d}.yaml").write_text(f"name: idle{i:04d}\nmemory: {MEMORY}\n")
    gate = asyncio.Semaphore(IN_FLIGHT)
    pids: list[int] = []

    async def one(i: int) -> None:
        async with gate:
            summary = await client.create(domains / f"idle{i:04d}.yaml")
            pids.append(summary.pid)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - start), pids


def foreign_monitors() -> int:
    """Monitors already running on this host (of any pvd): they outlive their pvd by design, and a
    thousand left by an interrupted run cost the host more than everything measured here."""
    return sum(1 for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("pvtui-monitor"))


async def measure(count: int, tui: bool) -> list[tuple[str, float | None, str, str]]:
    from pvtui.client import Client, EngineError

    others = foreign_monitors()
    if others:
        print(
            f"note: {others} pvtui monitors of another pvd are running; they load the host and skew these "
            "figures (pvtui engine stop --destroy-domains with their PVTUI_RUNTIME_DIR, or pkill -f pvtui-monitor)",
            file=sys.stderr,
        )

    with tempfile.TemporaryDirectory(prefix="pvtui-density-") as tmp:
        runtime, domains = Path(tmp) / "run", Path(tmp) / "domains"
        domains.mkdir()
        os.environ.update(PVTUI_RUNTIME_DIR=str(runtime), PVTUI_DOMAINS_DIR=str(domains))
        client = await Client.connect(start=True, domains_dir=domains)
        try:
            per_s, pids = await create_all(client, domains, count)
            await asyncio.sleep(5.0)  # every guest booted and blocked; reports settle
            times = []
            for _ in range(50):
                start = time.perf_counter()
                await client.list_domains()
                times.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.05)
            pvd = (await client.hello()).pid
            every = [pvd, *pids]
            await client.close()  # the measuring client's own requests are not charged
            before, start = sum(cpu_seconds(p) for p in every), time.monotonic()
            await asyncio.sleep(CPU_WINDOW_S)
            total = (sum(cpu_seconds(p) for p in every) - before) / (time.monotonic() - start) * 100
            rows = [
                ("create_per_s", per_s, "/s", ">= 50"),
                ("density_1000_list_ms_p95", percentile(times, 95), "ms", "<= 50"),
                ("idle_1000_total_cpu_percent", total, "%", "<= 10 (pvd + every monitor, % of one core)"),
                ("idle_overhead_percent_per_domain_1000", total / count, "%", "<= 0.01"),
            ]
            if tui:
                rows += tui_figures(runtime, domains, count)
            client = await Client.connect(start=False)
            start = time.perf_counter()
            await client.engine_stop(destroy_domains=True)
            stop_s = time.perf_counter() - start
            rows.append(("engine_stop_destroy_s", stop_s, "s", ""))
            return rows
        finally:
            with contextlib.suppress(EngineError):  # stopped above unless something failed first
                client = await Client.connect(start=False)
                await client.engine_stop(destroy_domains=True)
            await client.close()


def tui_figures(runtime: Path, domains: Path, count: int) -> list[tuple[str, float | None, str, str]]:
    """The real pvtui in tmux against the loaded engine: its CPU, cursor moves, opening a domain."""
    sys.path.insert(0, str(Path(__file__).parent))
    from tui import cpu_percent_over, end_session, start_pvtui, time_cursor_moves, time_open, wait_for

    if shutil.which("tmux") is None:
        return [("tui_cpu_percent_1000", None, "%", "<= 2 (needs tmux)")]
    session = f"pvtui-density-{os.getpid()}"
    process = start_pvtui(session, runtime, domains)
    try:
        wait_for(session, lambda text: "idle0000" in text, 60)
        time.sleep(15.0)
        cpu = cpu_percent_over(process, CPU_WINDOW_S)
        keys, _lost, row = time_cursor_moves(session, 20, 4)
        opens = []
        for _ in range(OPENS):
            row += 1
            try:
                opens.append(time_open(session, f"idle{row:04d}", prefetched=True, timeout=60))
            except RuntimeError:
                opens.append(60_000.0)  # never within a minute: counted as a minute
    finally:
        end_session(session)
    return [
        ("tui_cpu_percent_1000", cpu, "%", "<= 2"),
        ("key_to_screen_ms_p95_1000", percentile(keys, 95) if keys else None, "ms", "<= 50"),
        ("open_domain_view_ms_p95_1000", percentile(opens, 95), "ms", "<= 50 (prefetched)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="100 domains")
    parser.add_argument("--no-tui", action="store_true")
    args = parser.parse_args()
    count = 100 if args.quick else COUNT
    report(f"{count} idle domains", asyncio.run(measure(count, not args.no_tui)), args.json)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
