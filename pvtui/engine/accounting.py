"""Per-domain hypercall accounting: counts per op and per vCPU, and rings of records.

Each vCPU thread writes only its own counters, so the hot path takes no
lock; readers sum them. The rings are bounded deques (appends are atomic):
one of single calls, one of whole multicalls, each stored as one bytes
object and expanded into records on read.
"""

from __future__ import annotations

import collections
import itertools
import struct
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pvtui.engine.abi import MULTICALL_ENTRY, op_name

DEFAULT_RING_SIZE = 4096
#: Multicalls kept, as a share of the ring size (a multicall holds up to 512 entries).
MULTICALL_RING_SHARE = 16


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
    #: The op's name in the domain's personality (Xen's names for a Xen PV guest).
    name: str = ""

    @property
    def op_name(self) -> str:
        return self.name or op_name(self.op)

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
#: A multicall as stored: the seq of its first entry, when it started, vCPU,
#: entry count; then the guest's entries as it laid them out (results filled
#: in); then when each entry finished (``Q`` each, engine clock). Recording
#: entries one by one cost ~0.5 µs each, a third of what an entry costs; this
#: is one copy, and latencies are worked out on read.
BATCH_HEADER = struct.Struct("<QQII")
#: Records keep an op number in 32 bits; any larger number (all unknown: -ENOSYS) is recorded as this.
OP_RECORD_MAX = 0xFFFF_FFFF


class HypercallAccounting:
    """Counts and records hypercalls. The ring holds packed records (cheap on the
    per-exit hot path) and turns them into :class:`HypercallRecord` on read."""

    def __init__(self, ring_size: int = DEFAULT_RING_SIZE, names: Callable[[int], str] = op_name) -> None:
        #: Op number -> name, for the personality the domain runs (one table per personality).
        self.name_of = names
        self.ring: collections.deque[bytes] = collections.deque(maxlen=ring_size)
        self.batches: collections.deque[bytes] = collections.deque(maxlen=max(1, ring_size // MULTICALL_RING_SHARE))
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
        if op > OP_RECORD_MAX:  # a guest's whole 64-bit rax: kept as the largest (unknown) op
            op = OP_RECORD_MAX
        counter[op] += 1
        self._append(self._pack(next(self._seq), time_ns, vcpu, op, a1, a2, a3, a4, a5, result, latency_ns, False))

    def record_batch(
        self,
        counter: collections.Counter[int],
        vcpu: int,
        time_ns: int,
        entries: bytes | memoryview,
        finished: array[int],
    ) -> None:
        """Record the handled entries of a multicall (guest layout, results in), started at ``time_ns``,
        with the time each entry finished."""
        count = len(finished)
        if not count:
            return
        counter.update(memoryview(entries).cast("Q")[:: MULTICALL_ENTRY.size // 8])
        # Reserve ``count`` consecutive seqs: consuming the counter in C holds
        # the GIL throughout, so no other vCPU thread takes one in between.
        last = collections.deque(itertools.islice(self._seq, count), maxlen=1)[0]
        header = BATCH_HEADER.pack(last - count + 1, time_ns, vcpu, count)
        self.batches.append(b"".join((header, entries, finished)))  # one copy of the guest's entries

    def per_op(self) -> dict[str, int]:
        total: collections.Counter[int] = collections.Counter()
        for counter in list(self._per_vcpu.values()):
            total.update(dict(counter))
        return {self.name_of(op): n for op, n in sorted(total.items())}

    def per_vcpu(self) -> dict[int, int]:
        return {vcpu: sum(dict(counter).values()) for vcpu, counter in sorted(self._per_vcpu.items())}

    def total(self) -> int:
        return sum(self.per_vcpu().values())

    def records(self, after_seq: int = 0) -> list[HypercallRecord]:
        """Records still held, oldest first; only those after ``after_seq`` if given."""
        records = []
        for raw in list(self.ring):
            seq, time_ns, vcpu, op, a1, a2, a3, a4, a5, result, latency, in_mc = RAW_RECORD.unpack(raw)
            if seq > after_seq:
                records.append(
                    HypercallRecord(
                        seq, time_ns, vcpu, op, (a1, a2, a3, a4, a5), result, latency, in_mc, self.name_of(op)
                    )
                )
        for raw in list(self.batches):
            first, _, _, count = BATCH_HEADER.unpack_from(raw)
            if first + count - 1 > after_seq:
                records.extend(r for r in _expand(raw, self.name_of) if r.seq > after_seq)
        records.sort(key=lambda r: r.seq)
        return records

    @property
    def last_seq(self) -> int:
        single = RAW_RECORD.unpack_from(self.ring[-1])[0] if self.ring else 0
        if not self.batches:
            return single
        first, _, _, count = BATCH_HEADER.unpack_from(self.batches[-1])
        return max(single, first + count - 1)

    @property
    def first_time_ns(self) -> int | None:
        times = [RAW_RECORD.unpack_from(self.ring[0])[1]] if self.ring else []
        times += [BATCH_HEADER.unpack_from(self.batches[0])[1]] if self.batches else []
        return min(times, default=None)


def _expand(raw: bytes, name_of: Callable[[int], str]) -> Iterator[HypercallRecord]:
    """A stored multicall's entries as records; each starts when the one before it finished."""
    first, time_ns, vcpu, count = BATCH_HEADER.unpack_from(raw)
    end = BATCH_HEADER.size + count * MULTICALL_ENTRY.size
    finished = array("Q")
    finished.frombytes(raw[end:])
    entries = MULTICALL_ENTRY.iter_unpack(raw[BATCH_HEADER.size : end])
    for index, ((op, result, a1, a2, a3, a4, a5, _), done_ns) in enumerate(zip(entries, finished, strict=True)):
        args = (a1, a2, a3, a4, a5)
        yield HypercallRecord(first + index, time_ns, vcpu, op, args, result, done_ns - time_ns, True, name_of(op))
        time_ns = done_ns
