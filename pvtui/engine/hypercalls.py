"""The hypercall handlers: one method per hypercall, arguments checked first.

Every handler validates all it is given before changing anything, returns a
negative Xen errno for a bad request, and never raises for guest input. A
handler returns ``None`` when the calling vCPU must stop (the guest shut
down).
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING

from pvtui.engine import abi
from pvtui.engine.abi import Errno, MemoryOp, SchedOp, ShutdownReason, VcpuOp

if TYPE_CHECKING:
    from pvtui.engine.domain import Domain
    from pvtui.engine.vcpu import VcpuRunner

Handler = Callable[["VcpuRunner", int, int, int, int, int], "int | None"]

EFAULT = -int(Errno.EFAULT)
EINVAL = -int(Errno.EINVAL)
ENOSYS = -int(Errno.ENOSYS)
EPERM = -int(Errno.EPERM)
ENOENT = -int(Errno.ENOENT)
EEXIST = -int(Errno.EEXIST)
EBUSY = -int(Errno.EBUSY)
MAX_EXTENTS_PER_CALL = 1 << 20
# Plain ints: comparing against IntEnum members costs a descriptor lookup per call.
_MULTICALL = int(abi.Hypercall.multicall)
_VERSION = (abi.ABI_VERSION_MAJOR << 16) | abi.ABI_VERSION_MINOR
_XENVER_VERSION = abi.XENVER_version
_XENVER_HYPERCALLS = abi.XENVER_pvtui_hypercalls


def _unknown(runner: VcpuRunner, a1: int, a2: int, a3: int, a4: int, a5: int) -> int:
    return ENOSYS


def _refuse_nested(runner: VcpuRunner, a1: int, a2: int, a3: int, a4: int, a5: int) -> int:
    return EINVAL


class _HandlerTable(dict[int, Handler]):
    """Handlers by number; a number without one gets ``_unknown`` (hits stay a plain dict lookup,
    and the hot paths need no branch for unknown numbers)."""

    def __missing__(self, number: int) -> Handler:
        return _unknown


class HypercallHandler:
    """Dispatches hypercalls of one domain and records each one."""

    def __init__(self, domain: Domain) -> None:
        self.domain = domain
        self.memory = domain.memory
        self.accounting = domain.accounting
        handlers: dict[abi.Hypercall, Handler] = {
            abi.Hypercall.memory_op: self.memory_op,
            abi.Hypercall.multicall: self.multicall,
            abi.Hypercall.set_timer_op: self.set_timer_op,
            abi.Hypercall.xen_version: self.xen_version,
            abi.Hypercall.console_io: self.console_io,
            abi.Hypercall.vcpu_op: self.vcpu_op,
            abi.Hypercall.sched_op: self.sched_op,
            abi.Hypercall.event_channel_op: self.event_channel_op,
        }
        self._calls = _HandlerTable({int(number): handler for number, handler in handlers.items()})
        # For multicall entries: the same, but no nesting.
        self._entry_calls = _HandlerTable(self._calls)
        self._entry_calls[_MULTICALL] = _refuse_nested
        self._clock = time.monotonic_ns
        self._record = self.accounting.record

    def dispatch(self, runner: VcpuRunner, number: int, a1: int, a2: int, a3: int, a4: int, a5: int) -> int | None:
        """Run one hypercall and record it. This is the per-exit hot path: keep it lean
        (names bound once in ``__init__``, a table whose misses answer ENOSYS)."""
        clock = self._clock
        start = clock()
        result = self._calls[number](runner, a1, a2, a3, a4, a5)
        self._record(
            runner.counter,
            runner.id,
            number,
            a1,
            a2,
            a3,
            a4,
            a5,
            0 if result is None else result,
            start,
            clock() - start,
        )
        return result

    # --- simple calls -----------------------------------------------------
    def xen_version(self, runner: VcpuRunner, cmd: int, _a2: int, _a3: int, _a4: int, _a5: int) -> int:
        if cmd == _XENVER_VERSION:
            return _VERSION
        if cmd == _XENVER_HYPERCALLS:  # this call included: the engine records it after it returns
            return sum(runner.counter.values()) + 1
        return EINVAL

    def console_io(self, runner: VcpuRunner, cmd: int, length: int, buf: int, _a4: int, _a5: int) -> int:
        if cmd != abi.CONSOLEIO_write or length > abi.CONSOLE_MAX_WRITE:
            return EINVAL
        data = self.memory.read(buf, length)
        if data is None:
            return EFAULT
        self.domain.console.write(data)
        return 0

    def set_timer_op(self, runner: VcpuRunner, deadline_ns: int, _a2: int, _a3: int, _a4: int, _a5: int) -> int:
        runner.timer_deadline_ns = deadline_ns
        return 0

    def sched_op(self, runner: VcpuRunner, cmd: int, reason: int, _a3: int, _a4: int, _a5: int) -> int | None:
        if cmd == SchedOp.yield_:
            time.sleep(0)
            return 0
        if cmd == SchedOp.block:
            runner.block()
            return 0
        if cmd == SchedOp.shutdown:
            if reason not in ShutdownReason._value2member_map_:
                return EINVAL
            self.domain.guest_shutdown(ShutdownReason(reason), runner.id)
            return None
        return EINVAL

    def event_channel_op(self, runner: VcpuRunner, cmd: int, port: int, _a3: int, _a4: int, _a5: int) -> int:
        if cmd != abi.EVTCHNOP_send:
            return EINVAL
        target = port - abi.PORT_VCPU_BASE
        if port == abi.PORT_CONTROL or not 0 <= target < self.domain.max_vcpus:
            return EINVAL
        self.domain.raise_event(target, port)
        return 0

    # --- vCPUs ------------------------------------------------------------
    def vcpu_op(self, runner: VcpuRunner, cmd: int, vcpu_id: int, context: int, _a4: int, _a5: int) -> int:
        if cmd not in VcpuOp._value2member_map_:
            return EINVAL
        if not 0 <= vcpu_id < self.domain.max_vcpus:
            return ENOENT
        domain = self.domain
        if cmd == VcpuOp.is_up:
            return 1 if domain.vcpus.is_up(vcpu_id) else 0
        if cmd == VcpuOp.initialise:
            if domain.vcpus.is_up(vcpu_id):
                return EEXIST
            raw = self.memory.read(context, abi.VCPU_CONTEXT.size)
            if raw is None:
                return EFAULT
            rip, rsp, rdi = abi.VCPU_CONTEXT.unpack(raw)
            if not self.memory.check(rip, 1) or (rsp and not self.memory.check(rsp - 8, 8)):
                return EINVAL
            domain.initialise_vcpu(vcpu_id, rip, rsp, rdi)
            return 0
        if cmd == VcpuOp.up:
            if not domain.vcpus.wanted(vcpu_id):
                return EPERM
            domain.vcpus.up(vcpu_id)
            return 0
        # VcpuOp.down
        if vcpu_id == 0:
            return EPERM
        if domain.vcpus.wanted(vcpu_id):
            return EBUSY
        domain.vcpus.down(vcpu_id)
        return 0

    # --- memory -----------------------------------------------------------
    def memory_op(self, runner: VcpuRunner, cmd: int, arg: int, _a3: int, _a4: int, _a5: int) -> int:
        if cmd == MemoryOp.current_reservation or cmd == MemoryOp.maximum_reservation:
            if arg != abi.DOMID_SELF:
                return EPERM
            if cmd == MemoryOp.current_reservation:
                return self.memory.held_pages
            return self.domain.max_pages
        if cmd not in (MemoryOp.increase_reservation, MemoryOp.decrease_reservation):
            return EINVAL
        raw = self.memory.read(arg, abi.MEMORY_RESERVATION.size)
        if raw is None:
            return EFAULT
        extent_start, nr_extents, order, domid = abi.MEMORY_RESERVATION.unpack(raw)
        if domid != abi.DOMID_SELF:
            return EPERM
        if order > abi.MAX_EXTENT_ORDER or nr_extents > MAX_EXTENTS_PER_CALL:
            return EINVAL
        array = self.memory.read(extent_start, nr_extents * 8)
        if array is None:
            return EFAULT
        frames = list(memoryview(array).cast("Q"))
        if not self.memory.frames_valid(frames, order):
            return EINVAL
        if cmd == MemoryOp.decrease_reservation:
            self.memory.release(frames, order)
        else:
            self.memory.populate(frames, order)
        return len(frames)

    # --- batching ----------------------------------------------------------
    def multicall(self, runner: VcpuRunner, entries_at: int, count: int, _a3: int, _a4: int, _a5: int) -> int | None:
        """Run ``count`` entries in one exit. Lean on purpose: per-entry cost decides
        how much batching buys (bench/engine.py's multicall_speedup), so entries are
        recorded as one copy of the guest's array at the end, not one by one."""
        if count > abi.MULTICALL_MAX:
            return EINVAL
        if count == 0:
            return 0
        try:
            view = self.memory.view(entries_at, count * abi.MULTICALL_ENTRY.size)  # read in place, no copy
        except ValueError:
            return EFAULT
        return self._run_entries(runner, entries_at, view, array("q"), array("Q"), time.monotonic_ns())

    def _run_entries(
        self,
        runner: VcpuRunner,
        entries_at: int,
        view: memoryview,
        results: array[int],
        finished: array[int],
        started: int,
    ) -> int | None:
        """Entries from ``len(results)`` on (the ones before it have run), then every result in one write."""
        size = abi.MULTICALL_ENTRY.size
        # Locals only in the loop: a global or attribute lookup per entry shows in the speedup.
        table, monotonic_ns = self._entry_calls, time.monotonic_ns
        give, lap = results.append, finished.append
        runner.multicall = (entries_at, view, results, finished, started)  # a snapshot of a block in here needs it
        try:
            for op, _, a1, a2, a3, a4, a5, _ in islice(abi.MULTICALL_ENTRY.iter_unpack(view), len(results), None):
                result = table[op](runner, a1, a2, a3, a4, a5)
                lap(monotonic_ns())
                if result is None:
                    give(0)  # the entry that parks the vCPU has no result yet
                    return None
                give(result)
            return 0
        finally:
            runner.multicall = None
            # Every result in one write: the guest reads them once the multicall returns.
            done = len(results) * size
            if done:
                view[:done].cast("q")[1 :: size // 8] = results
                self.memory.note_written(entries_at, done)
            self.accounting.record_batch(runner.counter, runner.id, started, view[:done], finished)

    # --- snapshots of a vCPU blocked in a hypercall ---------------------------------------
    def blocked_call(self, runner: VcpuRunner) -> dict[str, object] | None:
        """Where a blocked vCPU is: in a multicall (entries done, their results), or a plain sched_op."""
        if runner.multicall is None:
            return None
        entries_at, view, results, _, _ = runner.multicall
        return {"entries_at": entries_at, "count": len(view) // abi.MULTICALL_ENTRY.size, "results": list(results)}

    def resume_blocked(self, runner: VcpuRunner, call: dict[str, object] | None) -> Callable[[], int | None]:
        """The rest of the hypercall a restored vCPU was blocked in: the block's result, and in a
        multicall the entries after it (the results before it are written with theirs)."""
        if call is None:
            return lambda: 0
        entries_at: int = int(str(call["entries_at"]))
        count: int = int(str(call["count"]))
        saved_results: list[object] = list(call["results"])  # type: ignore[call-overload]
        # The entries before the block ran (their results were saved); the block itself returns 0.
        done: list[int] = [int(str(r)) for r in saved_results] + [0]

        def finish() -> int | None:
            try:
                view = self.memory.view(entries_at, count * abi.MULTICALL_ENTRY.size)
            except ValueError:
                return EFAULT
            now = time.monotonic_ns()
            return self._run_entries(runner, entries_at, view, array("q", done), array("Q", [now] * len(done)), now)

        return finish
