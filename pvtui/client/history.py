"""Ten minutes of a domain's figures as plottable series: rates from the counters its monitor kept.

pvd's ``history`` reply holds counters as columns, oldest first
(pvtui/daemon/history.py); :class:`DomainHistory` keeps them, takes each new
stats sample as it comes (so a view fetches the ten minutes once, then
grows them), and turns them into series: CPU % per vCPU and hypercalls per
second per kind (rates between neighbouring samples, by the monitor's own
timestamps), and the memory figures as they are. A gap (a vCPU that did not
exist yet, a guest restart that reset its counters) is ``None``, never a
made-up zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: Seconds shown: ten minutes.
SPAN_S = 600.0
LENGTH = 600
#: Hypercall kinds plotted (the busiest); the legend says how many more there were.
MAX_OP_SERIES = 6
MEMORY_LABELS = {
    "target_bytes": "target",
    "held_bytes": "held",
    "guest_used_bytes": "guest used",
    "rss_bytes": "host RSS",
}


@dataclass
class Series:
    label: str
    values: list[float | None]


@dataclass
class Plotted:
    """What a plot draws: seconds before the newest sample (``<= 0``), and series over them."""

    title: str
    unit: str
    times: list[float]
    series: list[Series]
    #: The value axis reaches at least this (CPU: 100 %).
    floor: float = 0.0
    note: str = ""


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def rates(times: list[float], counters: list[float | None]) -> list[float | None]:
    """Per-second rates between neighbouring samples; ``None`` where either is missing or the counter went back."""
    out: list[float | None] = [None]
    for i in range(1, len(times)):
        now, then = counters[i], counters[i - 1]
        elapsed = times[i] - times[i - 1]
        if now is None or then is None or elapsed <= 0 or now < then:
            out.append(None)
        else:
            out.append((now - then) / elapsed)
    return out[: len(times)]


@dataclass
class DomainHistory:
    times: list[float] = field(default_factory=list)
    vcpus: dict[str, list[float | None]] = field(default_factory=dict)
    memory: dict[str, list[float | None]] = field(default_factory=dict)
    ops: dict[str, list[float | None]] = field(default_factory=dict)

    @classmethod
    def from_export(cls, data: dict[str, Any]) -> DomainHistory:
        def column(values: list[Any]) -> list[float | None]:
            return [_number(v) for v in values]

        return cls(
            [float(t) for t in data.get("t", [])],
            {k: column(v) for k, v in (data.get("vcpus") or {}).items()},
            {k: column(v) for k, v in (data.get("memory") or {}).items()},
            {k: column(v) for k, v in (data.get("ops") or {}).items()},
        )

    def append(self, stats: dict[str, Any]) -> None:
        """One stats sample (pvd's ``info`` reply's stats), if newer than the last one kept."""
        sampled = _number(stats.get("sampled_s"))
        if sampled is None or (self.times and sampled <= self.times[-1] + 0.5):
            return
        count = len(self.times)
        self.times.append(sampled)
        vcpus = {str(v["id"]): _number(v.get("cpu_time_s")) for v in stats.get("vcpus", [])}
        memory = stats.get("memory") or {}
        self._extend(self.vcpus, vcpus, count)
        self._extend(self.memory, {k: _number(memory.get(k)) for k in MEMORY_LABELS}, count)
        self._extend(self.ops, {k: _number(v) for k, v in (stats.get("hypercalls_per_op") or {}).items()}, count)
        if len(self.times) > LENGTH:
            drop = len(self.times) - LENGTH
            del self.times[:drop]
            for columns in (self.vcpus, self.memory, self.ops):
                for values in columns.values():
                    del values[:drop]

    @staticmethod
    def _extend(columns: dict[str, list[float | None]], sample: dict[str, float | None], count: int) -> None:
        for key, value in sample.items():
            columns.setdefault(key, [None] * count).append(value)
        for key, values in columns.items():
            if key not in sample:
                values.append(None)

    def _ago(self) -> list[float]:
        newest = self.times[-1] if self.times else 0.0
        return [t - newest for t in self.times]

    def cpu(self) -> Plotted:
        series = [
            Series(f"vCPU {key}", [None if r is None else 100 * r for r in rates(self.times, values)])
            for key, values in sorted(self.vcpus.items(), key=lambda item: int(item[0]))
        ]
        return Plotted("CPU % per vCPU (host-measured)", "%", self._ago(), series, floor=100.0)

    def memory_series(self) -> Plotted:
        series = [
            Series(label, [None if v is None else v / (1 << 20) for v in self.memory.get(key, [])])
            for key, label in MEMORY_LABELS.items()
            if key in self.memory
        ]
        return Plotted("memory (MiB): target, held, guest used (its word), host RSS", "M", self._ago(), series)

    def hypercalls(self) -> Plotted:
        per_op = {op: rates(self.times, values) for op, values in self.ops.items()}
        busiest = sorted(per_op.items(), key=lambda item: -sum(v or 0.0 for v in item[1]))
        shown = [(op, values) for op, values in busiest if any(v for v in values)][:MAX_OP_SERIES]
        more = sum(1 for _op, values in busiest if any(v for v in values)) - len(shown)
        note = f"(+{more} quieter kinds not drawn)" if more > 0 else ""
        series = [Series(op, values) for op, values in shown]
        return Plotted("hypercalls per second, by kind", "/s", self._ago(), series, note=note)


@dataclass
class HostHistory:
    """The host's last ten minutes (pvd's ``host_history``), grown by each ``host`` event."""

    times: list[float] = field(default_factory=list)
    cpu_percent: list[float | None] = field(default_factory=list)
    memory_used: list[float | None] = field(default_factory=list)
    memory_committed: list[float | None] = field(default_factory=list)

    @classmethod
    def from_export(cls, data: dict[str, Any]) -> HostHistory:
        cpu = [None if v is None or v < 0 else v for v in (_number(x) for x in data.get("cpu_percent", []))]
        return cls(
            [float(t) for t in data.get("t", [])],
            cpu,
            [_number(x) for x in data.get("memory_used", [])],
            [_number(x) for x in data.get("memory_committed", [])],
        )

    def append(self, sampled_s: float, cpu_percent: float | None, used: int, committed: int) -> None:
        if not sampled_s or (self.times and sampled_s <= self.times[-1] + 0.5):
            return
        self.times.append(sampled_s)
        self.cpu_percent.append(cpu_percent)
        self.memory_used.append(float(used))
        self.memory_committed.append(float(committed))
        for column in (self.times, self.cpu_percent, self.memory_used, self.memory_committed):
            del column[: max(0, len(column) - LENGTH)]

    def plots(self) -> tuple[Plotted, Plotted]:
        """CPU % of all host CPUs; memory used and committed to domains (MiB)."""
        newest = self.times[-1] if self.times else 0.0
        ago = [t - newest for t in self.times]

        def mib(values: list[float | None]) -> list[float | None]:
            return [None if v is None else v / (1 << 20) for v in values]

        return (
            Plotted("host CPU % (all CPUs)", "%", ago, [Series("busy", list(self.cpu_percent))], floor=100.0),
            Plotted(
                "host memory (MiB)",
                "M",
                ago,
                [Series("used", mib(self.memory_used)), Series("committed to domains", mib(self.memory_committed))],
            ),
        )
