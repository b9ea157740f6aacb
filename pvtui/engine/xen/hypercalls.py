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
from pvtui.engine.xen import machine as m
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


class XenHypercalls:
    """Dispatches one Xen PV domain's hypercalls and records each one, and each bounced trap."""

    def __init__(self, guest: XenGuest) -> None:
        self.guest = guest
        self.domain = guest.domain
        self.accounting = guest.domain.accounting
        self.traps = TrapHandler(guest)
        h = x.XenHypercall
        self._calls = _Table(
            {
                int(h.set_trap_table): self.set_trap_table,
                int(h.mmu_update): self.mmu_update,
                int(h.set_gdt): self.set_gdt,
                int(h.stack_switch): self.stack_switch,
                int(h.fpu_taskswitch): self.fpu_taskswitch,
                int(h.set_debugreg): self.set_debugreg,
                int(h.get_debugreg): self.get_debugreg,
                int(h.update_descriptor): self.update_descriptor,
                int(h.memory_op): self.memory_op,
                int(h.multicall): self.multicall,
                int(h.update_va_mapping): self.update_va_mapping,
                int(h.set_timer_op): self.set_timer_op,
                int(h.xen_version): self.xen_version,
                int(h.console_io): self.console_io,
                int(h.grant_table_op): self.grant_table_op,
                int(h.vm_assist): self.vm_assist,
                int(h.iret): self.iret,
                int(h.vcpu_op): self.vcpu_op,
                int(h.set_segment_base): self.set_segment_base,
                int(h.mmuext_op): self.mmuext_op,
                int(h.sched_op): self.sched_op,
                int(h.callback_op): self.callback_op,
                int(h.event_channel_op): self.event_channel_op,
                int(h.physdev_op): self.physdev_op,
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

    # --- guest memory -------------------------------------------------------------------------
    def _state(self, runner: VcpuRunner) -> PvVcpu:
        return self.guest.vcpus[runner.id]

    def _read(self, runner: VcpuRunner, va: int, length: int) -> bytes | None:
        return self.guest.read_virt(self._state(runner), va, length)

    def _write(self, runner: VcpuRunner, va: int, data: bytes) -> bool:
        return self.guest.write_virt(self._state(runner), va, data)

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
            self.toggle_mode(runner, state)
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

    def toggle_mode(self, runner: VcpuRunner, state: PvVcpu) -> None:
        """Xen's toggle_guest_mode: kernel <-> user, switching page tables if they differ."""
        before = self.guest.current_cr3(state)
        state.kernel_mode = not state.kernel_mode
        after = self.guest.current_cr3(state)
        if after != before:
            sregs = runner.vcpu.get_sregs()
            sregs.cr3 = after
            runner.vcpu.set_sregs(sregs)

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

    def vm_assist(self, runner: VcpuRunner, cmd: int, kind: int, _a3: int, _a4: int, _a5: int) -> int:
        if kind >= 64 or not x.VM_ASSIST_VALID & (1 << kind):
            return _neg(x.EINVAL)
        if cmd == x.VMASST_CMD_enable:
            self.guest.vm_assist |= 1 << kind
            self.guest.set_fast_iret()
            return 0
        if cmd == x.VMASST_CMD_disable:
            self.guest.vm_assist &= ~(1 << kind)
            self.guest.set_fast_iret()
            return 0
        return _neg(x.ENOSYS)

    def physdev_op(self, runner: VcpuRunner, cmd: int, arg: int, _a3: int, _a4: int, _a5: int) -> int:
        if cmd == x.PHYSDEVOP_set_iopl:
            raw = self._read(runner, arg, 4)
            if raw is None:
                return _neg(x.EFAULT)
            iopl = struct.unpack("<I", raw)[0]
            if iopl > 3:
                return _neg(x.EINVAL)
            self._state(runner).iopl = iopl
            return 0
        return _neg(x.ENOSYS)

    def fpu_taskswitch(self, runner: VcpuRunner, _set: int, _a2: int, _a3: int, _a4: int, _a5: int) -> int:
        return 0  # CR0.TS is not emulated: the FPU is always usable

    def set_segment_base(self, runner: VcpuRunner, which: int, base: int, _a3: int, _a4: int, _a5: int) -> int:
        from pvtui.engine.xen.guest import canonical

        if which > 3 or (which != 3 and not canonical(base)):
            return _neg(x.EINVAL)
        if which == 3:  # SEGBASE_GS_USER_SEL: loading a selector is not supported
            return _neg(x.ENOSYS)
        sregs = runner.vcpu.get_sregs()
        (sregs.fs if which == 0 else sregs.gs).base = base
        runner.vcpu.set_sregs(sregs)
        return 0

    def update_descriptor(self, runner: VcpuRunner, _maddr: int, _desc: int, _a3: int, _a4: int, _a5: int) -> int:
        return _neg(x.ENOSYS)

    # --- memory ---------------------------------------------------------------------------------------
    def update_va_mapping(self, runner: VcpuRunner, va: int, value: int, flags: int, _a4: int, _a5: int) -> int:
        """Write the L1 entry for ``va`` in the current page tables (Xen forces the user bit)."""
        from pvtui.engine.xen.guest import canonical

        state = self._state(runner)
        if (
            not canonical(va)
            or (va >> 39) & 511 == m.PRIVATE_L4_SLOT
            or (va >= 0xFFFF_8000_0000_0000 and ((va >> 39) & 511) < 272)
        ):
            return _neg(x.EINVAL)
        if flags & ~(x.UVMF_FLUSHTYPE_MASK | (1 << 2)) and flags & x.UVMF_FLUSHTYPE_MASK == 3:
            return _neg(x.EINVAL)
        pte = self.guest.guest_pte(value)
        if pte is None:
            return _neg(x.EINVAL)
        where = self.guest.l1_entry_address(self.guest.current_cr3(state), va)
        if where is None or not self.guest.memory.write(where, struct.pack("<Q", pte)):
            return _neg(x.EINVAL)
        self.guest.flush_mappings()
        return 0

    def mmu_update(self, runner: VcpuRunner, reqs: int, count: int, done: int, domid: int, _a5: int) -> int:
        if domid not in (x.DOMID_SELF, 0):
            return _neg(x.ESRCH)
        applied = 0
        for index in range(count):
            raw = self._read(runner, reqs + index * x.MMU_UPDATE.size, x.MMU_UPDATE.size)
            if raw is None:
                return _neg(x.EFAULT)
            ptr, value = x.MMU_UPDATE.unpack(raw)
            kind, address = ptr & 3, ptr & ~7
            if kind == x.MMU_MACHPHYS_UPDATE:
                applied += 1
                continue
            if kind not in (x.MMU_NORMAL_PT_UPDATE, x.MMU_PT_UPDATE_PRESERVE_AD):
                return _neg(x.ENOSYS)
            pte = self.guest.guest_pte(value)
            if pte is None or not 0 <= address >> 12 < self.guest.nr_pages:
                return _neg(x.EINVAL)
            level = self.guest.table_level(self.guest.current_cr3(self._state(runner)), address)
            if level == 4 and (address & 0xFFF) // 8 == m.PRIVATE_L4_SLOT:
                return _neg(x.EPERM)  # the engine's own slot
            self.guest.memory.write(address, struct.pack("<Q", pte))
            if level is not None and level > 1 and pte & x.PTE_P and not pte & x.PTE_PSE:
                self.guest.validate_tables(pte, level - 1)  # as Xen validates a table it links in
            applied += 1
        if applied:
            self.guest.flush_mappings()
        if done and not self._write(runner, done, struct.pack("<I", applied)):
            return _neg(x.EFAULT)
        return 0

    def mmuext_op(self, runner: VcpuRunner, ops: int, count: int, done: int, domid: int, _a5: int) -> int:
        if domid not in (x.DOMID_SELF, 0):
            return _neg(x.ESRCH)
        state = self._state(runner)
        finished = 0
        for index in range(count):
            raw = self._read(runner, ops + index * x.MMUEXT_OP.size, x.MMUEXT_OP.size)
            if raw is None:
                return _neg(x.EFAULT)
            cmd, arg1, _arg2 = x.MMUEXT_OP.unpack(raw)
            if cmd in (x.MMUEXT_NEW_BASEPTR, x.MMUEXT_NEW_USER_BASEPTR):
                rc = self.new_baseptr(runner, state, arg1, user=cmd == x.MMUEXT_NEW_USER_BASEPTR)
                if rc:
                    return rc
            elif cmd in (
                x.MMUEXT_TLB_FLUSH_LOCAL, x.MMUEXT_TLB_FLUSH_MULTI, x.MMUEXT_TLB_FLUSH_ALL, x.MMUEXT_INVLPG_LOCAL,
                x.MMUEXT_INVLPG_MULTI, x.MMUEXT_INVLPG_ALL, x.MMUEXT_FLUSH_CACHE, x.MMUEXT_FLUSH_CACHE_GLOBAL,
            ):  # fmt: skip
                self.guest.flush_mappings()
            elif cmd in (
                x.MMUEXT_PIN_L1_TABLE, x.MMUEXT_PIN_L2_TABLE, x.MMUEXT_PIN_L3_TABLE, x.MMUEXT_PIN_L4_TABLE,
                x.MMUEXT_UNPIN_TABLE,
            ):  # fmt: skip
                if not 0 <= arg1 < self.guest.nr_pages:
                    return _neg(x.EINVAL)
            else:
                return _neg(x.ENOSYS)
            finished += 1
        if done and not self._write(runner, done, struct.pack("<I", finished)):
            return _neg(x.EFAULT)
        return 0

    def new_baseptr(self, runner: VcpuRunner, state: PvVcpu, mfn: int, user: bool) -> int:
        if not 0 <= mfn < self.guest.nr_pages and not (user and mfn == 0):
            return _neg(x.EINVAL)
        if mfn and not self.guest.install_l4_private(mfn << 12):
            return _neg(x.EINVAL)
        if mfn:
            self.guest.validate_tables(mfn << 12, 4)
        before = self.guest.current_cr3(state)
        if user:
            state.user_cr3 = mfn << 12
        else:
            state.kernel_cr3 = mfn << 12
        after = self.guest.current_cr3(state)
        self.guest.flush_mappings()
        if after != before:
            sregs = runner.vcpu.get_sregs()
            sregs.cr3 = after
            runner.vcpu.set_sregs(sregs)
        return 0

    def set_gdt(self, runner: VcpuRunner, frames_at: int, entries: int, _a3: int, _a4: int, _a5: int) -> int:
        if entries > x.FIRST_RESERVED_GDT_ENTRY:
            return _neg(x.EINVAL)
        count = -(-entries // 512)
        raw = self._read(runner, frames_at, count * 8) if count else b""
        if raw is None:
            return _neg(x.EFAULT)
        frames = list(struct.unpack(f"<{count}Q", raw))
        if any(not 0 <= f < self.guest.nr_pages for f in frames):
            return _neg(x.EINVAL)
        self.guest.set_gdt(runner.id, frames, entries)
        return 0

    def memory_op(self, runner: VcpuRunner, cmd: int, arg: int, _a3: int, _a4: int, _a5: int) -> int:
        cmd &= 0xF  # the upper bits carry a continuation start extent
        if cmd in (x.XENMEM_current_reservation, x.XENMEM_maximum_reservation):
            raw = self._read(runner, arg, 2)
            if raw is None:
                return _neg(x.EFAULT)
            if struct.unpack("<H", raw)[0] != x.DOMID_SELF:
                return _neg(x.ESRCH)
            return self.guest.nr_pages
        if cmd in (x.XENMEM_maximum_ram_page, x.XENMEM_maximum_gpfn):
            return self.guest.nr_pages - 1
        return _neg(x.ENOSYS)

    def grant_table_op(self, runner: VcpuRunner, cmd: int, arg: int, count: int, _a4: int, _a5: int) -> int:
        """The domain's own grant table (setup, size, version). Granting to another domain
        has no one to grant to on a single-host engine, so map/unmap/copy are ENOSYS."""
        guest = self.guest
        if cmd == x.GNTTABOP_setup_table:
            raw = self._read(runner, arg, 24)
            if raw is None:
                return _neg(x.EFAULT)
            dom, nr_frames, _status, frame_list = struct.unpack("<HxxIhxxxxxxQ", raw)
            status = 0
            if dom not in (x.DOMID_SELF, 0):
                status = -2  # GNTST_bad_domain
            elif nr_frames > m.GRANT_FRAMES:
                status = -1  # GNTST_general_error
            else:
                guest.grant_frames = max(guest.grant_frames, nr_frames)
                first = (m.PRIVATE_GPA >> 12) + m.P_GRANT
                frames = struct.pack(f"<{nr_frames}Q", *range(first, first + nr_frames))
                if nr_frames and not self._write(runner, frame_list, frames):
                    return _neg(x.EFAULT)
            return 0 if self._write(runner, arg + 8, struct.pack("<h", status)) else _neg(x.EFAULT)
        if cmd == x.GNTTABOP_query_size:
            # domid u16, nr_frames u32, max_nr_frames u32, status i16
            blob = struct.pack("<HxxIIh", x.DOMID_SELF, guest.grant_frames, m.GRANT_FRAMES, 0)
            return 0 if self._write(runner, arg, blob) else _neg(x.EFAULT)
        if cmd == x.GNTTABOP_get_version:
            return 0 if self._write(runner, arg + 4, struct.pack("<I", guest.grant_version)) else _neg(x.EFAULT)
        if cmd == x.GNTTABOP_set_version:
            raw = self._read(runner, arg, 4)
            if raw is None:
                return _neg(x.EFAULT)
            version = struct.unpack("<I", raw)[0]
            if version not in (0, 1, 2):
                return _neg(x.EINVAL)
            if version:
                guest.grant_version = version
            return 0 if self._write(runner, arg, struct.pack("<I", guest.grant_version)) else _neg(x.EFAULT)
        return _neg(x.ENOSYS)

    def set_debugreg_value(self, runner: VcpuRunner, state: PvVcpu, reg: int, value: int) -> bool:
        """Xen's set_debugreg: DR0-3 canonical guest addresses, DR6/DR7 with their fixed bits,
        I/O breakpoints only with the guest's CR4.DE. Data and instruction breakpoints are
        programmed into the vCPU (KVM_SET_DEBUGREGS); I/O ones are kept, not armed."""
        from pvtui.engine.xen.guest import canonical

        if reg in (4, 5):
            reg += 2
        if reg < 4:
            if not canonical(value) or value >= x.HYPERVISOR_VIRT_START:
                return False
        elif reg == 6:
            value = (value & 0xE00F) | 0xFFFF0FF0
        elif reg == 7:
            if value >> 32:
                return False
            for slot in range(4):
                if (value >> (16 + 4 * slot)) & 3 == 2 and not state.cr4 & x.CR4_DE:
                    return False
            value = (value & ~0x2000 & 0xFFFFFFFF) | 0x400
        else:
            return False
        state.debugreg[reg] = value
        self._arm_debugregs(runner, state)
        return True

    def _arm_debugregs(self, runner: VcpuRunner, state: PvVcpu) -> None:
        hardware = runner.vcpu.get_debugregs()
        for slot in range(4):
            hardware.db[slot] = state.debugreg[slot]
        dr7 = state.debugreg[7]
        for slot in range(4):  # I/O breakpoints are not armed: clear their enables
            if (dr7 >> (16 + 4 * slot)) & 3 == 2:
                dr7 &= ~(3 << (2 * slot))
        hardware.dr6, hardware.dr7 = state.debugreg[6], dr7
        runner.vcpu.set_debugregs(hardware)

    def set_debugreg(self, runner: VcpuRunner, reg: int, value: int, _a3: int, _a4: int, _a5: int) -> int:
        return 0 if self.set_debugreg_value(runner, self._state(runner), reg, value) else _neg(x.EINVAL)

    def get_debugreg(self, runner: VcpuRunner, reg: int, _a2: int, _a3: int, _a4: int, _a5: int) -> int:
        state = self._state(runner)
        if reg in (4, 5):
            reg += 2
        return state.debugreg[reg] if 0 <= reg < 8 else _neg(x.EINVAL)

    def vcpu_op(self, runner: VcpuRunner, cmd: int, vcpu: int, _arg: int, _a4: int, _a5: int) -> int:
        if not 0 <= vcpu < self.domain.max_vcpus:
            return _neg(x.ENOENT)
        if cmd == x.VCPUOP_is_up:
            return 1 if self.domain.vcpu_is_up(vcpu) else 0
        if cmd in (x.VCPUOP_stop_periodic_timer, x.VCPUOP_stop_singleshot_timer):
            if vcpu == runner.id:
                runner.timer_deadline_ns = 0
            return 0
        return _neg(x.ENOSYS)

    # --- event channels --------------------------------------------------------------------------
    def event_channel_op(self, runner: VcpuRunner, cmd: int, arg: int, _a3: int, _a4: int, _a5: int) -> int:
        guest = self.guest
        if cmd == x.EVTCHNOP_init_control:
            raw = self._read(runner, arg, 16)
            if raw is None:
                return _neg(x.EFAULT)
            gfn, offset, vcpu = struct.unpack("<QII", raw)
            if offset & 7 or offset > 4096 - 8 or vcpu >= self.domain.max_vcpus or not 0 <= gfn < guest.nr_pages:
                return _neg(x.EINVAL)
            return _neg(x.EOPNOTSUPP)  # FIFO event channels: only the 2-level ABI is offered
        if cmd == x.EVTCHNOP_expand_array:
            return _neg(x.EOPNOTSUPP)
        # Where each op's IN fields end and its OUT port sits (public/event_channel.h).
        port_at = {x.EVTCHNOP_alloc_unbound: 4, x.EVTCHNOP_bind_ipi: 4, x.EVTCHNOP_bind_virq: 8}
        if cmd in port_at:
            raw = self._read(runner, arg, port_at[cmd])
            if raw is None:
                return _neg(x.EFAULT)
            if cmd == x.EVTCHNOP_alloc_unbound:
                dom, remote = struct.unpack("<HH", raw)
                if dom not in (x.DOMID_SELF, self.domain.domid):
                    return _neg(x.EPERM)
                if remote not in (x.DOMID_SELF, self.domain.domid):
                    return _neg(x.ESRCH)  # no other domain to talk to on this engine
                binding: tuple[str, int] = ("unbound", self.domain.domid)
            elif cmd == x.EVTCHNOP_bind_ipi:
                (vcpu,) = struct.unpack("<I", raw)
                if vcpu >= self.domain.max_vcpus:
                    return _neg(x.ENOENT)
                binding = ("ipi", vcpu)
            else:
                virq, vcpu = struct.unpack("<II", raw)
                if vcpu >= self.domain.max_vcpus or virq >= 24:
                    return _neg(x.EINVAL if virq >= 24 else x.ENOENT)
                if any(kind == f"virq{virq}" for kind, _ in guest.ports.values()):
                    return _neg(x.EEXIST)
                binding = (f"virq{virq}", vcpu)
            port = next((p for p in range(1, x.EVTCHN_2L_NR_CHANNELS) if p not in guest.ports), None)
            if port is None:
                return _neg(x.ENOSPC)
            if not self._write(runner, arg + port_at[cmd], struct.pack("<I", port)):
                return _neg(x.EFAULT)
            guest.ports[port] = binding
            return 0
        if cmd == x.EVTCHNOP_status:
            raw = self._read(runner, arg, 8)
            if raw is None:
                return _neg(x.EFAULT)
            dom, port = struct.unpack("<HxxI", raw)
            if dom not in (x.DOMID_SELF, self.domain.domid):
                return _neg(x.ESRCH)
            if port >= x.EVTCHN_2L_NR_CHANNELS:
                return _neg(x.EINVAL)
            kind, target = guest.ports.get(port, ("closed", 0))
            if kind == "unbound":
                status, vcpu, detail = 1, 0, target
            elif kind == "ipi":
                status, vcpu, detail = 5, target, 0
            elif kind.startswith("virq"):
                status, vcpu, detail = 4, target, int(kind[4:])
            else:
                status, vcpu, detail = 0, 0, 0
            ok = self._write(runner, arg + 8, struct.pack("<IIQ", status, vcpu, detail))
            return 0 if ok else _neg(x.EFAULT)
        if cmd in (x.EVTCHNOP_send, x.EVTCHNOP_close, x.EVTCHNOP_unmask):
            raw = self._read(runner, arg, 4)
            if raw is None:
                return _neg(x.EFAULT)
            port = struct.unpack("<I", raw)[0]
            if port not in guest.ports:
                return _neg(x.EINVAL)
            if cmd == x.EVTCHNOP_close:
                del guest.ports[port]
            elif cmd == x.EVTCHNOP_send:
                vcpu = guest.raise_port(port)
                if vcpu is not None and vcpu != runner.id:
                    self.domain.runners[vcpu].wake()
            return 0
        return _neg(x.ENOSYS)

    # --- batching -----------------------------------------------------------------------------------
    def multicall(self, runner: VcpuRunner, entries: int, count: int, _a3: int, _a4: int, _a5: int) -> int | None:
        """Each entry in turn; an ``iret`` ends the batch there (Xen's fix for XSA-213: nothing
        after it may run in the context the iret left), and the multicall returns its rax."""
        if count > MAX_MULTICALL:
            return _neg(x.EINVAL)
        state = self._state(runner)
        for index in range(count):
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
            if result is None:
                return None
            if op == x.XenHypercall.iret:
                return result
            if not state.kernel_mode:
                return 0
            self._write(runner, at + 8, struct.pack("<Q", result & _U64))
        return 0


def bind_trap_exit(guest: XenGuest) -> Callable[[VcpuRunner, int], bool]:
    """The vCPU loop's hook for exits on the stubs' ports."""
    traps = guest.domain.hypercalls.traps  # type: ignore[attr-defined]  # a XenHypercalls by construction

    def on_exit(runner: VcpuRunner, port: int) -> bool:
        return traps.on_exit(runner, port)

    return on_exit


__all__ = ["XenHypercalls", "bind_trap_exit", "k", "xen_op_name"]
