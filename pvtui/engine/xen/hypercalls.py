"""Xen's hypercalls for a Xen PV guest: one table, chosen at load, apart from pvtui's own.

Pointers are guest-virtual (read through the guest's page tables). Every
handler checks what it is given before changing anything and answers a
negative Xen errno for a bad request; a hypercall Xen has but the engine
does not implement answers ``-ENOSYS``, as Xen does for an unknown one.
``docs/xen-abi.md`` lists each call and sub-op.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pvtui.engine.abi import ShutdownReason
from pvtui.engine.kvm import ioctl as k
from pvtui.engine.xen import abi as x
from pvtui.engine.xen.calls import GuestCalls
from pvtui.engine.xen.channels import EventCalls, GrantCalls
from pvtui.engine.xen.cpustate import CpuCalls
from pvtui.engine.xen.mmu import MmuCalls
from pvtui.engine.xen.traps import TRAP_RECORD_OP, TrapHandler, exception_name

if TYPE_CHECKING:
    from pvtui.engine.vcpu import VcpuRunner
    from pvtui.engine.xen.guest import PvVcpu, XenGuest

Handler = Callable[["VcpuRunner", int, int, int, int, int], "int | None"]
_U64 = (1 << 64) - 1
_MULTICALL_ENTRY = struct.Struct("<QQ6Q")
SYSCALL_RECORD_OP, EVENT_RECORD_OP = 0x200, 0x201
MAX_MULTICALL = 512
_SHUTDOWN = {
    x.SHUTDOWN_poweroff: ShutdownReason.poweroff,
    x.SHUTDOWN_reboot: ShutdownReason.reboot,
    x.SHUTDOWN_suspend: ShutdownReason.suspend,
    x.SHUTDOWN_crash: ShutdownReason.crash,
    x.SHUTDOWN_watchdog: ShutdownReason.crash,  # a watchdog expiry ends the domain as a crash, as Xen
}


def xen_op_name(op: int) -> str:
    """Names in the hypercall log: Xen's hypercalls, then bounced traps, syscalls and upcalls."""
    if op in x.HYPERCALL_NAMES:
        return x.HYPERCALL_NAMES[op]
    if TRAP_RECORD_OP <= op < TRAP_RECORD_OP + 256:
        vector = op - TRAP_RECORD_OP
        return f"trap_{exception_name(vector).lstrip('#')}" if vector < 32 else f"trap_int{vector}"
    if op == SYSCALL_RECORD_OP:
        return "syscall"
    if op == EVENT_RECORD_OP:
        return "event_upcall"
    return f"unknown_{op}"


def _neg(errno: int) -> int:
    return -errno


class _Table(dict[int, Handler]):
    def __missing__(self, number: int) -> Handler:
        return _enosys


def _enosys(runner: VcpuRunner, a1: int, a2: int, a3: int, a4: int, a5: int) -> int:
    return -x.ENOSYS


class XenHypercalls(GuestCalls):
    """Dispatches one Xen PV domain's hypercalls and records each one, and each bounced trap.

    The handlers live in groups (``mmu.py``, ``channels.py``, ``cpustate.py``,
    and here: traps and callbacks, iret, the console, scheduling, versions,
    multicall); one table, built here, maps every number to its handler.
    """

    def __init__(self, guest: XenGuest) -> None:
        super().__init__(guest)
        self.accounting = guest.domain.accounting
        self.traps = TrapHandler(guest, self)
        self.mmu = MmuCalls(guest)
        self.cpu = CpuCalls(guest)
        events, grants = EventCalls(guest), GrantCalls(guest)
        mmu, cpu = self.mmu, self.cpu
        h = x.XenHypercall
        self._calls = _Table(
            {
                int(h.set_trap_table): self.set_trap_table,
                int(h.mmu_update): mmu.mmu_update,
                int(h.set_gdt): mmu.set_gdt,
                int(h.stack_switch): self.stack_switch,
                int(h.fpu_taskswitch): cpu.fpu_taskswitch,
                int(h.set_debugreg): cpu.set_debugreg,
                int(h.get_debugreg): cpu.get_debugreg,
                int(h.update_descriptor): cpu.update_descriptor,
                int(h.memory_op): mmu.memory_op,
                int(h.multicall): self.multicall,
                int(h.update_va_mapping): mmu.update_va_mapping,
                int(h.set_timer_op): self.set_timer_op,
                int(h.xen_version): self.xen_version,
                int(h.console_io): self.console_io,
                int(h.grant_table_op): grants.grant_table_op,
                int(h.vm_assist): cpu.vm_assist,
                int(h.iret): self.iret,
                int(h.vcpu_op): self.vcpu_op,
                int(h.set_segment_base): cpu.set_segment_base,
                int(h.mmuext_op): mmu.mmuext_op,
                int(h.sched_op): self.sched_op,
                int(h.callback_op): self.callback_op,
                int(h.event_channel_op): events.event_channel_op,
                int(h.physdev_op): cpu.physdev_op,
            }
        )

    # --- dispatch and records ---------------------------------------------------------------
    def dispatch(self, runner: VcpuRunner, number: int, a1: int, a2: int, a3: int, a4: int, a5: int) -> int | None:
        """One hypercall from the hypercall page. From guest *user* mode it is not a
        hypercall: Xen's page uses ``syscall``, which user mode delivers to the guest
        kernel, so it is bounced to the syscall callback the same way."""
        state = self.guest.vcpus[runner.id]
        start = time.monotonic_ns()
        if not state.kernel_mode:
            return self._user_hypercall(runner, state, start)
        result = self._calls[number](runner, a1, a2, a3, a4, a5)
        self.accounting.record(
            runner.counter, runner.id, number, a1, a2, a3, a4, a5, 0 if result is None else result, start,
            time.monotonic_ns() - start,
        )  # fmt: skip
        if result is not None and self.guest.upcall_due(runner.id):
            result = self._deliver_upcall(runner, state, result)
        return result

    def _user_hypercall(self, runner: VcpuRunner, state: PvVcpu, start: int) -> int | None:
        regs = runner.vcpu.run.regs
        frame = [regs.rip, x.FLAT_RING3_CS64, regs.rflags, regs.rsp, x.FLAT_RING3_SS64]
        rax = regs.rax
        regs.rcx, regs.r11 = regs.rip, regs.rflags
        try:
            self.traps.bounce_callback(runner, state, x.CALLBACKTYPE_syscall, frame, syscall=True)
        except Exception as exc:  # GuestCrash: no syscall callback
            self.domain.guest_crashed(f"vCPU {runner.id}: {exc}")
            return None
        regs.rip, regs.rflags, regs.rsp = frame[0], frame[2], frame[3]
        self.record_trap(runner, 0x100, 0, frame[0], regs.rcx, start, op=SYSCALL_RECORD_OP)
        return rax

    def record_trap(
        self, runner: VcpuRunner, vector: int, error_code: int, handler: int, rip: int, start: int, op: int = 0
    ) -> None:
        """A bounced trap as its own record: (vector, error code, handler, faulting rip)."""
        if not op:
            op = (
                SYSCALL_RECORD_OP
                if vector == 0x100
                else EVENT_RECORD_OP
                if vector == 0x200
                else TRAP_RECORD_OP + vector
            )
        self.accounting.record(
            runner.counter, runner.id, op, vector, error_code, handler, rip, 0, 0, start, time.monotonic_ns() - start
        )

    def _deliver_upcall(self, runner: VcpuRunner, state: PvVcpu, result: int) -> int:
        """An event is pending and unmasked: enter the event callback on return."""
        address, _flags = state.callbacks.get(x.CALLBACKTYPE_event, (0, 0))
        if not address:
            return result
        regs = runner.vcpu.run.regs
        regs.rax = result & _U64
        frame = [regs.rip, x.FLAT_RING3_CS64, regs.rflags, regs.rsp, x.FLAT_RING3_SS64]
        start = time.monotonic_ns()
        self.traps.deliver(runner, state, address, True, None, frame)
        regs.rip, regs.rflags, regs.rsp = frame[0], frame[2], frame[3]
        self.record_trap(runner, 0x200, 0, address, frame[0], start, op=EVENT_RECORD_OP)
        return result

    # --- traps and callbacks --------------------------------------------------------------------
    def set_trap_table(self, runner: VcpuRunner, table: int, _a2: int, _a3: int, _a4: int, _a5: int) -> int:
        """Entries until one with address 0; a NULL table clears them all (as Xen)."""
        state = self._state(runner)
        if not table:
            state.traps.clear()
            return 0
        entries: dict[int, tuple[int, int, int]] = {}
        for index in range(256):
            raw = self._read(runner, table + index * x.TRAP_INFO.size, x.TRAP_INFO.size)
            if raw is None:
                return _neg(x.EFAULT)
            vector, flags, cs, address = x.TRAP_INFO.unpack(raw)
            if not address:
                break
            entries[vector] = (flags, cs, address)
        state.traps.update(entries)
        return 0

    def callback_op(self, runner: VcpuRunner, cmd: int, arg: int, _a3: int, _a4: int, _a5: int) -> int:
        state = self._state(runner)
        if cmd == x.CALLBACKOP_register:
            raw = self._read(runner, arg, x.CALLBACK_REGISTER.size)
            if raw is None:
                return _neg(x.EFAULT)
            kind, flags, address = x.CALLBACK_REGISTER.unpack(raw)
            if kind not in (
                x.CALLBACKTYPE_event, x.CALLBACKTYPE_failsafe, x.CALLBACKTYPE_syscall, x.CALLBACKTYPE_nmi,
                x.CALLBACKTYPE_sysenter, x.CALLBACKTYPE_syscall32,
            ):  # fmt: skip
                return _neg(x.EINVAL)
            state.callbacks[kind] = (address, flags)
            return 0
        if cmd == x.CALLBACKOP_unregister:
            raw = self._read(runner, arg, x.CALLBACK_UNREGISTER.size)
            if raw is None:
                return _neg(x.EFAULT)
            (kind,) = x.CALLBACK_UNREGISTER.unpack(raw)
            if kind == x.CALLBACKTYPE_nmi:
                return _neg(x.EINVAL)
            state.callbacks.pop(kind, None)
            return 0
        return _neg(x.ENOSYS)

    def stack_switch(self, runner: VcpuRunner, ss: int, sp: int, _a3: int, _a4: int, _a5: int) -> int:
        state = self._state(runner)
        state.kernel_ss, state.kernel_sp = ss & 0xFFFF, sp
        return 0

    def iret(self, runner: VcpuRunner, _a1: int, _a2: int, _a3: int, _a4: int, _a5: int) -> int | None:
        """Pop Xen's iret frame from the guest stack and return there (Xen's do_iret)."""
        state = self._state(runner)
        regs = runner.vcpu.run.regs
        raw = self.guest.read_virt(state, regs.rsp, x.IRET_CONTEXT.size)
        if raw is None:
            self.domain.guest_crashed(f"vCPU {runner.id}: iret with an unreadable frame at {regs.rsp:#x}")
            return None
        rax, r11, rcx, flags, rip, cs, rflags, rsp, _ss = x.IRET_CONTEXT.unpack(raw)
        if (cs & 3) == 3:
            self.mmu.toggle_mode(runner, state)
        if self.guest.vm_assist & (1 << x.VMASST_TYPE_architectural_iopl):
            state.iopl = (rflags & x.RFLAGS_IOPL) >> 12
        regs.rip = rip
        regs.rflags = (rflags & x.RFLAGS_GUEST_MASK & ~(x.RFLAGS_IOPL | x.RFLAGS_VM)) | x.RFLAGS_IF | 2
        regs.rsp = rsp
        if not flags & x.VGCF_in_syscall:
            regs.r11, regs.rcx = r11, rcx
        self.guest.set_upcall_mask(runner.id, not rflags & x.RFLAGS_IF)
        self.last_iret_vcpu = runner.id
        return rax

    # --- the console, time, scheduling ----------------------------------------------------------------
    def console_io(self, runner: VcpuRunner, cmd: int, length: int, buf: int, _a4: int, _a5: int) -> int:
        if cmd == x.CONSOLEIO_write:
            if length > 1 << 16:
                return _neg(x.EINVAL)
            data = self._read(runner, buf, length)
            if data is None:
                return _neg(x.EFAULT)
            self.domain.console.write(data)
            return 0
        if cmd == x.CONSOLEIO_read:
            return 0  # nothing is ever typed at a domain's console
        return _neg(x.ENOSYS)

    def set_timer_op(self, runner: VcpuRunner, deadline: int, _a2: int, _a3: int, _a4: int, _a5: int) -> int:
        runner.timer_deadline_ns = deadline
        return 0

    def sched_op(self, runner: VcpuRunner, cmd: int, arg: int, _a3: int, _a4: int, _a5: int) -> int | None:
        if cmd == x.SCHEDOP_yield:
            time.sleep(0)
            return 0
        if cmd == x.SCHEDOP_block:
            self.guest.set_upcall_mask(runner.id, False)
            runner.block()
            return 0
        if cmd in (x.SCHEDOP_shutdown, x.SCHEDOP_shutdown_code):
            raw = self._read(runner, arg, 4)
            if raw is None:
                return _neg(x.EFAULT)
            reason = _SHUTDOWN.get(struct.unpack("<I", raw)[0])
            if reason is None:
                return _neg(x.EINVAL)
            if cmd == x.SCHEDOP_shutdown_code:
                return 0
            self.domain.guest_shutdown(reason, runner.id)
            return None
        return _neg(x.ENOSYS)

    def xen_version(self, runner: VcpuRunner, cmd: int, arg: int, _a3: int, _a4: int, _a5: int) -> int:
        if cmd == x.XENVER_version:
            return (x.XEN_VERSION_MAJOR << 16) | x.XEN_VERSION_MINOR
        fixed = {
            x.XENVER_extraversion: (x.XEN_EXTRAVERSION, 16),
            x.XENVER_changeset: (x.XEN_CHANGESET, 64),
            x.XENVER_capabilities: (x.XEN_CAPABILITIES, 1024),
        }
        if cmd in fixed:
            text, size = fixed[cmd]
            return 0 if self._write(runner, arg, text[: size - 1].ljust(size, b"\0")) else _neg(x.EFAULT)
        if cmd == x.XENVER_compile_info:
            fields = [(b"gcc", 64), (b"pvtui", 16), (b"localdomain", 32), (b"unknown", 32)]
            blob = b"".join(text.ljust(size, b"\0") for text, size in fields)
            return 0 if self._write(runner, arg, blob) else _neg(x.EFAULT)
        if cmd == x.XENVER_platform_parameters:
            return 0 if self._write(runner, arg, struct.pack("<Q", x.HYPERVISOR_VIRT_START)) else _neg(x.EFAULT)
        if cmd == x.XENVER_get_features:
            raw = self._read(runner, arg, 8)
            if raw is None:
                return _neg(x.EFAULT)
            index = struct.unpack_from("<I", raw)[0]
            features = 0 if index else (1 << 5)  # XENFEAT_mmu_pt_update_preserve_ad
            return 0 if self._write(runner, arg + 4, struct.pack("<I", features)) else _neg(x.EFAULT)
        if cmd == x.XENVER_pagesize:
            return 4096
        if cmd == x.XENVER_guest_handle:
            return 0 if self._write(runner, arg, bytes(16)) else _neg(x.EFAULT)
        if cmd == x.XENVER_commandline:
            return 0 if self._write(runner, arg, bytes(1024)) else _neg(x.EFAULT)
        if cmd == x.XENVER_build_id:
            return _neg(x.ENODATA) if hasattr(x, "ENODATA") else _neg(x.EPERM)
        return _neg(x.ENOSYS)

    def vcpu_op(self, runner: VcpuRunner, cmd: int, vcpu: int, _arg: int, _a4: int, _a5: int) -> int:
        if not 0 <= vcpu < self.domain.max_vcpus:
            return _neg(x.ENOENT)
        if cmd == x.VCPUOP_is_up:
            return 1 if self.domain.vcpus.is_up(vcpu) else 0
        if cmd in (x.VCPUOP_stop_periodic_timer, x.VCPUOP_stop_singleshot_timer):
            if vcpu == runner.id:
                runner.timer_deadline_ns = 0
            return 0
        return _neg(x.ENOSYS)

    # --- batching -----------------------------------------------------------------------------------
    def multicall(self, runner: VcpuRunner, entries: int, count: int, _a3: int, _a4: int, _a5: int) -> int | None:
        """Each entry in turn; an ``iret`` ends the batch there (Xen's fix for XSA-213: nothing
        after it may run in the context the iret left), and the multicall returns its rax."""
        if count > MAX_MULTICALL:
            return _neg(x.EINVAL)
        return self._run_entries(runner, entries, count, 0)

    def _run_entries(self, runner: VcpuRunner, entries: int, count: int, first: int) -> int | None:
        state = self._state(runner)
        for index in range(first, count):
            runner.multicall = (entries, count, index)  # a snapshot of a block in here needs it
            at = entries + index * _MULTICALL_ENTRY.size
            raw = self._read(runner, at, _MULTICALL_ENTRY.size)
            if raw is None:
                return _neg(x.EFAULT)
            op, _result, a1, a2, a3, a4, a5, _a6 = _MULTICALL_ENTRY.unpack(raw)
            if op == x.XenHypercall.multicall:
                result: int | None = _neg(x.EINVAL)
            else:
                start = time.monotonic_ns()
                result = self._calls[op](runner, a1, a2, a3, a4, a5)
                self.accounting.record(
                    runner.counter, runner.id, op, a1, a2, a3, a4, a5, 0 if result is None else result, start,
                    time.monotonic_ns() - start,
                )  # fmt: skip
            runner.multicall = None
            if result is None:
                return None
            if op == x.XenHypercall.iret:
                return result
            if not state.kernel_mode:
                return 0
            self._write(runner, at + 8, struct.pack("<Q", result & _U64))
        return 0

    # --- snapshots of a vCPU blocked in a hypercall ---------------------------------------
    def blocked_call(self, runner: VcpuRunner) -> dict[str, object] | None:
        """Where a blocked vCPU is: the multicall entry it blocked in, or a plain sched_op (None)."""
        if runner.multicall is None:
            return None
        entries, count, index = runner.multicall
        return {"entries_at": entries, "count": count, "index": index}

    def resume_blocked(self, runner: VcpuRunner, call: dict[str, object] | None) -> Callable[[], int | None]:
        """The rest of the hypercall a restored vCPU was blocked in (entries before it wrote their results)."""
        if call is None:
            return lambda: 0
        entries: int = int(str(call["entries_at"]))
        count: int = int(str(call["count"]))
        index: int = int(str(call["index"]))

        def finish() -> int | None:
            self._write(runner, entries + index * _MULTICALL_ENTRY.size + 8, struct.pack("<Q", 0))
            return self._run_entries(runner, entries, count, index + 1)

        return finish


def bind_trap_exit(calls: XenHypercalls) -> Callable[[VcpuRunner, int], bool]:
    """The vCPU loop's hook for exits on the stubs' ports."""
    traps = calls.traps

    def on_exit(runner: VcpuRunner, port: int) -> bool:
        return traps.on_exit(runner, port)

    return on_exit


__all__ = ["XenHypercalls", "bind_trap_exit", "k", "xen_op_name"]
