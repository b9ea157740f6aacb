"""Per-domain hypercall accounting: counts per op and per vCPU, and a ring of records.

Each vCPU thread writes only its own counters, so the hot path takes no
lock; readers sum them. The ring is a bounded deque (appends are atomic).
"""

from __future__ import annotations

import collections
import itertools
import struct
from dataclasses import dataclass

from pvtui.engine.abi import op_name

DEFAULT_RING_SIZE = 4096


@dataclass(frozen=True, slots=True)
class HypercallRecord:
    """One hypercall as the guest made it: when, on which vCPU, what, and its outcome."""

    seq: int
    time_ns: int  # engine monotonic clock (time.monotonic_ns), at the exit
    vcpu: int
    op: int
    args: tuple[int, ...]
    result: int
    latency_ns: int  # engine time spent handling it (blocking included)
    in_multicall: bool = False

    @property
    def op_name(self) -> str:
        return op_name(self.op)

    def to_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "time_ns": self.time_ns,
            "vcpu": self.vcpu,
            "op": self.op_name,
            "args": list(self.args),
            "result": self.result,
            "latency_ns": self.latency_ns,
            "in_multicall": self.in_multicall,
        }


#: A record as stored: seq, time_ns, vcpu, op, arg1..arg5, result, latency_ns, in_multicall.
#: One packed bytes object per call: after a VM exit caches are cold, and one
#: allocation (and one free of the record it displaces) costs far less than a
#: tuple of a dozen int objects.
RAW_RECORD = struct.Struct("<QQIIQQQQQqQ?")


class HypercallAccounting:
    """Counts and records hypercalls. The ring holds packed records (cheap on the
    per-exit hot path) and turns them into :class:`HypercallRecord` on read."""

    def __init__(self, ring_size: int = DEFAULT_RING_SIZE) -> None:
        self.ring: collections.deque[bytes] = collections.deque(maxlen=ring_size)
        self._per_vcpu: dict[int, collections.Counter[int]] = {}
        self._seq = itertools.count(1)
        self._append = self.ring.append
        self._pack = RAW_RECORD.pack

    def counter_for(self, vcpu: int) -> collections.Counter[int]:
        """The counter a vCPU thread owns (created before the thread starts)."""
        return self._per_vcpu.setdefault(vcpu, collections.Counter())

    def record(
        self,
        counter: collections.Counter[int],
        vcpu: int,
        op: int,
        a1: int,
        a2: int,
        a3: int,
        a4: int,
        a5: int,
        result: int,
        time_ns: int,
        latency_ns: int,
    ) -> None:
        """One call made on its own (multicall entries go through record_batch)."""
        counter[op] += 1
        self._append(self._pack(next(self._seq), time_ns, vcpu, op, a1, a2, a3, a4, a5, result, latency_ns, False))

    def record_batch(
        self,
        counter: collections.Counter[int],
        vcpu: int,
        calls: list[tuple[int, int, int, int, int, int, int, int, int]],
    ) -> None:
        """Record a multicall's entries, (op, arg1..arg5, result, time_ns, latency_ns) each, in one go."""
        append, seq, pack = self._append, self._seq, self._pack
        for op, a1, a2, a3, a4, a5, result, time_ns, latency_ns in calls:
            counter[op] += 1
            append(pack(next(seq), time_ns, vcpu, op, a1, a2, a3, a4, a5, result, latency_ns, True))

    def per_op(self) -> dict[str, int]:
        total: collections.Counter[int] = collections.Counter()
        for counter in list(self._per_vcpu.values()):
            total.update(dict(counter))
        return {op_name(op): n for op, n in sorted(total.items())}

    def per_vcpu(self) -> dict[int, int]:
        return {vcpu: sum(dict(counter).values()) for vcpu, counter in sorted(self._per_vcpu.items())}

    def total(self) -> int:
        return sum(self.per_vcpu().values())

    def records(self, after_seq: int = 0) -> list[HypercallRecord]:
        """Records still in the ring, oldest first; only those after ``after_seq`` if given."""
        records = []
        for raw in list(self.ring):
            seq, time_ns, vcpu, op, a1, a2, a3, a4, a5, result, latency, in_mc = RAW_RECORD.unpack(raw)
            if seq > after_seq:
                records.append(HypercallRecord(seq, time_ns, vcpu, op, (a1, a2, a3, a4, a5), result, latency, in_mc))
        return records

    @property
    def last_seq(self) -> int:
        ring = self.ring
        return RAW_RECORD.unpack_from(ring[-1])[0] if ring else 0

    @property
    def first_time_ns(self) -> int | None:
        ring = self.ring
        return RAW_RECORD.unpack_from(ring[0])[1] if ring else None
