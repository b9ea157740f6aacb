"""pvd: the local engine daemon.

Serves clients on ``pvd.sock`` (0600 in a 0700 directory, peer uid checked
with SO_PEERCRED), keeps the registry of domains (each a monitor process),
checks every request against the host before anything moves, applies
``on_crash`` when a monitor dies, reattaches running monitors when it
restarts, starts ``autostart`` domains, polls stats once a second and fans
events out to subscribed clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pvtui import __version__
from pvtui.daemon import admission, paths, protocol
from pvtui.daemon.cpucontrol import CpuControl
from pvtui.daemon.link import MonitorGone, MonitorLink
from pvtui.daemon.monitor import MonitorSpec
from pvtui.daemon.protocol import ProtocolError
from pvtui.daemon.rates import DomainRates
from pvtui.daemon.zygote import Zygote
from pvtui.domain.cpuset import parse_cpu_list
from pvtui.domain.limits import SHUTDOWN_TIMEOUT_S, vcpu_count_problem
from pvtui.domain.loader import DomainFileError, load_domain_file
from pvtui.domain.schema import DomainConfig
from pvtui.domain.units import parse_size
from pvtui.engine.lifecycle import RestartGuard
from pvtui.errors import PvtuiError

log = logging.getLogger("pvd")

NUM = (int, float)
SIZE = (int, str)
OPS: dict[str, dict[str, Any]] = {
    "hello": {},
    "host": {},
    "list": {"fresh?": bool},
    "info": {"name": str},
    "create": {"path": str},
    "shutdown": {"name": str, "timeout?": NUM, "wait?": bool},
    "reboot": {"name": str},
    "destroy": {"name": str},
    "pause": {"name": str},
    "unpause": {"name": str},
    "vcpu_set": {"name": str, "count": int},
    "vcpu_list": {"name": str},
    "vcpu_pin": {"name": str, "vcpu": int, "cpus": (str, int)},
    "sched_credit": {"name": str, "weight?": int, "cap?": int},
    "mem_set": {"name": str, "size": SIZE},
    "mem_max": {"name": str, "size": SIZE},
    "console": {"name": str, "offset?": int},
    "hypercalls": {"name": str, "after?": int, "limit?": int},
    "subscribe": {"topics": list, "domains?": list},
    "engine_stop": {"destroy_domains?": bool},
}
#: Requests whose reply is the monitor's stats after the change.
FRESH_STATS_OPS = {"pause", "unpause", "vcpu_set", "vcpu_pin", "mem_set", "mem_max"}
TOPICS = {"stats", "state", "console", "hypercalls", "lifecycle"}
STATS_INTERVAL_S = 1.0
STATS_BATCH = 16
HYPERCALL_POLL_S = 0.25
MAX_CLIENT_BACKLOG = 8 << 20


@dataclass
class DomainRecord:
    spec: MonitorSpec
    config: DomainConfig
    pid: int | None = None
    link: MonitorLink | None = None
    state: str = "running"
    stats: dict[str, Any] | None = None
    rates: DomainRates = field(default_factory=DomainRates)
    weight: int = 256
    cap: int = 0
    expect_exit: bool = False
    crash_reason: str | None = None
    guard: RestartGuard = field(default_factory=RestartGuard)
    lifecycle_waiters: list[asyncio.Future[str]] = field(default_factory=list)
    last_seq: int = 0
    cpu_attached: asyncio.Future[None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def summary(self) -> dict[str, Any]:
        stats = self.stats or {}
        memory = stats.get("memory") or {}
        return {
            "name": self.name,
            "domid": self.spec.domid,
            "state": self.state,
            "pid": self.pid,
            "cpu_s": round(sum(v["cpu_time_s"] for v in stats.get("vcpus", [])), 3),
            "cpu_percent": _rounded(self.rates.cpu_percent, 2),
            "engine_cpu_percent": _rounded(self.rates.engine_cpu_percent, 3),
            "vcpus_online": stats.get("online_vcpus", 0),
            "vcpus_max": self.config.maxvcpus_or_vcpus,
            "memory": memory,
            "hypercalls_total": stats.get("hypercalls_total", 0),
            "hypercalls_per_s": _rounded(self.rates.hypercalls_per_s, 1),
            "uptime_s": round(stats.get("uptime_s", 0.0), 2),
            "weight": self.weight,
            "cap": self.cap,
            "definition": self.spec.definition,
            "restarts": stats.get("restarts", 0),
            "crash_reason": self.crash_reason or stats.get("crash_reason"),
            "personality": stats.get("personality", "pvtui"),
            # pvd's clock when this was put together: a client holding two
            # summaries (an event in flight, a reply) keeps the newer one.
            "as_of": time.monotonic(),
            # When the monitor read the counters above (cpu_s, hypercalls_total):
            # a client taking its own rates divides by the difference of these.
            "sampled_s": stats.get("sampled_s"),
        }


@dataclass(eq=False)
class ClientConn:
    writer: asyncio.StreamWriter
    topics: set[str] = field(default_factory=set)
    domains: set[str] | None = None

    def wants(self, topic: str, domain: str | None) -> bool:
        return topic in self.topics and (self.domains is None or domain is None or domain in self.domains)


class Pvd:
    def __init__(self, zygote: Zygote, domains_dir: Path | None) -> None:
        self.zygote = zygote
        self.domains_dir = domains_dir
        self.records: dict[str, DomainRecord] = {}
        self.clients: set[ClientConn] = set()
        self.cpu = CpuControl(instance=hashlib.sha1(str(paths.runtime_dir()).encode()).hexdigest()[:8])
        self.started = time.time()
        self._stop = asyncio.Event()
        self._registry_lock = asyncio.Lock()
        self._zygote_lock = asyncio.Lock()
        self._zygote_stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._hypercall_tasks: dict[str, asyncio.Task[None]] = {}
        self._detaching: set[asyncio.Task[None]] = set()
        self._cpu_meter = _CpuMeter()

    # --- lifetime -------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self._zygote_stream = await asyncio.open_connection(sock=self.zygote.sock)
        # Reattach before listening, so no client sees a half-known registry.
        await self._reattach()
        sock = paths.socket_path()
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        server = await asyncio.start_unix_server(self._serve, path=str(sock), limit=protocol.MAX_MESSAGE_BYTES + 1)
        os.chmod(sock, 0o600)
        log.info("pvd %s listening on %s (cpu control: %s)", __version__, sock, self.cpu.backend)
        await self._autostart()
        poller = asyncio.create_task(self._poll_stats())
        await self._stop.wait()
        poller.cancel()
        server.close()
        if self._detaching:
            await asyncio.wait(self._detaching, timeout=5)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        for record in self.records.values():
            if record.link:
                record.link.close()
        log.info("pvd stopped; %d domains keep running", len(self.records))

    async def _reattach(self) -> None:
        """Find monitors left running by an earlier pvd and take them back, counters and all."""
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
            record = DomainRecord(spec, config, pid=pid, weight=config.cpu_weight, cap=config.cpu_cap)
            try:
                await self._link(record)
            except OSError as exc:
                log.warning("cannot reattach %s (pid %d): %s", spec.name, pid, exc)
                continue
            self.records[spec.name] = record
            await self._refresh(record)
            log.info("reattached %s (pid %d)", spec.name, pid)

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

    # --- monitors -------------------------------------------------------------------
    async def _spawn(self, spec: MonitorSpec) -> int:
        assert self._zygote_stream is not None
        reader, writer = self._zygote_stream
        async with self._zygote_lock:
            writer.write(json.dumps(spec.__dict__).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        if not line:
            raise PvtuiError("The engine's zygote died", "Restart pvd: pvtui engine stop, then any pvtui command.")
        status = json.loads(line)
        if not status.get("ok"):
            raise PvtuiError(status.get("title", "Domain did not start"), status.get("message", ""))
        return int(status["pid"])

    async def _link(self, record: DomainRecord) -> None:
        name = record.name

        def on_event(message: dict[str, Any]) -> None:
            self._monitor_event(record, message)

        def on_lost() -> None:
            asyncio.get_running_loop().create_task(self._monitor_lost(record))

        record.link = await MonitorLink.connect(paths.monitor_socket(name), on_event, on_lost)

    def _monitor_event(self, record: DomainRecord, message: dict[str, Any]) -> None:
        kind = message.get("event", "")
        data = message.get("data") or {}
        if kind == "state":
            record.state = data.get("state", record.state)
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
        reason = f"monitor process {record.pid} died"
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
            self._forget(record, "restarting")
            try:
                await self._create(record.config, record.spec.definition, domid=record.spec.domid, guard=record.guard)
            except PvtuiError as exc:
                log.warning("restart of %s failed: %s", record.name, exc)
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
        for path in (paths.monitor_socket(name), paths.monitor_state(name)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def _create(
        self, config: DomainConfig, definition: str | None, domid: int | None = None, guard: RestartGuard | None = None
    ) -> DomainRecord:
        async with self._registry_lock:
            if config.name in self.records:
                raise PvtuiError(
                    f"A domain named {config.name} exists",
                    "Destroy it first (pvtui destroy NAME) or rename the new one.",
                )
            admission.check_memory(config.memory, f"domain {config.name}")
            for vcpu in range(config.maxvcpus_or_vcpus):
                admission.check_cpus(config.vcpu_affinity(vcpu), f"{config.name} vCPU {vcpu}")
            if config.cpu_cap and not self.cpu.can_cap:
                self.cpu.apply(config.name, os.getpid(), config.cpu_weight, config.cpu_cap)  # raises the reason
            from pvtui.guest.build import bundled_kernel

            kernel = config.kernel or str(bundled_kernel())
            if domid is None:
                domid = max((r.spec.domid for r in self.records.values()), default=0) + 1
            spec = MonitorSpec(config.name, domid, config.model_dump(mode="json"), definition, kernel)
            pid = await self._spawn(spec)
            record = DomainRecord(spec, config, pid=pid, weight=config.cpu_weight, cap=config.cpu_cap)
            if guard is not None:
                record.guard = guard
            await self._link(record)
            self.records[config.name] = record
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

    # --- stats ------------------------------------------------------------------------
    async def _refresh(self, record: DomainRecord) -> None:
        if record.link is None:
            return
        try:
            stats = await record.link.request("stats")
        except (TimeoutError, MonitorGone, ProtocolError):
            return
        record.rates.add(stats)
        record.rates.annotate(stats)
        record.stats = stats
        record.state = stats["state"] if record.link is not None else record.state

    async def _poll_stats(self) -> None:
        """Once a second: every monitor's stats, then one event per domain and a ``host`` event.

        Monitors are asked ``STATS_BATCH`` at a time, and the loop yields
        between batches of events: with a hundred domains, a whole round
        handled back to back held every client request ~30 ms behind it.
        """
        while True:
            started = time.monotonic()
            batches = await self._refresh_all()
            if any(c.topics & {"stats"} for c in self.clients):
                for batch in batches:
                    for record in batch:
                        self._broadcast("stats", record.name, record.summary())
                    await asyncio.sleep(0)
                self._broadcast("stats", None, self.host_info(), kind="host")
            await asyncio.sleep(max(0.05, STATS_INTERVAL_S - (time.monotonic() - started)))

    async def _refresh_all(self) -> list[list[DomainRecord]]:
        """Fresh stats from every monitor, ``STATS_BATCH`` at a time; returns the batches."""
        records = [r for r in self.records.values() if r.link is not None]
        batches = [records[i : i + STATS_BATCH] for i in range(0, len(records), STATS_BATCH)]
        for batch in batches:
            await asyncio.gather(*(self._refresh(r) for r in batch), return_exceptions=True)
        return batches

    def host_info(self) -> dict[str, Any]:
        self._cpu_meter.update()
        memory = psutil.virtual_memory()
        given = sum(((r.stats or {}).get("memory") or {}).get("held_bytes", 0) for r in self.records.values())
        states: dict[str, int] = {}
        for record in self.records.values():
            states[record.state] = states.get(record.state, 0) + 1
        return {
            "cpus": os.cpu_count() or 1,
            "cpu_percent": self._cpu_meter.host_percent,
            "pvd_cpu_percent": self._cpu_meter.own_percent,
            # Cumulative busy and total CPU seconds of all host CPUs: a client
            # takes the host's CPU % over its own interval from two replies.
            "cpu_busy_s": round(self._cpu_meter.last[2], 2),
            "cpu_total_s": round(self._cpu_meter.last[3], 2),
            "memory_total": memory.total,
            "memory_available": memory.available,
            "memory_given": given,
            "memory_reserved": admission.HOST_RESERVE_BYTES,  # what admission control keeps for the host
            "domains": len(self.records),
            "domains_by_state": states,
            "cpu_control": self.cpu.backend,
        }

    async def _follow_hypercalls(self, record: DomainRecord) -> None:
        """Push new hypercall records of one domain while anyone subscribes to them."""
        after = record.last_seq = (record.stats or {}).get("last_seq", 0)
        while any(c.wants("hypercalls", record.name) for c in self.clients) and record.link is not None:
            try:
                records = await record.link.request("hypercalls", after=after, limit=2000)
            except (TimeoutError, MonitorGone, ProtocolError):
                break
            if records:
                after = records[-1]["seq"]
                self._broadcast("hypercalls", record.name, records)
            await asyncio.sleep(HYPERCALL_POLL_S)
        self._hypercall_tasks.pop(record.name, None)

    def _broadcast(self, topic: str, domain: str | None, data: Any, kind: str | None = None) -> None:
        """Send an event to every client subscribed to ``topic`` (``kind`` names it, default the topic)."""
        message: bytes | None = None
        for client in list(self.clients):
            if not client.wants(topic, domain):
                continue
            if client.writer.is_closing():
                self.clients.discard(client)
                continue
            transport = client.writer.transport
            if transport.get_write_buffer_size() > MAX_CLIENT_BACKLOG:
                log.warning("dropping a client that does not read its events")
                client.writer.close()
                self.clients.discard(client)
                continue
            message = message or protocol.event(kind or topic, domain, data)
            client.writer.write(message)

    # --- clients -----------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid != os.geteuid():
            writer.write(
                protocol.reply_error(
                    None,
                    ProtocolError(
                        "permission",
                        "Permission denied",
                        f"pvd serves uid {os.geteuid()} only; you are uid {uid}. Run pvtui as that user.",
                    ),
                )
            )
            await writer.drain()
            # Consume what the peer already sent: closing with unread data resets the
            # connection and the peer would lose the reply that says why.
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError, ValueError):
                await asyncio.wait_for(reader.read(protocol.MAX_MESSAGE_BYTES), 1.0)
            writer.close()
            return
        client = ClientConn(writer)
        self.clients.add(client)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    error = ProtocolError(
                        "too_large", "Request too large", f"The limit is {protocol.MAX_MESSAGE_BYTES} bytes."
                    )
                    writer.write(protocol.reply_error(None, error))
                    await writer.drain()
                    break
                if not line:
                    break
                request_id: int | None = None
                try:
                    message = protocol.decode(line)
                    request_id = message["id"] if isinstance(message.get("id"), int) else None
                    request = protocol.parse_request(message, OPS)
                    result = await self._handle(client, request.op, request.args)
                    writer.write(protocol.reply_ok(request.id, result))
                except ProtocolError as exc:
                    writer.write(protocol.reply_error(request_id, exc))
                except PvtuiError as exc:
                    writer.write(protocol.reply_error(request_id, ProtocolError("refused", exc.title, exc.message)))
                except MonitorGone:
                    error = ProtocolError(
                        "gone", "The domain's monitor is gone", "It exited or was killed; see pvtui list."
                    )
                    writer.write(protocol.reply_error(request_id, error))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.clients.discard(client)
            writer.close()

    def _record(self, name: str) -> DomainRecord:
        record = self.records.get(name)
        if record is None:
            known = ", ".join(sorted(self.records)) or "none"
            raise PvtuiError(f"No domain named {name}", f"Running domains: {known}. See pvtui list.")
        return record

    def _live(self, name: str) -> tuple[DomainRecord, MonitorLink]:
        record = self._record(name)
        if record.link is None:
            raise PvtuiError(f"{name} is {record.state}", "Its monitor is gone; destroy it to clear the record.")
        return record, record.link

    async def _handle(self, client: ClientConn, op: str, args: dict[str, Any]) -> Any:
        if op == "hello":
            return {
                "version": __version__,
                "protocol": protocol.PROTOCOL_VERSION,
                "pid": os.getpid(),
                "uid": os.geteuid(),
                "runtime_dir": str(paths.runtime_dir()),
                "domains_dir": str(self.domains_dir) if self.domains_dir else None,
                "started": self.started,
                "domains": len(self.records),
                "cpu_control": self.cpu.backend,
            }
        if op == "host":
            return self.host_info()
        if op == "list":
            if args.get("fresh"):
                await self._refresh_all()
            return [r.summary() for r in sorted(self.records.values(), key=lambda r: r.spec.domid)]
        if op == "subscribe":
            topics = set(args["topics"])
            if not topics <= TOPICS:
                raise ProtocolError("bad_args", "Unknown topic", f"Topics: {', '.join(sorted(TOPICS))}.")
            client.topics |= topics
            domains = args.get("domains")
            client.domains = set(domains) if domains else None
            if "hypercalls" in topics:
                for record in self.records.values():
                    if client.wants("hypercalls", record.name) and record.name not in self._hypercall_tasks:
                        self._hypercall_tasks[record.name] = asyncio.create_task(self._follow_hypercalls(record))
            return {"topics": sorted(client.topics)}
        if op == "create":
            try:
                config = load_domain_file(args["path"])
            except DomainFileError as exc:
                raise ProtocolError("invalid", exc.title, exc.message) from None
            record = await self._create(config, str(Path(args["path"]).resolve()))
            return record.summary()
        if op == "engine_stop":
            if args.get("destroy_domains"):
                for name in list(self.records):
                    await self._destroy(self.records[name])
            asyncio.get_running_loop().call_later(0.05, self._stop.set)
            return {"stopping": True, "domains_left": len(self.records)}

        name = args["name"]
        result = await self._handle_domain(op, name, args)
        if op in FRESH_STATS_OPS and isinstance(result, dict) and name in self.records:
            # The monitor answered with its stats after the change: list shows it at once.
            record = self.records[name]
            record.rates.add(result)
            record.rates.annotate(result)
            record.stats = result
            record.state = result.get("state", record.state)
        return result

    async def _handle_domain(self, op: str, name: str, args: dict[str, Any]) -> Any:
        if op == "info":
            record = self._record(name)
            await self._refresh(record)
            return {**record.summary(), "stats": record.stats, "op_rates": record.rates.op_rates}
        if op == "destroy":
            return await self._destroy(self._record(name))
        record, link = self._live(name)
        if op == "shutdown" or op == "reboot":
            reason = "reboot" if op == "reboot" else "poweroff"
            timeout = float(args.get("timeout", SHUTDOWN_TIMEOUT_S))
            waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            record.lifecycle_waiters.append(waiter)
            try:
                await link.request("shutdown", reason=reason, timeout=timeout)
                if not args.get("wait"):
                    return {"requested": reason}
                outcome = await asyncio.wait_for(waiter, timeout + 10)
                return {"requested": reason, "outcome": outcome}
            finally:
                record.lifecycle_waiters.remove(waiter)
        if op in ("pause", "unpause"):
            return await link.request(op)
        if op == "vcpu_set":
            count = args["count"]
            problem = vcpu_count_problem(count, record.config.maxvcpus_or_vcpus)
            if problem:
                raise PvtuiError(f"Cannot give {name} {count} vCPUs", problem)
            return await link.request("vcpu_set", count=count)
        if op == "vcpu_list":
            await self._refresh(record)
            return (record.stats or {}).get("vcpus", [])
        if op == "vcpu_pin":
            try:
                cpus = set(parse_cpu_list(args["cpus"])) or None
            except ValueError as exc:
                raise ProtocolError("bad_args", "Bad CPU list", str(exc)) from None
            admission.check_cpus(cpus, f"{name} vCPU {args['vcpu']}")
            return await link.request("vcpu_pin", vcpu=args["vcpu"], cpus=sorted(cpus) if cpus else None)
        if op == "sched_credit":
            weight = args.get("weight", record.weight)
            cap = args.get("cap", record.cap)
            if record.pid is None:
                raise PvtuiError(f"{name} has no monitor", "Nothing to schedule.")
            if record.cpu_attached is not None:
                await record.cpu_attached
            self.cpu.apply(name, record.pid, weight, cap)
            record.weight, record.cap = weight, cap
            return {"name": name, "weight": weight, "cap": cap, "backend": self.cpu.backend}
        if op == "mem_set" or op == "mem_max":
            size = _size(args["size"])
            memory = (record.stats or {}).get("memory") or {}
            if op == "mem_set":
                admission.check_memory(size - memory.get("held_bytes", 0), f"{name}'s memory target")
                return await link.request("mem_set", bytes=size)
            admission.check_memory(size - memory.get("present_bytes", 0), f"growing {name}")
            return await link.request("mem_max", bytes=size)
        if op == "console":
            return await link.request("console", offset=args.get("offset", 0))
        if op == "hypercalls":
            return await link.request("hypercalls", after=args.get("after", 0), limit=args.get("limit", 1000))
        raise ProtocolError("unknown_op", "Unknown request", op)

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


class _CpuMeter:
    """pvd's own CPU % and the host's, over the last interval of at least a second.

    Read at every ``host`` request and stats round; the figures move only when
    a second has passed, so a burst of requests never yields a rate over a
    few milliseconds. ``None`` before the first whole interval.
    """

    def __init__(self) -> None:
        self._base = self.last = self._read()
        self.own_percent: float | None = None
        self.host_percent: float | None = None

    @staticmethod
    def _read() -> tuple[float, float, float, float]:
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        return time.monotonic(), time.process_time(), busy, sum(times)

    def update(self) -> None:
        now = self.last = self._read()
        then = self._base
        if now[0] - then[0] < 1.0:
            return
        self.own_percent = round(100 * max(0.0, now[1] - then[1]) / (now[0] - then[0]), 3)
        total = now[3] - then[3]
        self.host_percent = round(100 * max(0.0, now[2] - then[2]) / total, 1) if total > 0 else None
        self._base = now


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _size(value: int | str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ProtocolError("bad_args", "Bad size", str(exc)) from None
