"""pvd's monitors: starting them through the zygote, linking to them, losing them, on_crash.

Also the registry's lifecycle: create (with admission control), destroy,
reattach after a pvd restart, autostart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
from typing import Any

import psutil

from pvtui.concurrency import each_at_most
from pvtui.daemon import admission, paths
from pvtui.daemon.link import MonitorGone, MonitorLink
from pvtui.daemon.monitor import MonitorSpec
from pvtui.daemon.oom import OOM_REASON
from pvtui.daemon.protocol import ProtocolError
from pvtui.daemon.records import DomainRecord
from pvtui.daemon.stats import PvdStats
from pvtui.domain.loader import DomainFileError, load_domain_file
from pvtui.domain.schema import DomainConfig
from pvtui.engine.lifecycle import RestartGuard
from pvtui.errors import PvtuiError

log = logging.getLogger("pvd")

#: Monitors a restarted pvd takes back at once.
REATTACH_PARALLEL = 16


class PvdMonitors(PvdStats):
    """The domain registry and its monitor processes."""

    async def _reattach(self) -> None:
        """Find monitors left running by an earlier pvd and take them back, counters and all.

        ``REATTACH_PARALLEL`` at a time: taking one back is a few round trips
        to its monitor (~6 ms on a busy host), so a thousand one after
        another kept clients waiting ~6 s for pvd's socket.
        """
        found: list[DomainRecord] = []
        for state_file in sorted(paths.domains_dir().glob("*.json")):
            try:
                data = json.loads(state_file.read_text())
                spec = MonitorSpec.from_dict(data)
                config = DomainConfig.model_validate(spec.config)
                pid = int(data["pid"])
            except (OSError, ValueError, KeyError, PvtuiError) as exc:
                log.warning("ignoring %s: %s", state_file, exc)
                continue
            if not psutil.pid_exists(pid):
                self._remove_monitor_files(spec.name)
                continue
            found.append(DomainRecord(spec, config, pid=pid, weight=config.cpu_weight, cap=config.cpu_cap))

        async def take_back(record: DomainRecord) -> None:
            try:
                await self._link(record)
            except OSError as exc:
                log.warning("cannot reattach %s (pid %d): %s", record.name, record.pid, exc)
                return
            self.records[record.name] = record
            self._saw_domid(record.spec.domid)
            await self._refresh(record)
            log.info("reattached %s (pid %d)", record.name, record.pid)

        await each_at_most(REATTACH_PARALLEL, found, take_back)

    async def _autostart(self) -> None:
        if self.domains_dir is None or not self.domains_dir.is_dir():
            return
        for path in sorted(self.domains_dir.glob("*.yaml")):
            try:
                config = load_domain_file(path)
            except DomainFileError as exc:
                log.warning("%s", exc.message)
                continue
            if config.autostart and config.name not in self.records:
                try:
                    await self._create(config, str(path.resolve()))
                except PvtuiError as exc:
                    log.warning("autostart of %s failed: %s: %s", config.name, exc.title, exc.message)

    # --- lookups ----------------------------------------------------------------------
    def _record(self, name: str) -> DomainRecord:
        record = self.records.get(name)
        if record is None and name in self._restarting:
            raise PvtuiError(
                f"{name} is restarting", "Its monitor died and on_crash restarts it; try again in a moment."
            )
        if record is None:
            known = ", ".join(sorted(self.records)) or "none"
            raise PvtuiError(f"No domain named {name}", f"Running domains: {known}. See pvtui list.")
        return record

    def _live(self, name: str) -> tuple[DomainRecord, MonitorLink]:
        record = self._record(name)
        if record.link is None:
            raise PvtuiError(f"{name} is {record.state}", "Its monitor is gone; destroy it to clear the record.")
        return record, record.link

    # --- monitors -------------------------------------------------------------------
    async def _spawn(self, spec: MonitorSpec) -> int:
        """A new monitor from the zygote; several may be starting at once (answers come tagged)."""
        assert self._zygote_stream is not None
        if self._zygote_dead is not None:
            raise self._zygote_dead
        _, writer = self._zygote_stream
        self._zygote_tag += 1
        tag = self._zygote_tag
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._zygote_waiting[tag] = answer
        try:
            async with self._zygote_lock:  # whole lines, one writer at a time
                writer.write(f"{tag} {json.dumps(spec.__dict__)}\n".encode())
                await writer.drain()
            status = await answer
        finally:
            self._zygote_waiting.pop(tag, None)
        if not status.get("ok"):
            raise PvtuiError(status.get("title", "Domain did not start"), status.get("message", ""))
        return int(status["pid"])

    async def _zygote_answers(self) -> None:
        """Hand each of the zygote's answers to the request it answers; if it dies, fail them all."""
        assert self._zygote_stream is not None
        reader, _ = self._zygote_stream
        while line := await reader.readline():
            status = json.loads(line)
            waiting = self._zygote_waiting.get(status.get("tag"))
            if waiting is not None and not waiting.done():
                waiting.set_result(status)
        gone = PvtuiError("The engine's zygote died", "Restart pvd: pvtui engine stop, then pvtui engine start.")
        self._zygote_dead = gone
        for waiting in self._zygote_waiting.values():
            if not waiting.done():
                waiting.set_exception(gone)

    async def _link(self, record: DomainRecord) -> None:
        name = record.name

        def on_event(message: dict[str, Any]) -> None:
            self._monitor_event(record, message)

        def on_lost() -> None:
            asyncio.get_running_loop().create_task(self._monitor_lost(record))

        record.link = await MonitorLink.connect(paths.monitor_address(name), on_event, on_lost, record.pid)

    def _monitor_event(self, record: DomainRecord, message: dict[str, Any]) -> None:
        kind = message.get("event", "")
        data = message.get("data") or {}
        if kind == "stats":  # the monitor's figures changed: kept, sent on at the next round
            self.take_stats(record, data)
            return
        if kind == "state":
            record.state = data.get("state", record.state)
        elif kind == "migration":
            record.migration = data if data.get("stage") != "done" else None
        elif kind == "lifecycle":
            what = data.get("what")
            if what == "destroyed":
                record.expect_exit = True
            if data.get("crash_reason"):
                record.crash_reason = data["crash_reason"]
            if what in ("destroyed", "restarted", "preserved", "crash_loop"):
                for waiter in record.lifecycle_waiters:
                    if not waiter.done():
                        waiter.set_result(what)
        self._broadcast(kind, record.name, data)

    async def _monitor_lost(self, record: DomainRecord) -> None:
        if self.records.get(record.name) is not record:
            return
        record.link = None
        if self._stop.is_set():
            return
        if record.expect_exit:
            self._forget(record, "destroyed")
            return
        if record.pid and _alive(record.pid):
            # Only the connection broke: the monitor still runs its domain. Reconnect.
            for _ in range(50):
                with contextlib.suppress(OSError):
                    await self._link(record)
                    log.warning("%s: reconnected to its monitor", record.name)
                    return
                if not _alive(record.pid):
                    break
                await asyncio.sleep(0.1)
        if self.records.get(record.name) is not record:
            return  # destroyed (or replaced) while we looked: on_crash no longer applies
        if record.expect_exit:
            self._forget(record, "destroyed")
            return
        if self.oom.was_killed(record.pid):
            reason = f"monitor process {record.pid} {OOM_REASON}"
        elif _ended_with_traceback(record.name):
            reason = f"monitor process {record.pid} exited with an engine error (see its log)"
        else:  # it said nothing: no exit of its own makes no report
            reason = f"monitor process {record.pid} killed (ended without a word: SIGKILL or another fatal signal)"
        log.warning("%s: %s; on_crash=%s", record.name, reason, record.config.on_crash)
        record.crash_reason = reason
        action = record.config.on_crash
        self._broadcast(
            "lifecycle", record.name, {"what": "stopped", "reason": "crash", "action": action, "crash_reason": reason}
        )
        for waiter in record.lifecycle_waiters:
            if not waiter.done():
                waiter.set_result("crashed")
        if action == "restart" and record.guard.allow():
            restarted: asyncio.Future[DomainRecord | None] = asyncio.get_running_loop().create_future()
            self._restarting[record.name] = restarted
            self._forget(record, "restarting")
            new: DomainRecord | None = None
            try:
                new = await self._create(
                    record.config, record.spec.definition, domid=record.spec.domid, guard=record.guard
                )
            except PvtuiError as exc:
                log.warning("restart of %s failed: %s", record.name, exc)
            finally:
                self._restarting.pop(record.name, None)
                restarted.set_result(new)
        elif action == "preserve":
            record.state = "crashed"
            self._broadcast("state", record.name, {"state": "crashed", "detail": reason})
        else:
            self._forget(record, "destroyed")

    def _forget(self, record: DomainRecord, what: str) -> None:
        self.records.pop(record.name, None)
        task = asyncio.get_running_loop().create_task(self._detach_when_gone(record.name, record.pid))
        self._detaching.add(task)
        task.add_done_callback(self._detaching.discard)
        self._remove_monitor_files(record.name)
        follower = self._hypercall_tasks.pop(record.name, None)
        if follower:
            follower.cancel()
        self._broadcast("state", record.name, {"state": "dead", "detail": what})

    async def _detach_when_gone(self, name: str, pid: int | None) -> None:
        """Remove the domain's cgroup once its monitor has exited (a busy group cannot go)."""
        deadline = time.monotonic() + 10
        while pid and psutil.pid_exists(pid) and time.monotonic() < deadline:
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            await asyncio.sleep(0.02)
        if name not in self.records:
            self.cpu.detach(name)

    @staticmethod
    def _remove_monitor_files(name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            paths.monitor_state(name).unlink()

    async def _create(
        self,
        config: DomainConfig,
        definition: str | None,
        domid: int | None = None,
        guard: RestartGuard | None = None,
        memory_bytes: int | None = None,
        **spec_fields: Any,
    ) -> DomainRecord:
        """Start a monitor for ``config``; ``spec_fields`` (restore, incoming, paused, kernel) say how it builds.

        ``memory_bytes`` is what the domain commits when that is more than its
        boot memory (a restored domain with hot-added memory)."""
        # The checks and the reservation (name, memory, domid) under the lock; the monitor's start
        # outside it, so several creates start their monitors at once.
        async with self._registry_lock:
            if config.name in self.records or config.name in self._creating:
                raise PvtuiError(
                    f"A domain named {config.name} exists",
                    "Destroy it first (pvtui destroy NAME) or rename the new one.",
                )
            memory = max(config.memory, memory_bytes or 0)
            self.admit_memory(memory, f"domain {config.name}")
            for vcpu in range(config.maxvcpus_or_vcpus):
                admission.check_cpus(config.vcpu_affinity(vcpu), f"{config.name} vCPU {vcpu}")
            if config.cpu_cap and not self.cpu.can_cap:
                self.cpu.apply(config.name, os.getpid(), config.cpu_weight, config.cpu_cap)  # raises the reason
            from pvtui.guest.build import bundled_kernel

            kernel = spec_fields.pop("kernel", None) or config.kernel or str(bundled_kernel())
            if domid is None:
                domid = self._next_domid()
            self._creating[config.name] = (memory, domid)
        try:
            spec = MonitorSpec(config.name, domid, config.model_dump(mode="json"), definition, kernel, **spec_fields)
            pid = await self._spawn(spec)
            record = DomainRecord(spec, config, pid=pid, weight=config.cpu_weight, cap=config.cpu_cap)
            if guard is not None:
                record.guard = guard
            await self._link(record)
            self.records[config.name] = record
        finally:
            self._creating.pop(config.name, None)
        # Joining a cgroup costs 10-25 ms on cgroup v1 (an RCU grace period): it runs in a
        # worker thread beside the reply, so the guest runs unweighted for those milliseconds.
        self._attach_cpu_control(record)
        await self._refresh(record)
        self._broadcast("state", config.name, {"state": record.state, "detail": "created"})
        log.info("created %s (domid %d, pid %d)", config.name, domid, pid)
        return record

    def _attach_cpu_control(self, record: DomainRecord) -> None:
        def attach() -> None:
            try:
                self.cpu.attach(record.name, record.pid or 0, record.weight, record.cap)
            except (OSError, PvtuiError) as exc:
                log.warning("%s: cannot apply weight/cap: %s", record.name, exc)

        task = asyncio.get_running_loop().run_in_executor(None, attach)
        record.cpu_attached = task

    async def _destroy(self, record: DomainRecord) -> dict[str, Any]:
        record.expect_exit = True
        record.state = "dying"
        if record.link is not None:
            with contextlib.suppress(MonitorGone, ProtocolError, asyncio.TimeoutError):
                await record.link.request("destroy")
            deadline = time.monotonic() + 5
            while record.link is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        if record.pid and psutil.pid_exists(record.pid) and record.link is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)
            while record.link is not None:
                await asyncio.sleep(0.01)
        if self.records.get(record.name) is record:
            self._forget(record, "destroyed")
        return {"name": record.name, "state": "dead"}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _ended_with_traceback(name: str) -> bool:
    """The monitor's log *ends* with a Python traceback: it exited on an engine error, it was not killed."""
    try:
        with open(paths.monitor_log(name), "rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, log_file.tell() - 4096))
            tail = log_file.read().decode(errors="replace")
    except OSError:
        return False
    lines = [line for line in tail.splitlines() if line.strip()]
    return bool(lines) and "Traceback (most recent call last)" in tail and bool(_EXCEPTION_LINE.match(lines[-1]))


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
