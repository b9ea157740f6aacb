"""The hypercall handlers: one method per hypercall, arguments checked first.

Every handler validates all it is given before changing anything, returns a
negative Xen errno for a bad request, and never raises for guest input. A
handler returns ``None`` when the calling vCPU must stop (the guest shut
down).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from pvtui.engine import abi
from pvtui.engine.abi import Errno, MemoryOp, SchedOp, ShutdownReason, VcpuOp

if TYPE_CHECKING:
    from pvtui.engine.domain import Domain
    from pvtui.engine.vcpu import VcpuRunner

Handler = Callable[["VcpuRunner", int, int, int, int, int], "int | None"]

EFAULT = -Errno.EFAULT
EINVAL = -Errno.EINVAL
ENOSYS = -Errno.ENOSYS
EPERM = -Errno.EPERM
ENOENT = -Errno.ENOENT
EEXIST = -Errno.EEXIST
EBUSY = -Errno.EBUSY
MAX_EXTENTS_PER_CALL = 1 << 20


class HypercallHandler:
    """Dispatches hypercalls of one domain and records each one."""

    def __init__(self, domain: Domain) -> None:
        self.domain = domain
        self.memory = domain.memory
        self.accounting = domain.accounting
        self._table: dict[int, Handler] = {
            abi.Hypercall.memory_op: self.memory_op,
            abi.Hypercall.multicall: self.multicall,
            abi.Hypercall.set_timer_op: self.set_timer_op,
            abi.Hypercall.xen_version: self.xen_version,
            abi.Hypercall.console_io: self.console_io,
            abi.Hypercall.vcpu_op: self.vcpu_op,
            abi.Hypercall.sched_op: self.sched_op,
            abi.Hypercall.event_channel_op: self.event_channel_op,
        }

    def dispatch(self, runner: VcpuRunner, number: int, args: tuple[int, ...], in_multicall: bool = False) -> int | None:
        start = time.monotonic_ns()
        handler = self._table.get(number)
        result = ENOSYS if handler is None else handler(runner, *args[:5])
        self.accounting.record(
            runner.counter, runner.id, number, tuple(args[:5]),
            ENOSYS if handler is None else (result if result is not None else 0),
            start, time.monotonic_ns() - start, in_multicall,
        )
        return result

    # --- simple calls -----------------------------------------------------
    def xen_version(self, runner: VcpuRunner, cmd: int, *_: int) -> int:
        if cmd != abi.XENVER_version:
            return EINVAL
        return (abi.ABI_VERSION_MAJOR << 16) | abi.ABI_VERSION_MINOR

    def console_io(self, runner: VcpuRunner, cmd: int, length: int, buf: int, *_: int) -> int:
        if cmd != abi.CONSOLEIO_write or length > abi.CONSOLE_MAX_WRITE:
            return EINVAL
        data = self.memory.read(buf, length)
        if data is None:
            return EFAULT
        self.domain.console.write(data)
        return 0

    def set_timer_op(self, runner: VcpuRunner, deadline_ns: int, *_: int) -> int:
        runner.timer_deadline_ns = deadline_ns
        return 0

    def sched_op(self, runner: VcpuRunner, cmd: int, reason: int, *_: int) -> int | None:
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

    def event_channel_op(self, runner: VcpuRunner, cmd: int, port: int, *_: int) -> int:
        if cmd != abi.EVTCHNOP_send:
            return EINVAL
        target = port - abi.PORT_VCPU_BASE
        if port == abi.PORT_CONTROL or not 0 <= target < self.domain.max_vcpus:
            return EINVAL
        self.domain.raise_event(target, port)
        return 0

    # --- vCPUs ------------------------------------------------------------
    def vcpu_op(self, runner: VcpuRunner, cmd: int, vcpu_id: int, context: int, *_: int) -> int:
        if cmd not in VcpuOp._value2member_map_:
            return EINVAL
        if not 0 <= vcpu_id < self.domain.max_vcpus:
            return ENOENT
        domain = self.domain
        if cmd == VcpuOp.is_up:
            return 1 if domain.vcpu_is_up(vcpu_id) else 0
        if cmd == VcpuOp.initialise:
            if domain.vcpu_is_up(vcpu_id):
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
            if not domain.vcpu_wanted(vcpu_id):
                return EPERM
            domain.vcpu_up(vcpu_id)
            return 0
        # VcpuOp.down
        if vcpu_id == 0:
            return EPERM
        if domain.vcpu_wanted(vcpu_id):
            return EBUSY
        domain.vcpu_down(vcpu_id, by=runner)
        return 0

    # --- memory -----------------------------------------------------------
    def memory_op(self, runner: VcpuRunner, cmd: int, arg: int, *_: int) -> int:
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
    def multicall(self, runner: VcpuRunner, array: int, count: int, *_: int) -> int | None:
        if count > abi.MULTICALL_MAX:
            return EINVAL
        entry = abi.MULTICALL_ENTRY
        raw = self.memory.read(array, count * entry.size)
        if raw is None:
            return EFAULT
        if count == 0:
            return 0
        view = self.memory.view(array, count * entry.size)
        for i in range(count):
            op, _, *args = entry.unpack_from(raw, i * entry.size)
            if op == abi.Hypercall.multicall:
                result: int | None = EINVAL
            else:
                result = self.dispatch(runner, op, tuple(args[:5]), in_multicall=True)
                if result is None:
                    return None
            view[i * entry.size + 8 : i * entry.size + 16] = result.to_bytes(8, "little", signed=True)
        return 0
