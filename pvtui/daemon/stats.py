"""pvd's figures: every monitor's stats once a second, rates, the host line, event fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import psutil

from pvtui.daemon import paths, protocol
from pvtui.daemon.link import MonitorGone
from pvtui.daemon.protocol import ProtocolError
from pvtui.daemon.records import DomainRecord, PvdState

log = logging.getLogger("pvd")

STATS_INTERVAL_S = 1.0
STATS_BATCH = 16
HYPERCALL_POLL_S = 0.25
MAX_CLIENT_BACKLOG = 8 << 20


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


class PvdStats(PvdState):
    """Stats rounds, rates, the host summary, and events to subscribed clients."""

    _cpu_meter: _CpuMeter

    async def _refresh(self, record: DomainRecord) -> None:
        """Ask the monitor for its figures now (a client asked for fresh ones)."""
        if record.link is None:
            return
        try:
            stats = await record.link.request("stats")
        except (TimeoutError, MonitorGone, ProtocolError):
            return
        self.take_stats(record, stats)

    def take_stats(self, record: DomainRecord, stats: dict[str, Any]) -> None:
        """A monitor's figures (its own report of a change, or a reply): rates move, the next round sends them."""
        record.rates.add(stats)
        record.rates.annotate(stats)
        record.stats = stats
        record.stats_changed = True
        record.state = stats["state"] if record.link is not None else record.state

    async def _poll_stats(self) -> None:
        """Once a second: a ``stats`` event for each domain whose figures changed, then a ``host`` event.

        Monitors report their own changes (an idle domain's stand still, and
        costs no message at all; pvtui/daemon/monitor.py); pvd no longer asks
        every monitor every second. Events go out ``STATS_BATCH`` at a time
        with a yield between batches, so a round never holds client requests
        back.
        """
        while True:
            started = time.monotonic()
            self.oom.sample()
            host = self.host_info()
            memory_used = host["memory_total"] - host["memory_available"]
            self.host_history.add(host["sampled_s"], host["cpu_percent"], memory_used, host["memory_committed"])
            changed = [r for r in self.records.values() if r.stats_changed]
            for record in changed:
                record.stats_changed = False
            if any(c.topics & {"stats"} for c in self.clients):
                for first in range(0, len(changed), STATS_BATCH):
                    for record in changed[first : first + STATS_BATCH]:
                        self._broadcast("stats", record.name, record.summary())
                    await asyncio.sleep(0)
                self._broadcast("stats", None, host, kind="host")
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
        committed = self.committed_bytes()
        states: dict[str, int] = {}
        for record in self.records.values():
            states[record.state] = states.get(record.state, 0) + 1
        return {
            **host_identity(),
            "cpus": os.cpu_count() or 1,
            "sampled_s": time.monotonic(),
            "cpu_percent": self._cpu_meter.host_percent,
            "pvd_cpu_percent": self._cpu_meter.own_percent,
            # Cumulative busy and total CPU seconds of all host CPUs: a client
            # takes the host's CPU % over its own interval from two replies.
            "cpu_busy_s": round(self._cpu_meter.last[2], 2),
            "cpu_total_s": round(self._cpu_meter.last[3], 2),
            "memory_total": memory.total,
            "memory_available": memory.available,
            "memory_given": given,
            "memory_reserved": self.memory.reserve_bytes,  # what admission control keeps for the host
            # Admission control's ledger: what running domains may touch, what pvd
            # lets them commit, and how far past the host's backing that goes.
            "memory_committed": committed,
            "memory_commit_limit": self.memory.limit_bytes,
            "overcommit": self.memory.overcommit,
            "overcommitted_percent": round(self.memory.overcommitted_percent(committed), 1),
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

    @staticmethod
    def _worth_journalling(topic: str, data: dict[str, Any]) -> bool:
        """Lifecycle always; a state change (not the running/blocked flapping); a migration's end."""
        if topic == "migration":
            return data.get("stage") in ("done", "failed")
        if topic == "state":
            return data.get("state") not in ("running", "blocked") or bool(data.get("detail"))
        return True

    def _broadcast(self, topic: str, domain: str | None, data: Any, kind: str | None = None) -> None:
        """Send an event to every client subscribed to ``topic`` (``kind`` names it, default the topic).

        What happens to a domain (state and lifecycle events, a migration's end) goes into
        the journal too, and to the clients following it (``journal`` topic)."""
        if topic in JOURNALLED and isinstance(data, dict) and self._worth_journalling(topic, data):
            entry = self.journal.record(domain, f"{topic}:{data.get('what') or data.get('state') or data.get('stage')}",
                                        **{k: v for k, v in data.items() if k != "what"})  # fmt: skip
            self._broadcast("journal", domain, entry)
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


#: Topics whose events are journalled (stats, console and hypercall records are not).
JOURNALLED = {"state", "lifecycle", "migration"}


@functools.cache
def host_identity() -> dict[str, str]:
    """Which host and which pvd this is: two hosts (or two pvds on one) are never mistaken for one.

    ``host_id`` is the machine's id (``/etc/machine-id``, else the boot id)
    with this pvd's runtime directory: stable across pvd restarts, different
    for a second pvd on the same machine.
    """
    machine = ""
    for source in ("/etc/machine-id", "/var/lib/dbus/machine-id", "/proc/sys/kernel/random/boot_id"):
        with contextlib.suppress(OSError):
            machine = Path(source).read_text().strip()
            if machine:
                break
    runtime = str(paths.runtime_dir().resolve())
    return {
        "host_id": hashlib.sha256(f"{machine}:{runtime}".encode()).hexdigest()[:16],
        "hostname": socket.gethostname(),
    }
