"""Typed views of what pvd returns (plain dataclasses built from its JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


def _pick(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Only the keys this dataclass knows: a newer pvd may send more."""
    names = _field_names(cls)
    return {k: v for k, v in data.items() if k in names}


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
        return cls(**_pick(cls, data or {}))


@dataclass(frozen=True)
class VcpuInfo:
    id: int
    state: str
    online: bool
    cpu_time_s: float
    hypercalls: int
    affinity: list[int] | None = None
    host_cpu: int | None = None
    #: Over pvd's last sampling interval; ``None`` until two samples exist.
    cpu_percent: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VcpuInfo:
        return cls(**_pick(cls, data))


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainSummary:
        values = _pick(cls, data)
        values["memory"] = MemoryInfo.from_dict(data.get("memory"))
        return cls(**values)


@dataclass(frozen=True)
class HostInfo:
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostInfo:
        return cls(**_pick(cls, data))


@dataclass(frozen=True)
class HypercallInfo:
    seq: int
    time_ns: int
    vcpu: int
    op: str
    args: list[int]
    result: int
    latency_ns: int
    in_multicall: bool

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HypercallInfo:
        return cls(**_pick(cls, data))
