"""HypercallAccounting without a guest: single calls and multicalls share one seq space and one log."""

from __future__ import annotations

import collections
import sys
import threading
from array import array

from pvtui.engine.abi import MULTICALL_ENTRY, Hypercall
from pvtui.engine.accounting import HypercallAccounting

XEN_VERSION, CONSOLE_IO = int(Hypercall.xen_version), int(Hypercall.console_io)


def entries(*calls: tuple[int, int, tuple[int, ...]]) -> bytes:
    """Guest-layout multicall entries: (op, result, args)."""
    return b"".join(MULTICALL_ENTRY.pack(op, result, *args, *[0] * (6 - len(args))) for op, result, args in calls)


def test_a_multicall_expands_into_entries_in_seq_order_between_single_calls():
    accounting = HypercallAccounting()
    counter = accounting.counter_for(0)
    accounting.record(counter, 0, XEN_VERSION, 0, 0, 0, 0, 0, 0x10000, 1_000, 5)
    batch = entries((XEN_VERSION, 0x10000, (0,)), (CONSOLE_IO, -14, (0, 3, 0xDEAD)))
    accounting.record_batch(counter, 0, 2_000, batch, array("Q", [2_100, 2_350]))
    accounting.record(counter, 0, CONSOLE_IO, 0, 1, 2, 0, 0, 1, 3_000, 7)

    records = accounting.records()
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert [r.in_multicall for r in records] == [False, True, True, False]
    mc = records[1:3]
    assert [r.op_name for r in mc] == ["xen_version", "console_io"]
    assert mc[1].args[:3] == (0, 3, 0xDEAD) and mc[1].result == -14
    assert [r.time_ns for r in mc] == [2_000, 2_100] and [r.latency_ns for r in mc] == [100, 250]
    assert [r.seq for r in accounting.records(after_seq=2)] == [3, 4]
    assert accounting.last_seq == 4 and accounting.first_time_ns == 1_000
    assert accounting.per_op() == {"xen_version": 2, "console_io": 2}


def test_concurrent_multicalls_never_share_a_seq():
    accounting = HypercallAccounting(ring_size=1 << 16)
    batch = entries(*[(XEN_VERSION, 0, ())] * 8)

    def vcpu(number: int) -> None:
        counter = accounting.counter_for(number)
        for _ in range(200):
            accounting.record_batch(counter, number, 0, batch, array("Q", range(1, 9)))
            accounting.record(counter, number, XEN_VERSION, 0, 0, 0, 0, 0, 0, 0, 0)

    for number in range(4):
        accounting.counter_for(number)
    threads = [threading.Thread(target=vcpu, args=(n,)) for n in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    seqs = [r.seq for r in accounting.records()]
    assert len(seqs) == 4 * 200 * 9 and len(set(seqs)) == len(seqs)
    assert collections.Counter(r.vcpu for r in accounting.records()) == {n: 1800 for n in range(4)}


def test_multicalls_are_bounded_like_the_ring():
    accounting = HypercallAccounting(ring_size=64)
    counter = accounting.counter_for(0)
    for _ in range(100):
        accounting.record_batch(counter, 0, 0, entries((XEN_VERSION, 0, ())), array("Q", [1]))
    assert len(accounting.records()) == 64 // 16  # the newest multicalls only
    assert accounting.total() == 100  # counts are never dropped
