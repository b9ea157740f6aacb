"""Per-domain hypercall accounting: counts per op and per vCPU, and a ring of records.

Each vCPU thread writes only its own counters, so the hot path takes no
lock; readers sum them. The ring is a bounded deque (appends are atomic).
"""

from __future__ import annotations

import collections
import itertools
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


class HypercallAccounting:
    def __init__(self, ring_size: int = DEFAULT_RING_SIZE) -> None:
        self.ring: collections.deque[HypercallRecord] = collections.deque(maxlen=ring_size)
        self._per_vcpu: dict[int, collections.Counter[int]] = {}
        self._seq = itertools.count(1)

    def counter_for(self, vcpu: int) -> collections.Counter[int]:
        """The counter a vCPU thread owns (created before the thread starts)."""
        return self._per_vcpu.setdefault(vcpu, collections.Counter())

    def record(
        self,
        counter: collections.Counter[int],
        vcpu: int,
        op: int,
        args: tuple[int, ...],
        result: int,
        time_ns: int,
        latency_ns: int,
        in_multicall: bool = False,
    ) -> None:
        counter[op] += 1
        self.ring.append(HypercallRecord(next(self._seq), time_ns, vcpu, op, args, result, latency_ns, in_multicall))

    def per_op(self) -> dict[str, int]:
        total: collections.Counter[int] = collections.Counter()
        for counter in list(self._per_vcpu.values()):
            total.update(dict(counter))
        return {op_name(op): n for op, n in sorted(total.items())}

    def per_vcpu(self) -> dict[int, int]:
        return {vcpu: sum(dict(counter).values()) for vcpu, counter in sorted(self._per_vcpu.items())}

    def total(self) -> int:
        return sum(self.per_vcpu().values())

    def records(self) -> list[HypercallRecord]:
        return list(self.ring)
