"""Floods are bounded: a guest printing as fast as it can is rate-limited, and told so."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers import Engine, build_custom_kernel, wait_until

from pvtui.client import Client
from pvtui.domain.model import DomainStats
from pvtui.engine.console import (
    CONSOLE_BURST_BYTES,
    CONSOLE_RATE_BYTES_PER_S,
    DEFAULT_CONSOLE_BYTES,
    ConsoleBuffer,
)

FLOOD = r"""
#include "pv.h"
static char line[4096];
__attribute__((force_align_arg_pointer, noreturn))
void _start(struct pv_start_info *si, unsigned long vcpu)
{
    for (unsigned i = 0; i < sizeof line; i++)
        line[i] = i % 64 == 63 ? '\n' : 'a' + i % 26;
    for (;;)
        pv_hypercall3(__HYPERVISOR_console_io, CONSOLEIO_write, sizeof line, (pv_u64)line);
}
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_console_takes_its_rate_and_burst_then_drops_and_says_so():
    clock = FakeClock()
    console = ConsoleBuffer(limit=1 << 20, rate=1000, burst=4000, clock=clock)
    for _ in range(5):
        console.write(b"x" * 1000)
    assert console.total_bytes == 4000 and console.dropped_bytes == 1000
    clock.now += 0.5  # 500 bytes' worth of tokens: a 1000-byte write still does not fit
    console.write(b"y" * 1000)
    assert console.dropped_bytes == 2000
    clock.now += 2.0
    console.write(b"z" * 100)
    text = console.text()
    assert "[pvtui: 2000 bytes of console output dropped" in text and text.endswith("z" * 100)
    clock.now += 100.0  # tokens never pile up past the burst
    for _ in range(5):
        console.write(b"w" * 1000)
    assert console.dropped_bytes == 3000


def _stats(name: str) -> DomainStats:
    async def ask() -> DomainStats:
        async with await Client.connect(start=False) as client:
            stats = (await client.info(name)).stats
            assert stats is not None
            return stats

    return asyncio.run(ask())


def test_a_guest_flooding_its_console_is_limited_and_its_neighbour_unharmed(engine: Engine, tmp_path: Path):
    kernel = build_custom_kernel(tmp_path, FLOOD)
    engine.ok("create", engine.define("flood", f"kernel: {kernel}\nmemory: 32M\n"))
    engine.ok("create", engine.define("quiet", "memory: 32M\nworkload: {type: chatty, lines_per_sec: 20}\n"))
    assert wait_until(lambda: "bytes of console output dropped" in engine.ok("console", "flood", "-n"), timeout=15)
    stats = _stats("flood")
    assert stats.console_dropped_bytes > 0
    # What the engine took is bounded by the burst plus the rate over the domain's life.
    assert stats.console_bytes <= CONSOLE_BURST_BYTES + CONSOLE_RATE_BYTES_PER_S * (stats.uptime_s + 1) + 4096
    # The kept tail is bounded; what arrives while the pieces of a reply are read comes on top.
    assert len(engine.ok("console", "flood", "-n").encode()) <= DEFAULT_CONSOLE_BYTES + CONSOLE_BURST_BYTES
    quiet_before = _stats("quiet").console_bytes
    assert wait_until(lambda: _stats("quiet").console_bytes > quiet_before + 100)  # the neighbour still prints
    for name in ("flood", "quiet"):
        engine.ok("destroy", name)
