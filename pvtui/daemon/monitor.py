"""A domain monitor: the process that runs one domain for pvd.

One monitor per domain, so a domain's crash (or a kill -9 of its monitor)
touches no other. The monitor owns the :class:`~pvtui.engine.domain.Domain`,
serves pvd on its own socket (:func:`~pvtui.daemon.paths.monitor_address`, same protocol), pushes
state, console and lifecycle events to the connection that subscribed, and
applies ``on_poweroff`` / ``on_reboot`` / ``on_crash`` itself (a restart
rebuilds the VM inside this process). Its state file (``NAME.json``) lets a
restarted pvd find and reattach it. Started by a root pvd, it gives up root
once the domain is built (:mod:`pvtui.daemon.privileges`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pvtui.daemon import paths, protocol
from pvtui.daemon.history import CounterHistory
from pvtui.daemon.jobs import JobServer
from pvtui.daemon.migration_jobs import MigrationJobs
from pvtui.daemon.ops import MONITOR_OPS
from pvtui.daemon.privileges import drop_to_own_id, peer_credentials
from pvtui.daemon.protocol import ProtocolError
from pvtui.daemon.serve import serve_requests
from pvtui.domain.limits import SHUTDOWN_TIMEOUT_S
from pvtui.domain.schema import DomainConfig
from pvtui.engine.abi import ShutdownReason
from pvtui.engine.domain import Domain, DomainEvent, open_kvm
from pvtui.engine.elf import read_kernel
from pvtui.engine.figures import quick_counters
from pvtui.engine.kvm import Kvm
from pvtui.engine.lifecycle import RestartGuard, action_for
from pvtui.engine.snapshot.image import build_for_restore, snapshot_meta
from pvtui.errors import PvtuiError

#: How often a monitor looks at its counters (and reports them if they changed): pvd's 1 Hz.
REPORT_INTERVAL_S = 1.0
#: Quiet looks in a row before the report loop sleeps until the domain wakes.
DORMANT_AFTER = 3

log = logging.getLogger("monitor")

#: Console bytes per ``console`` reply: JSON escapes a control byte as six
#: characters, so a guest's binary output stays inside the message limit.
CONSOLE_REPLY_BYTES = 128 * 1024

#: How long a new monitor waits for a dying predecessor to release the domain's socket name.
BIND_WAIT_S = 3.0


@dataclass(frozen=True)
class MonitorSpec:
    """Everything a monitor needs, as sent through the zygote and kept in NAME.json."""

    name: str
    domid: int
    config: dict[str, Any]
    definition: str | None
    kernel: str
    #: Build the domain from this snapshot file instead of booting it.
    restore: str | None = None
    #: Build the domain and wait for a migration stream to fill it (it starts when that says so).
    incoming: bool = False
    #: A restored or incoming domain comes up paused.
    paused: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MonitorSpec:
        return cls(
            data["name"],
            data["domid"],
            data["config"],
            data.get("definition"),
            data["kernel"],
            data.get("restore"),
            bool(data.get("incoming", False)),
            bool(data.get("paused", False)),
        )


class Monitor:
    def __init__(self, spec: MonitorSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.config = DomainConfig.model_validate(spec.config)
        self.guard = RestartGuard()
        self.domain: Domain | None = None
        self.created = time.time()
        self.restarts = 0
        #: Set while the report loop sleeps until something happens (see _sleep_until_something_happens).
        self._wake: asyncio.Event | None = None
        #: The last ten minutes of its counters, a sample per pvd round (pvtui/daemon/history.py).
        self.history = CounterHistory()
        self._sinks: set[asyncio.StreamWriter] = set()
        self._exit = asyncio.Event()
        self._shutdown_timer: asyncio.TimerHandle | None = None
        self._server: asyncio.AbstractServer | None = None
        #: pvd's uid: the only one this monitor serves.
        self._owner_uid = os.geteuid()
        #: What a rebuild (reboot, restart) needs after root is gone: the open /dev/kvm and the kernel's bytes.
        self._kvm: Kvm | None = None
        self._kernel_image: bytes | None = None
        self.loop: asyncio.AbstractEventLoop
        self.migration = MigrationJobs(self)

    # --- process ------------------------------------------------------------------
    async def main(self, ready: Callable[[dict[str, Any]], None] = lambda status: None) -> None:
        """Build and start the domain, serve pvd until destroyed; ``ready`` is told once serving."""
        self.loop = asyncio.get_running_loop()
        self.loop.add_signal_handler(
            signal.SIGTERM, self._finish, {"reason": "sigterm", "action": "destroy", "crash_reason": None}
        )
        self._kvm = open_kvm()
        if self.spec.restore is None:  # a snapshot carries its kernel (and names any path it likes)
            with contextlib.suppress(OSError):  # unreadable: the build says why
                self._kernel_image = read_kernel(self.spec.kernel)
        self.domain = self._build(fresh=False)
        self._server = await self._listen()
        jobs = JobServer(self.name, self._owner_uid, self.migration.handlers())
        paths.write_atomic(paths.monitor_state(self.name), json.dumps(self.state_record()), durable=False)
        if self._owner_uid == 0:
            drop_to_own_id()
        if self.spec.incoming:
            self.migration.watch_incoming()  # after the drop: a uid change clears a parent-death signal
        ready({"ok": True})
        reports = self.loop.create_task(self._report_changes(), name="stats-reports")
        try:
            await self._exit.wait()
            await asyncio.sleep(0.05)  # let the last events reach pvd
        finally:
            reports.cancel()
            jobs.close()
            if self._server is not None:
                self._server.close()
            with contextlib.suppress(OSError):  # without root it cannot; pvd removes it
                paths.monitor_state(self.name).unlink()
            if self.domain is not None:
                self.domain.destroy()

    async def _listen(self) -> asyncio.AbstractServer:
        """Bind this domain's abstract socket name, waiting for a predecessor to let go of it.

        A monitor restarted after a kill -9 can start while the killed one is
        still exiting and holds the name; an abstract name is free only once
        its last fd closes. Past BIND_WAIT_S something else holds it: refuse.
        """
        deadline = time.monotonic() + BIND_WAIT_S
        while True:
            try:
                return await asyncio.start_unix_server(
                    self._serve, path=paths.monitor_address(self.name), limit=protocol.MAX_MESSAGE_BYTES + 1
                )
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise PvtuiError(
                        f"Cannot serve domain {self.name}",
                        f"Its socket name is held by another process ({exc.strerror}); see pvtui list and pvd's log.",
                    ) from None
                await asyncio.sleep(0.01)

    async def _report_changes(self) -> None:
        """Once a second, tell pvd the domain's figures, but only when something changed.

        An idle domain's counters stand still, so most seconds cost one
        cheap look (:func:`quick_counters`) and no message at all; the
        history still gains its sample. After a change, one more report
        follows once things stand still, so rates fall to zero rather than
        keeping the last busy second's. Each report says since when its
        counters were already these (``quiet_until_s``): a rate taken after
        a quiet spell covers the last second, not the whole spell.
        """
        last: tuple[object, ...] | None = None
        settle = False
        quiet_until = 0.0
        quiet_checks = 0
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)  # not aligned: a thousand monitors do not all speak at once
            domain = self.domain
            if domain is None or not self._sinks:
                continue
            now = time.monotonic()
            counters = quick_counters(domain)
            if counters == last and not settle and self.migration.progress is None:
                quiet_until = now
                self.history.repeat(now)
                quiet_checks += 1
                if quiet_checks >= DORMANT_AFTER:
                    quiet_until = await self._sleep_until_something_happens(domain, counters)
                    quiet_checks = 0
                continue
            quiet_checks = 0
            settle = counters != last
            last = counters
            data = self.stats()
            data["quiet_until_s"] = quiet_until
            quiet_until = 0.0
            self._push("stats", data)

    async def _sleep_until_something_happens(self, domain: Domain, counters: tuple[object, ...]) -> float:
        """Stop looking until the domain wakes (a vCPU leaves its block), pvd asks anything, the console
        speaks or the state changes; then fill the history's quiet seconds. Returns when it woke.

        A domain whose vCPUs are all blocked changes nothing until one of those:
        looking every second would cost its monitor a wake-up a second for nothing.
        """
        wake = self._wake = asyncio.Event()

        def woke() -> None:  # on a vCPU thread
            self.loop.call_soon_threadsafe(wake.set)

        domain.on_wake = woke
        try:
            if quick_counters(domain) == counters:  # nothing slipped in while the hook was set
                await wake.wait()
        finally:
            domain.on_wake = None
            self._wake = None
        woken_at = time.monotonic()
        self.history.fill(woken_at)
        return woken_at

    def _activity(self) -> None:
        """Something happened: a sleeping report loop looks again."""
        if self._wake is not None:
            self._wake.set()

    def request_served(self) -> None:
        """The serve loop's hook after every request of pvd's: what it changed is reported within a second."""
        self._activity()

    def state_record(self) -> dict[str, Any]:
        """What ``NAME.json`` holds: the spec, the pid and when the monitor started."""
        return {**asdict(self.spec), "pid": os.getpid(), "created": self.created}

    def _build(self, fresh: bool = True) -> Domain:
        """The domain, booted (``fresh``, and every restart), or as the spec says: restored or incoming."""
        spec = self.spec
        if not fresh and spec.restore is not None:
            domain = self.migration.restore(spec.restore)
        elif not fresh and spec.incoming:
            domain = build_for_restore(self.config, spec.kernel, self._kernel_image or b"", self._kvm, spec.domid)
        else:
            domain = Domain(self.config, spec.kernel, kvm=self._kvm, domid=spec.domid, kernel_image=self._kernel_image)
        self._kernel_image = domain.kernel_image  # a restart boots what ran, even if the file has gone
        self._attach(domain)
        if fresh or (spec.restore is None and not spec.incoming):
            domain.start()
        return domain

    def _attach(self, domain: Domain) -> None:
        loop = self.loop

        def on_event(event: DomainEvent) -> None:  # a vCPU thread: hand it to the event loop
            loop.call_soon_threadsafe(self._on_domain_event, event)

        def on_console(data: bytes) -> None:
            loop.call_soon_threadsafe(self._on_console, data, domain.console.total_bytes)

        domain.listeners.append(on_event)
        domain.console.followers.append(on_console)

    # --- events -----------------------------------------------------------------
    def _push(self, kind: str, data: Any) -> None:
        message = protocol.event(kind, self.name, data)
        for writer in list(self._sinks):
            if writer.is_closing():
                self._sinks.discard(writer)
            else:
                writer.write(message)

    def _on_console(self, data: bytes, offset: int) -> None:
        self._activity()
        self._push("console", {"text": data.decode("utf-8", errors="replace"), "offset": offset})

    def _on_domain_event(self, event: DomainEvent) -> None:
        if self.domain is None or event.domain != self.name:
            return
        self._activity()
        self._push("state", {"state": event.state.value, "detail": event.detail})
        if event.kind == "shutdown" and self.domain.finished:
            self._guest_stopped(self.domain)

    def _guest_stopped(self, domain: Domain) -> None:
        if domain is not self.domain:
            return
        reason = domain.shutdown_reason if domain.shutdown_reason is not None else ShutdownReason.crash
        action = action_for(self.config, reason)
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
            self._shutdown_timer = None
        detail = {"reason": reason.name, "action": action, "crash_reason": domain.crash_reason}
        self._push("lifecycle", {"what": "stopped", **detail})
        if action == "restart":
            if self.guard.allow():
                domain.destroy()
                self.restarts += 1
                self.domain = self._build(fresh=True)
                self._push("lifecycle", {"what": "restarted", **detail})
                return
            self._push("lifecycle", {"what": "crash_loop", **detail})
        elif action == "preserve":
            self._push("lifecycle", {"what": "preserved", **detail})
            return
        self._finish(detail)

    def _finish(self, detail: dict[str, Any]) -> None:
        self._push("lifecycle", {"what": "destroyed", **detail})
        self._exit.set()

    # --- requests (pvd's, over the monitor socket) ---------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, uid, _ = peer_credentials(writer.get_extra_info("socket"))
        if uid != self._owner_uid:  # an abstract socket: anyone may connect, only pvd is served
            writer.close()
            return
        try:
            await serve_requests(reader, writer, MONITOR_OPS, self, writer, log)
        finally:
            self._sinks.discard(writer)
            writer.close()
            if not self._sinks:
                self.migration.pvd_lost()

    @property
    def _domain(self) -> Domain:
        assert self.domain is not None  # built before the socket exists
        return self.domain

    def _in_thread(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """A request that waits on vCPU threads runs off the event loop (events keep flowing)."""
        return self.loop.run_in_executor(None, fn, *args)

    @MONITOR_OPS.op("snapshot_meta")
    async def op_snapshot_meta(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        return snapshot_meta(self._domain, self.spec.definition)

    @MONITOR_OPS.op("migrate_cancel")
    async def op_migrate_cancel(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        return {"cancelled": self.migration.cancel()}

    @MONITOR_OPS.op("hello")
    async def op_hello(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        return {"name": self.name, "domid": self.spec.domid, "pid": os.getpid(), "state": self._domain.state.value}

    @MONITOR_OPS.op("subscribe")
    async def op_subscribe(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        self._sinks.add(writer)
        return {"subscribed": True}

    @MONITOR_OPS.op("history")
    async def op_history(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        return self.history.export()

    @MONITOR_OPS.op("stats")
    async def op_stats(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        return self.stats()

    @MONITOR_OPS.op("console", {"offset?": int})
    async def op_console(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        console = self._domain.console
        data, total = console.contents(), console.total_bytes
        first = total - len(data)  # the offset of the oldest byte still kept
        start = max(0, args.get("offset", 0) - first)
        chunk = data[start : start + CONSOLE_REPLY_BYTES]
        end = first + start + len(chunk)
        return {"text": chunk.decode("utf-8", errors="replace"), "offset": end, "more": end < total}

    @MONITOR_OPS.op("hypercalls", {"after?": int, "limit?": int})
    async def op_hypercalls(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        records = self._domain.accounting.records(args.get("after", 0))
        return [r.to_dict() for r in records[-args.get("limit", 1000) :]]

    @MONITOR_OPS.op("pause")
    async def op_pause(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        self.migration.refuse_if_busy("pause")
        await self._in_thread(self._domain.pause)
        return self.stats()

    @MONITOR_OPS.op("unpause")
    async def op_unpause(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        self.migration.refuse_if_busy("unpause")
        self._domain.unpause()
        return self.stats()

    @MONITOR_OPS.op("shutdown", {"reason?": str, "timeout?": (int, float)})
    async def op_shutdown(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        domain = self._domain
        reason = args.get("reason", "poweroff")
        if reason not in ("poweroff", "reboot"):
            raise ProtocolError("bad_args", "Bad shutdown reason", "Use poweroff or reboot.")
        if domain.finished:
            raise PvtuiError(f"{self.name} is already {domain.state.value}", "Destroy it instead.")
        domain.request_shutdown(ShutdownReason[reason])
        timeout = float(args.get("timeout", SHUTDOWN_TIMEOUT_S))
        self._shutdown_timer = self.loop.call_later(timeout, self._shutdown_timed_out, domain)
        return self.stats()

    @MONITOR_OPS.op("destroy")
    async def op_destroy(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        self.loop.call_soon(self._finish, {"reason": "destroyed", "action": "destroy", "crash_reason": None})
        return self.stats()

    @MONITOR_OPS.op("vcpu_set", {"count": int})
    async def op_vcpu_set(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        self.migration.refuse_if_busy("change the vCPUs of")
        await self._in_thread(self._domain.set_online_vcpus, args["count"])
        return self.stats()

    @MONITOR_OPS.op("vcpu_pin", {"vcpu": int, "cpus": (list, type(None))})
    async def op_vcpu_pin(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        cpus = args["cpus"]
        if cpus is not None and not all(isinstance(c, int) and not isinstance(c, bool) for c in cpus):
            raise ProtocolError("bad_args", "Bad CPU list", "cpus is a list of CPU numbers or null.")
        self._domain.pin_vcpu(args["vcpu"], set(cpus) if cpus is not None else None)
        return self.stats()

    @MONITOR_OPS.op("mem_set", {"bytes": int})
    async def op_mem_set(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        self.migration.refuse_if_busy("set the memory of")
        self._domain.set_balloon_target(args["bytes"])
        return self.stats()

    @MONITOR_OPS.op("mem_max", {"bytes": int})
    async def op_mem_max(self, writer: asyncio.StreamWriter, args: dict[str, Any]) -> Any:
        self.migration.refuse_if_busy("grow")
        await self._in_thread(self._domain.grow_memory, args["bytes"])
        return self.stats()

    def _shutdown_timed_out(self, domain: Domain) -> None:
        self._shutdown_timer = None
        if domain is self.domain and not domain.finished:
            self._finish({"reason": "shutdown_timeout", "action": "destroy", "crash_reason": None})

    def stats(self) -> dict[str, Any]:
        domain = self.domain
        assert domain is not None
        data: dict[str, Any] = domain.stats().to_dict()
        if self.migration.incoming:
            data["state"] = "incoming"
        if self.migration.progress is not None:
            data["migration"] = self.migration.progress
        host_cpus = domain.vcpus.host_cpus()
        for vcpu in data["vcpus"]:
            vcpu["host_cpu"] = host_cpus.get(vcpu["id"])
        data.update(
            domid=self.spec.domid,
            pid=os.getpid(),
            definition=self.spec.definition,
            config=self.spec.config,
            max_vcpus=domain.max_vcpus,
            online_vcpus=domain.online_vcpus,
            console_bytes=domain.console.total_bytes,
            console_dropped_bytes=domain.console.dropped_bytes,
            last_seq=domain.accounting.last_seq,
            restarts=self.restarts,
            created=self.created,
            # The whole monitor's CPU (every thread, the scheduler's own
            # nanosecond clock): beyond its vCPU threads it is the engine's
            # cost of running this domain.
            process_cpu_s=time.process_time(),
        )
        self.history.add(data)
        return data


def run_monitor(spec: MonitorSpec, ready: Callable[[dict[str, Any]], None]) -> int:
    """Entry point in the forked monitor process (its main thread)."""
    try:
        asyncio.run(Monitor(spec).main(ready))
    except PvtuiError as exc:
        ready({"ok": False, "title": exc.title, "message": exc.message})
        return 1
    except Exception as exc:  # report anything that stops the build, then die
        ready({"ok": False, "title": f"Monitor for {spec.name} failed", "message": repr(exc)})
        raise
    return 0


__all__ = ["MONITOR_OPS", "Monitor", "MonitorSpec", "run_monitor"]
