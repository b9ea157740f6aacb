"""Rates from counters: CPU %, hypercalls/s, per-op and per-vCPU rates of one domain.

Pure arithmetic, no I/O. A rate is the difference of two samples divided by
the time between them, as stamped by the monitor that read them
(``sampled_s``): never by when pvd or a client received them. Until two
samples exist a rate is unknown (``None``), never zero.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: The shortest interval a rate is taken over: shorter, and one sample's
#: reading delay is a large share of it.
MIN_RATE_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Sample:
    """The counters of one stats reply."""

    sampled_s: float
    restarts: int
    vcpu_cpu_s: dict[int, float]
    wait_s: float
    process_cpu_s: float | None
    hypercalls: int
    per_op: dict[str, int]

    @classmethod
    def from_stats(cls, stats: dict[str, Any]) -> Sample:
        return cls(
            sampled_s=float(stats.get("sampled_s", 0.0)),
            restarts=int(stats.get("restarts", 0)),
            vcpu_cpu_s={int(v["id"]): float(v["cpu_time_s"]) for v in stats.get("vcpus", [])},
            wait_s=sum(float(v.get("wait_time_s", 0.0)) for v in stats.get("vcpus", [])),
            process_cpu_s=stats.get("process_cpu_s"),
            hypercalls=int(stats.get("hypercalls_total", 0)),
            per_op=dict(stats.get("hypercalls_per_op", {})),
        )

    @property
    def cpu_s(self) -> float:
        return sum(self.vcpu_cpu_s.values())


def _per_s(now: float, then: float, elapsed: float) -> float:
    return max(0.0, (now - then) / elapsed)


@dataclass
class DomainRates:
    """The latest measured rates of one domain, updated sample by sample."""

    cpu_percent: float | None = None
    vcpu_percent: dict[int, float] = field(default_factory=dict)
    #: The monitor process beyond its vCPU threads (the engine's own cost).
    engine_cpu_percent: float | None = None
    #: Its runnable vCPUs' wait for a host CPU: demand the host did not meet.
    cpu_wait_percent: float | None = None
    hypercalls_per_s: float | None = None
    op_rates: dict[str, float] = field(default_factory=dict)
    interval_s: float | None = None
    _base: Sample | None = None

    def add(self, stats: dict[str, Any]) -> None:
        """Take one stats reply; rates move once the interval since the base sample is long enough.

        A restarted guest (``restarts`` changed) or counters that went back
        start a fresh base: its new threads' times are not a continuation.
        """
        sample = Sample.from_stats(stats)
        base = self._base
        quiet_until = float(stats.get("quiet_until_s") or 0.0)
        if base is not None and base.sampled_s < quiet_until < sample.sampled_s:
            # The counters stood still until then (the monitor said nothing): the rate is over the last change.
            base = self._base = dataclasses.replace(base, sampled_s=quiet_until)
        if base is None or sample.restarts != base.restarts or sample.sampled_s <= base.sampled_s:
            self._rebase(sample)
            return
        elapsed = sample.sampled_s - base.sampled_s
        if elapsed < MIN_RATE_INTERVAL_S:
            return
        if sample.hypercalls < base.hypercalls or sample.cpu_s < base.cpu_s - 1e-6:
            self._rebase(sample)
            return
        self.interval_s = elapsed
        self.vcpu_percent = {
            vcpu: 100 * _per_s(cpu, base.vcpu_cpu_s[vcpu], elapsed)
            for vcpu, cpu in sample.vcpu_cpu_s.items()
            if vcpu in base.vcpu_cpu_s
        }
        self.cpu_percent = 100 * _per_s(sample.cpu_s, base.cpu_s, elapsed)
        self.cpu_wait_percent = 100 * _per_s(sample.wait_s, base.wait_s, elapsed)
        if sample.process_cpu_s is not None and base.process_cpu_s is not None:
            engine_now = sample.process_cpu_s - sample.cpu_s
            engine_then = base.process_cpu_s - base.cpu_s
            self.engine_cpu_percent = 100 * _per_s(engine_now, engine_then, elapsed)
        self.hypercalls_per_s = _per_s(sample.hypercalls, base.hypercalls, elapsed)
        self.op_rates = {op: _per_s(n, base.per_op.get(op, 0), elapsed) for op, n in sample.per_op.items()}
        self._base = sample

    def _rebase(self, sample: Sample) -> None:
        self._base = sample
        self.cpu_percent = self.engine_cpu_percent = self.hypercalls_per_s = self.interval_s = None
        self.cpu_wait_percent = None
        self.vcpu_percent, self.op_rates = {}, {}

    def annotate(self, stats: dict[str, Any]) -> None:
        """Write each vCPU's rate into its entry of ``stats`` (``None`` while unknown)."""
        for vcpu in stats.get("vcpus", []):
            value = self.vcpu_percent.get(int(vcpu["id"]))
            vcpu["cpu_percent"] = None if value is None else round(value, 2)
