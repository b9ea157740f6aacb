"""The last ten minutes of one domain's counters (or the host's figures), at pvd's 1 Hz, in fixed rings.

Each monitor keeps its domain's ring, filled as pvd reads its stats once a
second, so a domain view opened now plots the ten minutes before it (as
``xentop`` cannot). Counters, not rates, are kept: the reader takes rates
between neighbouring samples (:func:`pvtui.client.history.series`), by the
monitor's own timestamps. Compact on purpose: one ``array`` per series,
preallocated (about 70 KiB per domain at 2 vCPUs and ten hypercall kinds);
per-op counters beyond :data:`MAX_OPS` kinds are summed as ``other``.
"""

from __future__ import annotations

import math
from array import array
from typing import Any

#: Samples kept: ten minutes at 1 Hz.
LENGTH = 600
#: Samples closer than this to the last one are not kept (an extra ``info`` between two rounds).
MIN_INTERVAL_S = 0.9
#: Hypercall kinds with a series of their own; the rest are summed.
MAX_OPS = 16
MEMORY_KEYS = ("target_bytes", "held_bytes", "guest_used_bytes", "rss_bytes")


class Ring:
    """``LENGTH`` floats, oldest overwritten; read back oldest first."""

    def __init__(self, typecode: str = "d", length: int = LENGTH) -> None:
        self.values = array(typecode, [math.nan]) * length  # NaN: no sample there (yet)
        self.length = length

    def put(self, index: int, value: float) -> None:
        self.values[index % self.length] = value

    def read(self, head: int, count: int) -> list[float | None]:
        """``count`` values up to ``head``, oldest first; ``None`` where there was no sample (JSON has no NaN)."""
        values = (self.values[i % self.length] for i in range(head - count, head))
        return [None if math.isnan(v) else v for v in values]


class CounterHistory:
    """A domain's counters, one sample per pvd round."""

    def __init__(self, length: int = LENGTH) -> None:
        self.length = length
        self.count = 0  # samples ever taken (the ring's head)
        self.times = Ring("d", length)
        self.vcpus: dict[str, Ring] = {}
        self.memory = {key: Ring("f", length) for key in MEMORY_KEYS}
        self.ops: dict[str, Ring] = {}
        self._last = -1e9

    def add(self, stats: dict[str, Any]) -> None:
        sampled = float(stats.get("sampled_s", 0.0))
        if sampled - self._last < MIN_INTERVAL_S:
            return
        self._last = sampled
        index = self.count
        self.times.put(index, sampled)
        for vcpu in stats.get("vcpus", []):
            self._ring(self.vcpus, str(vcpu["id"]), "d").put(index, float(vcpu.get("cpu_time_s", 0.0)))
        memory = stats.get("memory") or {}
        for key, ring in self.memory.items():
            ring.put(index, float(memory.get(key, 0)))
        per_op = stats.get("hypercalls_per_op") or {}
        ranked = sorted(per_op.items(), key=lambda item: -item[1])
        other = 0
        for op, count in ranked:
            if op in self.ops or len(self.ops) < MAX_OPS:
                self._ring(self.ops, op, "d").put(index, float(count))
            else:
                other += count
        if other or "other" in self.ops:
            self._ring(self.ops, "other", "d").put(index, float(other))
        self.count += 1

    def repeat(self, sampled_s: float) -> None:
        """A sample whose counters are the last one's (nothing changed): copied, no stats taken."""
        if not self.count or sampled_s - self._last < MIN_INTERVAL_S:
            return
        self._last = sampled_s
        index, previous = self.count, self.count - 1
        self.times.put(index, sampled_s)
        for rings in (self.vcpus, self.memory, self.ops):
            for ring in rings.values():
                ring.put(index, ring.values[previous % ring.length])
        self.count += 1

    def fill(self, until_s: float, step_s: float = 1.0) -> None:
        """Samples a second apart up to ``until_s``, each the last one's (the domain slept, nothing changed)."""
        if not self.count:
            return
        start = max(self._last, until_s - self.length * step_s)
        steps = int((until_s - start) / step_s)
        for number in range(1, steps + 1):
            self.repeat(start + number * step_s)

    def _ring(self, rings: dict[str, Ring], key: str, typecode: str) -> Ring:
        ring = rings.get(key)
        if ring is None:
            ring = rings[key] = Ring(typecode, self.length)  # NaN before now: a reader takes no rate across it
        return ring

    def export(self) -> dict[str, Any]:
        """Columns, oldest sample first: ``{"t": [...], "vcpus": {id: [...]}, "memory": {...}, "ops": {...}}``."""
        count = min(self.count, self.length)
        head = self.count
        return {
            "t": self.times.read(head, count),
            "vcpus": {key: ring.read(head, count) for key, ring in self.vcpus.items()},
            "memory": {key: ring.read(head, count) for key, ring in self.memory.items()},
            "ops": {key: ring.read(head, count) for key, ring in self.ops.items()},
        }


class HostHistory:
    """The host's CPU and memory figures, one sample per pvd round (pvd keeps one)."""

    KEYS = ("cpu_percent", "memory_used", "memory_committed")

    def __init__(self, length: int = LENGTH) -> None:
        self.count = 0
        self.times = Ring("d", length)
        self.values = {key: Ring("f", length) for key in self.KEYS}
        self.length = length

    def add(self, sampled_s: float, cpu_percent: float | None, memory_used: int, memory_committed: int) -> None:
        index = self.count
        self.times.put(index, sampled_s)
        self.values["cpu_percent"].put(index, -1.0 if cpu_percent is None else cpu_percent)
        self.values["memory_used"].put(index, float(memory_used))
        self.values["memory_committed"].put(index, float(memory_committed))
        self.count += 1

    def export(self) -> dict[str, Any]:
        count = min(self.count, self.length)
        return {
            "t": self.times.read(self.count, count),
            **{key: ring.read(self.count, count) for key, ring in self.values.items()},
        }
