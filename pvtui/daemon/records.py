"""What pvd keeps per domain and per client, and the state every part of pvd shares.

``PvdState`` declares the shared fields; ``PvdStats`` (``stats.py``),
``PvdMonitors`` (``monitors.py``) and ``Pvd`` (``server.py``) build on it,
one concern each: the 1 Hz figures, the monitor processes, the requests.
"""

from __future__ import annotations

import asyncio
import json
import operator
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pvtui.daemon.admission import MemoryLedger
from pvtui.daemon.cpucontrol import CpuControl
from pvtui.daemon.history import HostHistory
from pvtui.daemon.journal import Journal
from pvtui.daemon.link import MonitorLink
from pvtui.daemon.monitor import MonitorSpec
from pvtui.daemon.oom import OomWitness
from pvtui.daemon.rates import DomainRates
from pvtui.daemon.zygote import Zygote
from pvtui.domain.model import DomainSummary, MemoryInfo
from pvtui.domain.schema import DomainConfig
from pvtui.engine.lifecycle import RestartGuard
from pvtui.errors import PvtuiError

TOPICS = {"stats", "state", "console", "hypercalls", "lifecycle", "migration", "journal"}


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class _CachedSummary:
    """A domain's summary as last built, and what it was built from."""

    stats: dict[str, Any] | None
    migration: dict[str, Any] | None
    key: tuple[object, ...]
    fields: dict[str, Any]
    #: ``fields`` but the uptime and ``as_of`` as JSON, its closing brace left off.
    json_head: bytes


#: The highest domid pvd gives (Xen's DOMID_FIRST_RESERVED is the next: 0x7FF0).
LAST_DOMID = 0x7FEF

_committed_of = operator.attrgetter("committed_bytes")

#: What a domain's committed memory is worked out from (DomainRecord.__setattr__).
_COMMITTED_INPUTS = frozenset({"pid", "link", "state", "stats", "config", "pending_bytes"})


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
    #: Memory a request in flight (mem-max) has been admitted for but the stats do not show yet.
    pending_bytes: int = 0
    #: The last progress of a live migration of this domain (None when none runs).
    migration: dict[str, Any] | None = None
    #: New figures since the last round's events (the monitor reported a change).
    stats_changed: bool = False
    _summary: _CachedSummary | None = field(default=None, repr=False)
    #: Kept up to date by ``__setattr__``: admission sums it over every domain.
    committed_bytes: int = field(default=0, init=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def __post_init__(self) -> None:
        self.committed_bytes = self._work_out_committed_bytes()

    def __setattr__(self, name: str, value: Any) -> None:
        """Setting what :attr:`committed_bytes` is made of works it out again.

        Admission sums it over every domain for each create; kept, that sum
        costs a few microseconds at 1,000 domains instead of milliseconds.
        """
        object.__setattr__(self, name, value)
        if name in _COMMITTED_INPUTS and "committed_bytes" in self.__dict__:
            object.__setattr__(self, "committed_bytes", self._work_out_committed_bytes())

    def _work_out_committed_bytes(self) -> int:
        """Guest memory this domain may touch: what admission control counts against the host.

        The present size (boot memory plus hot-added), not the balloon target: a
        guest can take back ballooned frames whenever its target rises. A crashed
        domain whose monitor is gone (kept by ``on_crash: preserve``) holds nothing.
        """
        if self.pid is None or (self.link is None and self.state == "crashed"):
            return 0
        present = ((self.stats or {}).get("memory") or {}).get("present_bytes", 0)
        return max(present, self.config.memory) + self.pending_bytes

    def _uptime_now(self, stats: dict[str, Any]) -> float:
        """Uptime as of now: the last report's, plus the time since (a quiet domain reports rarely)."""
        uptime = float(stats.get("uptime_s", 0.0))
        sampled = stats.get("sampled_s")
        if uptime and sampled and self.link is not None and self.state not in ("crashed", "shutdown", "dead"):
            uptime += max(0.0, time.monotonic() - float(sampled))
        return uptime

    def summary(self) -> dict[str, Any]:
        """The domain as ``list`` and the ``stats`` events send it: a :class:`DomainSummary`.

        Built once per new figures (or state, weight, cap...) and kept; each
        call copies it with the uptime and ``as_of`` of now. A thousand
        domains' ``list`` spent ~140 µs a domain building them afresh.
        """
        cached = self._cached_summary()
        return {**cached.fields, "uptime_s": round(self._uptime_now(self.stats or {}), 2), "as_of": time.monotonic()}

    def summary_json(self) -> bytes:
        """:meth:`summary` as JSON, from the kept encoding: a thousand domains' ``list`` spent
        ~14 ms encoding the same figures again every time."""
        cached = self._cached_summary()
        uptime = round(self._uptime_now(self.stats or {}), 2)
        return b'%s,"uptime_s":%r,"as_of":%r}' % (cached.json_head, uptime, time.monotonic())

    def _cached_summary(self) -> _CachedSummary:
        key = (self.state, self.pid, self.weight, self.cap, self.crash_reason, self.link is None)
        cached = self._summary
        if (
            cached is None
            or cached.stats is not self.stats
            or cached.migration is not self.migration
            or cached.key != key
        ):
            # The cache holds the stats and migration dicts themselves: their identities cannot be
            # reused by newer ones while it does.
            fields = self._build_summary()
            head = {k: v for k, v in fields.items() if k not in ("uptime_s", "as_of")}
            json_head = json.dumps(head, separators=(",", ":")).encode()[:-1]  # without its closing brace
            cached = self._summary = _CachedSummary(self.stats, self.migration, key, fields, json_head)
        return cached

    def _build_summary(self) -> dict[str, Any]:
        stats = self.stats or {}
        summary = DomainSummary(
            name=self.name,
            domid=self.spec.domid,
            state=self.state,
            pid=self.pid,
            cpu_s=round(sum(v["cpu_time_s"] for v in stats.get("vcpus", [])), 3),
            cpu_percent=_rounded(self.rates.cpu_percent, 2),
            engine_cpu_percent=_rounded(self.rates.engine_cpu_percent, 3),
            cpu_wait_percent=_rounded(self.rates.cpu_wait_percent, 2),
            vcpus_online=stats.get("online_vcpus", 0),
            vcpus_max=self.config.maxvcpus_or_vcpus,
            memory=MemoryInfo.from_dict(stats.get("memory")),
            hypercalls_total=stats.get("hypercalls_total", 0),
            hypercalls_per_s=_rounded(self.rates.hypercalls_per_s, 1),
            uptime_s=round(self._uptime_now(stats), 2),
            weight=self.weight,
            cap=self.cap,
            definition=self.spec.definition,
            restarts=stats.get("restarts", 0),
            crash_reason=self.crash_reason or stats.get("crash_reason"),
            personality=stats.get("personality", "pvtui"),
            # pvd's clock when this was put together: a client holding two
            # summaries (an event in flight, a reply) keeps the newer one.
            as_of=time.monotonic(),
            # When the monitor read the counters above (cpu_s, hypercalls_total):
            # a client taking its own rates divides by the difference of these.
            sampled_s=stats.get("sampled_s"),
            migration=self.migration,
        )
        return asdict(summary)


@dataclass(eq=False)
class ClientConn:
    writer: asyncio.StreamWriter
    topics: set[str] = field(default_factory=set)
    domains: set[str] | None = None
    #: Set by a request that turns the connection into a byte stream: runs once its reply is sent.
    takeover: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] | None = None

    def wants(self, topic: str, domain: str | None) -> bool:
        return topic in self.topics and (self.domains is None or domain is None or domain in self.domains)


class PvdState:
    """The fields every part of pvd reads and writes (one event loop: no locks but the two below)."""

    zygote: Zygote
    domains_dir: Path | None
    records: dict[str, DomainRecord]
    clients: set[ClientConn]
    cpu: CpuControl
    memory: MemoryLedger
    oom: OomWitness
    journal: Journal
    host_history: HostHistory
    started: float
    _stop: asyncio.Event
    _registry_lock: asyncio.Lock
    #: The highest domid this pvd has given out or found on a reattached domain (see _next_domid).
    _last_domid: int
    #: Creates under way (name -> the memory admitted for it, its domid): held while its monitor starts.
    _creating: dict[str, tuple[int, int]]
    _zygote_lock: asyncio.Lock
    _zygote_stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None
    _zygote_tag: int
    _zygote_waiting: dict[int, asyncio.Future[dict[str, Any]]]
    _zygote_dead: PvtuiError | None
    _hypercall_tasks: dict[str, asyncio.Task[None]]
    #: Domains whose monitor died and that on_crash is restarting: the new record when it is up (None: failed).
    _restarting: dict[str, asyncio.Future[DomainRecord | None]]
    _detaching: set[asyncio.Task[None]]

    def committed_bytes(self) -> int:
        """Guest memory every running domain may touch (what admission counts)."""
        return sum(map(_committed_of, self.records.values())) + sum(
            memory for memory, _domid in self._creating.values()
        )

    def _next_domid(self) -> int:
        """A domid for a new domain: one above the highest given out so far, as Xen hands them out
        (a destroyed domain's domid is not given to the next one at once), so O(1) per create;
        past :data:`LAST_DOMID` it starts again from the lowest one free."""
        if self._last_domid < LAST_DOMID:
            self._last_domid += 1
            return self._last_domid
        taken = {r.spec.domid for r in self.records.values()} | {d for _, d in self._creating.values()}
        free = next((d for d in range(1, LAST_DOMID + 1) if d not in taken), None)
        if free is None:
            raise PvtuiError("No domid left", f"All {LAST_DOMID} domids are in use; destroy a domain first.")
        return free

    def _saw_domid(self, domid: int) -> None:
        """A domain with ``domid`` exists (reattached): new domids start above it."""
        self._last_domid = max(self._last_domid, domid)

    def admit_memory(self, extra_bytes: int, what: str) -> None:
        """Refuse ``extra_bytes`` more committed memory if the host cannot back it (raises :class:`AdmissionError`)."""
        self.memory.check(self.committed_bytes(), extra_bytes, what)
