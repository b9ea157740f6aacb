"""The zygote's rehearsal: one throwaway domain run through a monitor's paths before any fork.

Every monitor is a fork of the zygote, and a page it writes is copied out of
the zygote's memory first. Much of what a new monitor writes is not its own
state but the interpreter's first-use work on shared code: Python 3.11
specialises each function's bytecode in place as it warms up, fills its
type-attribute cache, and the kernel maps in pages of the shared libraries
(pydantic-core, the C extensions) the first time they run. Done once in the
zygote, before the first fork, all of that is inherited instead of redone
and copied by each of a thousand monitors.

So the zygote boots a small domain as a monitor would (config validation,
the build, the boot, the socket, the requests pvd sends a new monitor, the
stats it reports) and throws it away. Nothing of it outlives the rehearsal:
no thread, no socket, no file; only the process's KVM handle, which every
monitor opens anyway (``open_kvm`` keeps one per process). A host where it
cannot run (no KVM) skips it and says why in pvd's log; creates then fail
with their own clear error.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time

from pvtui.daemon import paths
from pvtui.daemon.link import MonitorLink
from pvtui.daemon.monitor import Monitor, MonitorSpec
from pvtui.engine.domain import open_kvm
from pvtui.engine.elf import read_kernel
from pvtui.engine.figures import quick_counters

#: How long the rehearsal domain may take to boot and settle before it is thrown away regardless.
SETTLE_TIMEOUT_S = 2.0
#: The requests pvd sends a monitor it has just started, after subscribing (and the TUI's first look at a domain).
FIRST_REQUESTS = ("hello", "stats", "console", "hypercalls", "history")


def rehearse() -> bool:
    """Run the rehearsal in this (single-threaded) process; False, with the reason on stderr, if it could not.

    Called by the zygote before its first fork. It must leave the process
    single-threaded: a thread left behind would make every later fork unsafe,
    so that is checked, and a failure to get back there ends the zygote.
    """
    try:
        asyncio.run(_rehearse())
        ok = True
    except Exception as exc:  # any failure only costs the warm start, never the zygote
        print(f"pvtui-zygote: no rehearsal ({exc!r}); monitors start cold", file=sys.stderr, flush=True)
        ok = False
    if threading.active_count() != 1:
        raise RuntimeError(f"the rehearsal left {threading.active_count() - 1} threads behind")
    gc.collect()
    return ok


async def _rehearse() -> None:
    from pvtui.guest.build import bundled_kernel

    name = f"zygote-rehearsal-{os.getpid()}"
    spec = MonitorSpec(name, 0, {"name": name, "memory": "16M"}, None, str(bundled_kernel()))
    monitor = Monitor(spec)
    monitor.loop = asyncio.get_running_loop()
    monitor._kvm = open_kvm()
    monitor._kernel_image = read_kernel(spec.kernel)
    domain = monitor.domain = monitor._build(fresh=False)
    server: asyncio.AbstractServer | None = None
    link: MonitorLink | None = None
    try:
        server = await monitor._listen()
        # pvd's own side of a monitor's socket (it subscribes as it connects).
        link = await MonitorLink.connect(paths.monitor_address(name), lambda _event: None, lambda: None, os.getpid())
        await _settle(monitor)
        for op in FIRST_REQUESTS:
            await link.request(op)
        monitor._push("stats", monitor.stats())
        json.dumps(monitor.state_record())
    finally:
        if link is not None:
            link.close()
            deadline = time.monotonic() + 1.0
            while monitor._sinks and time.monotonic() < deadline:  # its serving end sees the close
                await asyncio.sleep(0.001)
        if server is not None:
            server.close()
            await server.wait_closed()
        domain.destroy()


async def _settle(monitor: Monitor) -> None:
    """Wait until the guest has booted and gone idle (its counters stand still), as a new domain does."""
    assert monitor.domain is not None
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last = quick_counters(monitor.domain)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        now = quick_counters(monitor.domain)
        if now == last and monitor.domain.state.value == "blocked":
            return
        last = now
