"""pvd: the local engine daemon.

Serves clients on ``pvd.sock`` (0600 in a 0700 directory, peer uid checked
with SO_PEERCRED), keeps the registry of domains (each a monitor process),
checks every request against the host before anything moves, applies
``on_crash`` when a monitor dies, reattaches running monitors when it
restarts, starts ``autostart`` domains, polls stats once a second and fans
events out to subscribed clients.

This module is the requests: every op pvd answers is one ``@PVD_OPS.op``
method below (``docs/daemon.md``); the monitors are in ``monitors.py``, the
figures in ``stats.py``, the shared state in ``records.py``.
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
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from pvtui import __version__
from pvtui.concurrency import each_at_most
from pvtui.daemon import admission, paths, protocol
from pvtui.daemon.cpucontrol import CpuControl
from pvtui.daemon.history import HostHistory
from pvtui.daemon.instance import take_lock
from pvtui.daemon.journal import Journal
from pvtui.daemon.moves import PvdMoves
from pvtui.daemon.oom import OomWitness
from pvtui.daemon.ops import PVD_OPS
from pvtui.daemon.protocol import ProtocolError, RawJson
from pvtui.daemon.records import TOPICS, ClientConn, DomainRecord
from pvtui.daemon.serve import serve_requests
from pvtui.daemon.stats import _CpuMeter
from pvtui.daemon.zygote import Zygote
from pvtui.domain.cpuset import parse_cpu_list
from pvtui.domain.limits import SHUTDOWN_TIMEOUT_S, vcpu_count_problem
from pvtui.domain.loader import DomainFileError, load_domain_file, parse_domain_text
from pvtui.domain.units import parse_size
from pvtui.errors import PvtuiError

log = logging.getLogger("pvd")

NUM = (int, float)
SIZE = (int, str)
#: The op table, for tests and docs (each op is declared by its handler below).
OPS = PVD_OPS

#: How often pvd checks that its socket is still where clients look for it.
RUNTIME_CHECK_S = 1.0
#: Domains ``engine stop --destroy-domains`` destroys at once (each is mostly waiting for its monitor to exit).
DESTROY_PARALLEL = 16


class Pvd(PvdMoves):
    def __init__(
        self, zygote: Zygote, domains_dir: Path | None, overcommit: float = 1.0, locks: list[TextIO] | None = None
    ) -> None:
        self.zygote = zygote
        self._locks = locks or []
        self._server: asyncio.AbstractServer | None = None
        self._socket_inode = 0
        self.memory = admission.MemoryLedger.for_host(overcommit)
        self.oom = OomWitness()
        #: The host's last ten minutes (CPU, memory) for the home screen's plots.
        self.host_history = HostHistory()
        self.journal = Journal(paths.runtime_dir() / "journal.jsonl")
        self.domains_dir = domains_dir
        self.records: dict[str, DomainRecord] = {}
        self.clients: set[ClientConn] = set()
        self.cpu = CpuControl(instance=hashlib.sha1(str(paths.runtime_dir()).encode()).hexdigest()[:8])
        self.started = time.time()
        self._stop = asyncio.Event()
        self._registry_lock = asyncio.Lock()
        self._last_domid = 0
        self._creating: dict[str, tuple[int, int]] = {}
        self._zygote_lock = asyncio.Lock()
        self._zygote_stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._zygote_tag = 0
        self._zygote_waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._zygote_dead: PvtuiError | None = None
        self._hypercall_tasks: dict[str, asyncio.Task[None]] = {}
        self._restarting: dict[str, asyncio.Future[DomainRecord | None]] = {}
        self._detaching: set[asyncio.Task[None]] = set()
        self._cpu_meter = _CpuMeter()

    # --- lifetime -------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self._zygote_stream = await asyncio.open_connection(sock=self.zygote.sock)
        zygote_answers = asyncio.create_task(self._zygote_answers())
        # Reattach before listening, so no client sees a half-known registry.
        await self._reattach()
        sock = paths.socket_path()
        await self._listen()
        log.info("pvd %s listening on %s (cpu control: %s)", __version__, sock, self.cpu.backend)
        await self._autostart()
        poller = asyncio.create_task(self._poll_stats())
        watcher = asyncio.create_task(self._keep_reachable())
        await self._stop.wait()
        poller.cancel()
        watcher.cancel()
        zygote_answers.cancel()
        if self._server is not None:
            self._server.close()
        if self._detaching:
            await asyncio.wait(self._detaching, timeout=5)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        for record in self.records.values():
            if record.link:
                record.link.close()
        log.info("pvd stopped; %d domains keep running", len(self.records))

    async def _listen(self) -> None:
        """Bind pvd's socket (replacing a stale one) and remember which file it is."""
        sock = paths.socket_path()
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(sock), limit=protocol.MAX_MESSAGE_BYTES + 1
        )
        os.chmod(sock, 0o600)
        self._socket_inode = sock.stat().st_ino

    async def _keep_reachable(self) -> None:
        """Once a second: is our socket still where clients look? If not, put it back.

        The runtime directory can vanish under pvd (``$XDG_RUNTIME_DIR`` is
        removed at logout, a cleaner empties ``/tmp``). pvd then recreates the
        directory, its socket, its pid file and every monitor's state file (a
        monitor's socket is an abstract name, which nothing removes), so its
        domains stay reachable, and the next verb finds this
        pvd instead of starting a second one. The instance lock lives outside
        the directory (:func:`paths.instance_lock_path`), so even between the
        loss and the repair a second pvd cannot start.
        """
        while True:
            await asyncio.sleep(RUNTIME_CHECK_S)
            try:
                if paths.socket_path().stat().st_ino == self._socket_inode:
                    continue
            except OSError:
                pass
            try:
                await self._republish()
            except (OSError, PvtuiError) as exc:
                log.error("cannot recreate %s: %s; retrying in %gs", paths.runtime_dir(), exc, RUNTIME_CHECK_S)

    async def _republish(self) -> None:
        paths.ensure_private_dir(paths.runtime_dir())
        paths.ensure_private_dir(paths.domains_dir())
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.close()  # the next record reopens the file at its path
        log.warning("runtime directory %s or pvd's socket vanished; recreating them", paths.runtime_dir())
        if len(self._locks) > 1:
            self._locks[1].close()
            self._locks[1] = take_lock(paths.lock_path())
        if self._server is not None:
            self._server.close()  # connected clients stay connected
        await self._listen()
        # Monitors' sockets are abstract names (nothing to recreate); their state
        # files are pvd's to write back, as a monitor without root cannot.
        for record in list(self.records.values()):
            if record.pid is not None and record.state != "crashed":
                created = (record.stats or {}).get("created", self.started)
                state = {**asdict(record.spec), "pid": record.pid, "created": created}
                paths.write_atomic(paths.monitor_state(record.name), json.dumps(state), durable=False)

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
            await serve_requests(reader, writer, PVD_OPS, self, client, log, side_by_side=True)
        finally:
            self.clients.discard(client)
            writer.close()

    def _fresh(self, name: str, result: Any) -> Any:
        """The monitor answered with its stats after a change: ``list`` shows it at once."""
        record = self.records.get(name)
        if record is not None and isinstance(result, dict):
            record.rates.add(result)
            record.rates.annotate(result)
            record.stats = result
            record.state = result.get("state", record.state)
        return result

    # --- the engine ---------------------------------------------------------------------
    @PVD_OPS.op("hello")
    async def op_hello(self, client: ClientConn, args: dict[str, Any]) -> Any:
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
            # What this engine can do for a client choosing how to move a domain.
            "features": ["save", "restore", "migrate", "migrate_out", "create_text"],
        }

    @PVD_OPS.op("host")
    async def op_host(self, client: ClientConn, args: dict[str, Any]) -> Any:
        return self.host_info()

    @PVD_OPS.op("list", {"fresh?": bool})
    async def op_list(self, client: ClientConn, args: dict[str, Any]) -> Any:
        if args.get("fresh"):
            await self._refresh_all()
        rows = [r.summary_json() for r in sorted(self.records.values(), key=lambda r: r.spec.domid)]
        rows += [json.dumps(row).encode() for row in self.suspended() if row["name"] not in self.records]
        return RawJson(b"[%s]" % b",".join(rows))

    @PVD_OPS.op("subscribe", {"topics": list, "domains?": list})
    async def op_subscribe(self, client: ClientConn, args: dict[str, Any]) -> Any:
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

    @PVD_OPS.op("create", {"path?": str, "text?": str, "source?": str}, changes=True)
    async def op_create(self, client: ClientConn, args: dict[str, Any]) -> Any:
        """From a file on pvd's host (``path``), or a definition's text sent by a client on another
        host (``text``; ``source`` names it in errors), kept in the runtime directory."""
        if ("path" in args) == ("text" in args):
            raise ProtocolError("bad_args", "Give path or text", "create takes a definition's path or its text.")
        try:
            if "path" in args:
                config = load_domain_file(args["path"])
                definition = str(Path(args["path"]).resolve())
            else:
                config = parse_domain_text(args["text"], args.get("source", "<sent>"))
                definition = None
        except DomainFileError as exc:
            raise ProtocolError("invalid", exc.title, exc.message) from None
        if definition is None:
            kept = paths.runtime_dir() / "definitions" / f"{config.name}.yaml"
            paths.ensure_private_dir(kept.parent)
            paths.write_atomic(kept, args["text"])
            definition = str(kept)
        record = await self._create(config, definition)
        return record.summary()

    @PVD_OPS.op("events", {"domain?": str, "since?": NUM, "limit?": int})
    async def op_events(self, client: ClientConn, args: dict[str, Any]) -> Any:
        """The journal (docs/daemon.md): oldest first, for one domain or all, since a time."""
        return self.journal.read(args.get("domain"), args.get("since"), min(int(args.get("limit", 1000)), 100_000))

    def journal_request(self, op: str, args: dict[str, Any], error: Exception | None, result: Any) -> None:
        """Every request that changes something, done or refused (called by the serve loop)."""
        if not PVD_OPS.ops[op].changes:
            return
        detail = {k: v for k, v in args.items() if k not in ("name", "text", "meta")}
        name = args.get("name") or (result.get("name") if isinstance(result, dict) else None)
        if error is None:
            entry = self.journal.record(name, f"request:{op}", **detail)
        else:
            title, message = getattr(error, "title", type(error).__name__), getattr(error, "message", str(error))
            entry = self.journal.record(name, f"refused:{op}", **detail, title=title, message=message)
        self._broadcast("journal", name, entry)

    @PVD_OPS.op("host_history")
    async def op_host_history(self, client: ClientConn, args: dict[str, Any]) -> Any:
        return self.host_history.export()

    @PVD_OPS.op("history", {"name": str})
    async def op_history(self, client: ClientConn, args: dict[str, Any]) -> Any:
        """A domain's last ten minutes of counters, kept by its monitor (docs/daemon.md)."""
        record = self._record(args["name"])
        if record.link is None:
            raise PvtuiError(f"{record.name} has no running monitor", "Its history ended with it.")
        return await record.link.request("history")

    @PVD_OPS.op("engine_stop", {"destroy_domains?": bool}, changes=True)
    async def op_engine_stop(self, client: ClientConn, args: dict[str, Any]) -> Any:
        if args.get("destroy_domains"):
            await self._destroy_all(list(self.records.values()))
        asyncio.get_running_loop().call_later(0.05, self._stop.set)
        return {"stopping": True, "domains_left": len(self.records)}

    async def _destroy_all(self, records: list[DomainRecord]) -> None:
        """Destroy ``records`` ``DESTROY_PARALLEL`` at a time.

        A destroy is mostly waiting: the monitor says goodbye, tears down its
        VM and exits, and pvd waits for its socket to close (~65 ms each).
        One after another, stopping the engine with a thousand domains took
        over a minute; overlapped, the wait is the host's teardown work.
        """

        async def destroy(record: DomainRecord) -> None:
            if self.records.get(record.name) is record:
                await self._destroy(record)

        outcomes = await each_at_most(DESTROY_PARALLEL, records, destroy, return_exceptions=True)
        for record, outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, BaseException):  # the others go on; the reply counts what is left
                log.error("engine stop could not destroy %s: %r", record.name, outcome)

    # --- one domain ---------------------------------------------------------------------
    @PVD_OPS.op("info", {"name": str})
    async def op_info(self, client: ClientConn, args: dict[str, Any]) -> Any:
        record = self._record(args["name"])
        await self._refresh(record)
        return {**record.summary(), "stats": record.stats, "op_rates": record.rates.op_rates}

    @PVD_OPS.op("destroy", {"name": str}, changes=True)
    async def op_destroy(self, client: ClientConn, args: dict[str, Any]) -> Any:
        name = args["name"]
        restarting = self._restarting.get(name)
        if name not in self.records and restarting is not None:
            # A destroy while on_crash restarts the domain wins: wait for the new
            # monitor, then destroy it, rather than answer "no such domain" and
            # let the domain come back behind the operator's back.
            restarted = await restarting
            if restarted is not None and self.records.get(name) is restarted:
                return await self._destroy(restarted)
        return await self._destroy(self._record(name))

    @PVD_OPS.op("shutdown", {"name": str, "timeout?": NUM, "wait?": bool}, changes=True)
    async def op_shutdown(self, client: ClientConn, args: dict[str, Any]) -> Any:
        return await self._ask_guest(args["name"], "poweroff", args)

    @PVD_OPS.op("reboot", {"name": str}, changes=True)
    async def op_reboot(self, client: ClientConn, args: dict[str, Any]) -> Any:
        return await self._ask_guest(args["name"], "reboot", args)

    async def _ask_guest(self, name: str, reason: str, args: dict[str, Any]) -> Any:
        record, link = self._live(name)
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

    @PVD_OPS.op("pause", {"name": str}, fresh_stats=True, changes=True)
    async def op_pause(self, client: ClientConn, args: dict[str, Any]) -> Any:
        return self._fresh(args["name"], await self._live(args["name"])[1].request("pause"))

    @PVD_OPS.op("unpause", {"name": str}, fresh_stats=True, changes=True)
    async def op_unpause(self, client: ClientConn, args: dict[str, Any]) -> Any:
        return self._fresh(args["name"], await self._live(args["name"])[1].request("unpause"))

    @PVD_OPS.op("vcpu_set", {"name": str, "count": int}, fresh_stats=True, changes=True)
    async def op_vcpu_set(self, client: ClientConn, args: dict[str, Any]) -> Any:
        name, count = args["name"], args["count"]
        record, link = self._live(name)
        problem = vcpu_count_problem(count, record.config.maxvcpus_or_vcpus)
        if problem:
            raise PvtuiError(f"Cannot give {name} {count} vCPUs", problem)
        return self._fresh(name, await link.request("vcpu_set", count=count))

    @PVD_OPS.op("vcpu_list", {"name": str})
    async def op_vcpu_list(self, client: ClientConn, args: dict[str, Any]) -> Any:
        record, _ = self._live(args["name"])
        await self._refresh(record)
        return (record.stats or {}).get("vcpus", [])

    @PVD_OPS.op("vcpu_pin", {"name": str, "vcpu": int, "cpus": (str, int)}, fresh_stats=True, changes=True)
    async def op_vcpu_pin(self, client: ClientConn, args: dict[str, Any]) -> Any:
        name = args["name"]
        _, link = self._live(name)
        try:
            cpus = set(parse_cpu_list(args["cpus"])) or None
        except ValueError as exc:
            raise ProtocolError("bad_args", "Bad CPU list", str(exc)) from None
        admission.check_cpus(cpus, f"{name} vCPU {args['vcpu']}")
        return self._fresh(name, await link.request("vcpu_pin", vcpu=args["vcpu"], cpus=sorted(cpus) if cpus else None))

    @PVD_OPS.op("sched_credit", {"name": str, "weight?": int, "cap?": int}, changes=True)
    async def op_sched_credit(self, client: ClientConn, args: dict[str, Any]) -> Any:
        name = args["name"]
        record, _ = self._live(name)
        weight = args.get("weight", record.weight)
        cap = args.get("cap", record.cap)
        if record.pid is None:
            raise PvtuiError(f"{name} has no monitor", "Nothing to schedule.")
        if record.cpu_attached is not None:
            await record.cpu_attached
        self.cpu.apply(name, record.pid, weight, cap)
        record.weight, record.cap = weight, cap
        return {"name": name, "weight": weight, "cap": cap, "backend": self.cpu.backend}

    @PVD_OPS.op("mem_set", {"name": str, "size": SIZE}, fresh_stats=True, changes=True)
    async def op_mem_set(self, client: ClientConn, args: dict[str, Any]) -> Any:
        return await self._memory(args, "mem_set", "{name}'s memory target")

    @PVD_OPS.op("mem_max", {"name": str, "size": SIZE}, fresh_stats=True, changes=True)
    async def op_mem_max(self, client: ClientConn, args: dict[str, Any]) -> Any:
        return await self._memory(args, "mem_max", "growing {name}")

    async def _memory(self, args: dict[str, Any], op: str, what: str) -> Any:
        """A memory request, admitted against what it adds to the domain's committed memory.

        The extra bytes count as committed from the check until the monitor's
        reply (with the new present size) is in the stats, so two requests in
        flight cannot both take the last free memory.
        """
        name, size = args["name"], _size(args["size"])
        record, link = self._live(name)
        extra = size - record.committed_bytes
        self.admit_memory(extra, what.format(name=name))
        record.pending_bytes += max(0, extra)
        try:
            return self._fresh(name, await link.request(op, bytes=size))
        finally:
            record.pending_bytes -= max(0, extra)

    @PVD_OPS.op("console", {"name": str, "offset?": int})
    async def op_console(self, client: ClientConn, args: dict[str, Any]) -> Any:
        return await self._live(args["name"])[1].request("console", offset=args.get("offset", 0))

    @PVD_OPS.op("hypercalls", {"name": str, "after?": int, "limit?": int})
    async def op_hypercalls(self, client: ClientConn, args: dict[str, Any]) -> Any:
        _, link = self._live(args["name"])
        return await link.request("hypercalls", after=args.get("after", 0), limit=args.get("limit", 1000))


def _size(value: int | str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ProtocolError("bad_args", "Bad size", str(exc)) from None
