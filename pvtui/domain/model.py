"""The shapes of what the engine reports, declared once: the engine builds them, pvd sends
them as JSON, the client turns every reply back into them, the CLI and the UI read them.

Engine-free and Textual-free (plain dataclasses). ``from_dict`` keeps only the
keys a shape knows, so an older client reads a newer pvd. A new reply field
is one line here plus the line that fills it (``docs/daemon.md``).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import cache
from typing import Any, Self, TypeVar

T = TypeVar("T")


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


def _pick(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Only the keys this dataclass knows: a newer pvd may send more."""
    names = _field_names(cls)
    return {k: v for k, v in data.items() if k in names}


@cache
def _defaults(cls: type) -> tuple[frozenset[str], dict[str, Any]]:
    """The fields a dataclass needs, and the defaults of the rest (factories called once: the
    shapes are frozen, so one default instance can be shared)."""
    required, defaults = set(), {}
    for f in fields(cls):
        if f.default is not MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not MISSING:
            defaults[f.name] = f.default_factory()
        else:
            required.add(f.name)
    return frozenset(required), defaults


def _made_from(cls: type[T], data: dict[str, Any]) -> T:
    """``cls(**data)`` for a row of a long reply, without the frozen ``__init__``.

    A frozen dataclass sets each field through ``object.__setattr__``: a
    thousand-domain ``list`` spent 15 ms in those calls alone. The shapes
    have no ``__post_init__``, so filling the instance's dict is the same
    object. Keys it does not know (a newer pvd's) are left out, as
    :func:`_pick` does; a missing required one fails as the constructor would.
    """
    shape: type = cls
    required, defaults = _defaults(shape)
    if not data.keys() <= _field_names(shape):
        data = _pick(cls, data)
    if not required <= data.keys():
        return cls(**data)  # raises the constructor's TypeError
    made = object.__new__(cls)
    made.__dict__.update(defaults)
    made.__dict__.update(data)
    return made


class _Shape:
    """A reply shape whose fields are plain JSON values: ``from_dict`` keeps the keys it knows."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return _made_from(cls, data)


@dataclass(frozen=True)
class MemoryInfo:
    boot_bytes: int = 0
    present_bytes: int = 0
    max_bytes: int = 0
    target_bytes: int = 0
    held_bytes: int = 0
    guest_used_bytes: int = 0
    rss_bytes: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MemoryInfo:
        return _made_from(cls, data or {})


@dataclass(frozen=True)
class VcpuInfo(_Shape):
    id: int
    state: str
    online: bool
    cpu_time_s: float
    hypercalls: int
    affinity: list[int] | None = None
    #: The host CPU its thread last ran on (the monitor fills it in).
    host_cpu: int | None = None
    #: Over pvd's last sampling interval; ``None`` until two samples exist.
    cpu_percent: float | None = None
    #: Seconds the vCPU thread waited, runnable, for a host CPU (Xen's "runnable" runstate).
    wait_time_s: float = 0.0


@dataclass(frozen=True)
class DomainSummary:
    name: str
    domid: int
    state: str
    pid: int | None = None
    cpu_s: float = 0.0
    #: Guest time: the vCPU threads' CPU over pvd's last interval (``None`` until two samples).
    cpu_percent: float | None = None
    #: The monitor process beyond its vCPU threads: what running this domain costs the engine.
    engine_cpu_percent: float | None = None
    #: Runnable vCPUs waiting for a host CPU (% of one CPU): used + waited is the domain's demand.
    cpu_wait_percent: float | None = None
    vcpus_online: int = 0
    vcpus_max: int = 0
    memory: MemoryInfo = field(default_factory=MemoryInfo)
    hypercalls_total: int = 0
    hypercalls_per_s: float | None = None
    uptime_s: float = 0.0
    weight: int = 256
    cap: int = 0
    definition: str | None = None
    restarts: int = 0
    crash_reason: str | None = None
    as_of: float = 0.0
    sampled_s: float | None = None
    #: The guest ABI: "pvtui" (our own) or "xen" (a Xen PV kernel).
    personality: str = "pvtui"
    #: A save or live migration under way: its last progress report (stage, round, pages_left, ...).
    migration: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainSummary:
        summary = _made_from(cls, data)
        summary.__dict__["memory"] = MemoryInfo.from_dict(data.get("memory"))
        return summary


@dataclass(frozen=True)
class HostInfo(_Shape):
    cpus: int
    #: Busy share of all host CPUs over pvd's last interval of ≥ 1 s (``None`` before one).
    cpu_percent: float | None
    memory_total: int
    memory_available: int
    memory_given: int
    domains: int
    domains_by_state: dict[str, int]
    cpu_control: str
    pvd_cpu_percent: float | None = None
    #: Memory pvd never gives to domains (the host's own reserve).
    memory_reserved: int = 0
    cpu_busy_s: float = 0.0
    cpu_total_s: float = 0.0
    #: Guest memory the running domains may touch (admission control's sum).
    memory_committed: int = 0
    #: What pvd lets domains commit: (total - reserve) x overcommit.
    memory_commit_limit: int = 0
    #: pvd's overcommit ratio (1.0: domains never commit more than the host can back).
    overcommit: float = 1.0
    #: How far the committed memory goes past what the host can back, in % of it.
    overcommitted_percent: float = 0.0
    #: Stable id of this pvd on this machine (machine id + runtime directory): two hosts never share one.
    host_id: str = ""
    #: pvd's monotonic clock when these figures were taken (the host history's time axis).
    sampled_s: float = 0.0
    #: The machine's host name.
    hostname: str = ""


@dataclass(frozen=True)
class HypercallInfo(_Shape):
    seq: int
    time_ns: int
    vcpu: int
    op: str
    args: list[int]
    result: int
    latency_ns: int
    in_multicall: bool


@dataclass(frozen=True)
class DomainStats:
    """A monitor's figures for its domain at one moment (what ``info``, ``pause``, ``vcpu_set``,
    ``mem_set`` … reply with). The engine fills the first part, the monitor the rest."""

    name: str
    state: str
    uptime_s: float
    vcpus: list[VcpuInfo]
    memory: MemoryInfo
    hypercalls_per_op: dict[str, int]
    hypercalls_total: int
    shutdown_reason: str | None = None
    crash_reason: str | None = None
    #: ``time.monotonic()`` when these figures were read: rates are taken
    #: between two samples' own times, never the time a reader received them.
    sampled_s: float = 0.0
    #: The guest ABI the kernel speaks: "pvtui" (docs/abi.md) or "xen" (Xen PV, docs/xen-abi.md).
    personality: str = "pvtui"
    domid: int = 0
    pid: int | None = None
    online_vcpus: int = 0
    max_vcpus: int = 0
    console_bytes: int = 0
    #: Console output the rate limit dropped (the guest wrote faster than the engine takes).
    console_dropped_bytes: int = 0
    last_seq: int = 0
    restarts: int = 0
    process_cpu_s: float | None = None
    hypercalls_per_vcpu: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The wire form (JSON-ready: a state enum is a str)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainStats:
        values = _pick(cls, data)
        values["vcpus"] = [VcpuInfo.from_dict(v) for v in data.get("vcpus", [])]
        values["memory"] = MemoryInfo.from_dict(data.get("memory"))
        return cls(**values)


@dataclass(frozen=True)
class DomainInfo:
    """``info``: the summary, the monitor's figures and the per-op rates of one domain."""

    summary: DomainSummary
    stats: DomainStats | None
    op_rates: dict[str, float]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainInfo:
        stats = data.get("stats")
        return cls(
            DomainSummary.from_dict(data), DomainStats.from_dict(stats) if stats else None, data.get("op_rates") or {}
        )


@dataclass(frozen=True)
class EngineHello(_Shape):
    version: str
    protocol: int
    pid: int
    uid: int
    runtime_dir: str
    domains_dir: str | None
    started: float
    domains: int
    cpu_control: str


@dataclass(frozen=True)
class ShutdownRequest(_Shape):
    """``shutdown`` / ``reboot``: what was asked, and with ``wait`` what became of it."""

    requested: str
    outcome: str | None = None


@dataclass(frozen=True)
class Destroyed(_Shape):
    name: str
    state: str


@dataclass(frozen=True)
class SchedCredit(_Shape):
    name: str
    weight: int
    cap: int
    backend: str


@dataclass(frozen=True)
class EngineStopping(_Shape):
    stopping: bool
    domains_left: int
