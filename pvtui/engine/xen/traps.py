"""Exceptions of a Xen PV guest: emulate what Xen emulates, bounce the rest to the guest.

Every exception the guest raises enters a ring-0 stub in the engine's
private area, which exits to the engine with the CPU's exception frame on
the stub stack (``machine.stub_code``). :class:`TrapHandler` reads that
frame and either emulates the instruction (forced-emulation ``cpuid``,
``mov %crN``/``%drN``, ``rdmsr``/``wrmsr``, ``cli``/``sti``/``in``/``out``
under the virtual IOPL, soft ``int $n``, ``syscall``) or builds Xen's bounce
frame on the guest kernel's stack and points the frame at the guest's
handler; the stub's ``iretq`` then goes there. Each bounce is recorded in
the hypercall log as its own record (``trap``) with its latency.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from pvtui.engine.kvm import ioctl as k
from pvtui.engine.xen import abi as x
from pvtui.engine.xen import machine as m
from pvtui.engine.xen.decode import Insn, decode
from pvtui.engine.xen.frames import bounce_frame, get_gpr, set_gpr
from pvtui.engine.xen.guest import canonical

if TYPE_CHECKING:
    from pvtui.engine.vcpu import VcpuRunner
    from pvtui.engine.xen.guest import PvVcpu, XenGuest
    from pvtui.engine.xen.hypercalls import XenHypercalls

_FRAME = struct.Struct("<5Q")
_U64 = (1 << 64) - 1
#: The op number trap records carry in the hypercall log (beyond Xen's hypercall numbers).
TRAP_RECORD_OP = 0x100
_EXCEPTION_NAMES = {
    0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF", 10: "#TS",
    11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM", 20: "#VE", 21: "#CP",
}  # fmt: skip
_FATAL = {x.X86_EXC_DF, 2, 18}
MSR_DEBUGCTL = 0x1D9
MSR_PLATFORM_INFO, MSR_MISC_FEATURES_ENABLES = 0xCE, 0x140
MSR_EFER, MSR_FS_BASE, MSR_GS_BASE, MSR_SHADOW_GS_BASE, MSR_TSC = 0xC0000080, 0xC0000100, 0xC0000101, 0xC0000102, 0x10
XEN_CPUID_BASE = 0x40000000
XEN_CPUID_SIGNATURE = (0x566E6558, 0x65584D4D, 0x4D4D566E)  # "XenVMMXenVMM"


def exception_name(vector: int) -> str:
    return _EXCEPTION_NAMES.get(vector, f"vector {vector}")


class GuestCrash(Exception):
    """The guest did something Xen would crash it for; the message says what."""


class TrapHandler:
    """Handles one domain's exception exits (one instance per domain)."""

    def __init__(self, guest: XenGuest, calls: XenHypercalls) -> None:
        self.guest = guest
        self.calls = calls
        self.domain = guest.domain
        self._cpuid: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        self._cpuid_indexed: set[int] = set()
        table = self.domain.kvm.supported_cpuid()
        for i in range(table.nent):
            entry = table.entries[i]
            self._cpuid[(entry.function, entry.index)] = (entry.eax, entry.ebx, entry.ecx, entry.edx)
            if entry.flags & 1:  # KVM_CPUID_FLAG_SIGNIFCANT_INDEX
                self._cpuid_indexed.add(entry.function)

    # --- the exit ----------------------------------------------------------------------
    def on_exit(self, runner: VcpuRunner, port: int) -> bool:
        """A stub reported exception ``port - TRAP_PORT_BASE``; False when the vCPU must stop."""
        vector = port - m.TRAP_PORT_BASE
        regs = runner.vcpu.run.regs
        state = self.guest.vcpus[runner.id]
        started = time.monotonic_ns()
        has_code = vector in x.EXC_HAS_ERROR_CODE
        frame_va = regs.rsp + (8 if has_code else 0)
        at = frame_va - m.PRIVATE_VA
        error_code = struct.unpack_from("<Q", self.guest.private, at - 8)[0] if has_code else 0
        rip, cs, rflags, rsp, ss = _FRAME.unpack_from(self.guest.private, at)
        frame = [rip, cs & 0xFFFF, rflags, rsp, ss & 0xFFFF]
        try:
            handled = self._handle(runner, state, vector, error_code, frame)
            if handled is not None:
                self.calls.record_trap(runner, handled[0], handled[1], frame[0], rip, started)
        except GuestCrash as exc:
            self.domain.guest_crashed(f"vCPU {runner.id}: {exc}")
            return False
        _FRAME.pack_into(self.guest.private, at, frame[0], x.FLAT_RING3_CS64, frame[2], frame[3], x.FLAT_RING3_SS64)
        regs.rsp = frame_va
        runner.vcpu.run.kvm_dirty_regs = k.KVM_SYNC_X86_REGS
        return True

    def _handle(
        self, runner: VcpuRunner, state: PvVcpu, vector: int, error_code: int, frame: list[int]
    ) -> tuple[int, int] | None:
        """Emulate, or bounce; returns (vector, error code) when a trap was bounced."""
        if vector in _FATAL:
            raise GuestCrash(f"{exception_name(vector)} at rip {frame[0]:#x}")
        if vector == x.X86_EXC_DB:  # what hit is in the hardware DR6: the guest reads it with mov %dr6
            hardware = runner.vcpu.get_debugregs()
            state.debugreg[6] = (hardware.dr6 & 0xE00F) | 0xFFFF0FF0
            hardware.dr6 = 0xFFFF0FF0
            runner.vcpu.set_debugregs(hardware)
        if vector == x.X86_EXC_PF:
            cr2 = runner.vcpu.get_sregs().cr2
            if cr2 == m.SYSCALL_TRAP_VA and frame[0] == m.SYSCALL_TRAP_VA:
                return self._syscall(runner, state, frame)
            self.guest.set_cr2(runner.id, cr2)
            if state.kernel_mode:  # the guest kernel runs in ring 3, but its faults are a kernel's
                error_code &= ~x.PFEC_USER
            return self.bounce(runner, state, vector, error_code, frame)
        if vector == x.X86_EXC_UD or (vector == x.X86_EXC_GP and (error_code == 0 or error_code & 2)):
            insn = self._instruction(state, frame[0])
            if insn is not None:
                emulated = self._emulate(runner, state, vector, error_code, insn, frame)
                if emulated is not False:
                    return emulated if isinstance(emulated, tuple) else None
        return self.bounce(runner, state, vector, error_code if vector in x.EXC_HAS_ERROR_CODE else None, frame)

    def _instruction(self, state: PvVcpu, rip: int) -> Insn | None:
        code = b""
        for length in (15, 8, 4):  # near the end of a mapping, a shorter read may still fit
            code = self.guest.read_virt(state, rip, length) or b""
            if code:
                break
        return decode(code) if code else None

    # --- emulation -----------------------------------------------------------------------
    def _emulate(
        self, runner: VcpuRunner, state: PvVcpu, vector: int, error_code: int, insn: Insn, frame: list[int]
    ) -> tuple[int, int] | bool | None:
        """None: emulated, the guest continues after it; a tuple: bounced; False: not ours."""
        regs = runner.vcpu.run.regs
        kind = insn.kind
        if kind == "cpuid" and insn.forced:
            leaf, sub = regs.rax & 0xFFFFFFFF, regs.rcx & 0xFFFFFFFF
            regs.rax, regs.rbx, regs.rcx, regs.rdx = self.cpuid(leaf, sub)
        elif kind in ("int", "int3", "icebp", "into"):
            return self._soft_interrupt(runner, state, insn, frame)
        elif vector == x.X86_EXC_UD:
            return False
        elif kind in ("cli", "sti", "in", "out", "ins", "outs"):
            if not self._iopl_ok(state):
                return self.bounce(runner, state, x.X86_EXC_GP, 0, frame)
            if kind in ("cli", "sti"):
                self.guest.set_upcall_mask(runner.id, kind == "cli")
            elif kind == "in":
                mask = (1 << (8 * insn.size)) - 1
                regs.rax = (regs.rax & ~mask & _U64) | mask  # nothing is there: all ones
            elif kind in ("ins", "outs"):
                return self.bounce(runner, state, x.X86_EXC_GP, 0, frame)
        elif not state.kernel_mode:
            return False  # privileged instructions from guest user mode: #GP, as Xen
        elif kind == "mov_from_cr":
            value = self._read_cr(runner, state, insn.cr)
            if value is None:
                return False
            set_gpr(regs, frame, insn.gpr, value)
        elif kind == "mov_to_cr":
            if not self._write_cr(runner, state, insn.cr, get_gpr(regs, frame, insn.gpr)):
                return False
        elif kind == "mov_from_dr":
            value = self._read_dr(state, insn.cr)
            if value is None:
                return False
            set_gpr(regs, frame, insn.gpr, value)
        elif kind == "mov_to_dr":
            if not self.calls.cpu.set_debugreg_value(runner, state, insn.cr, get_gpr(regs, frame, insn.gpr)):
                return False
        elif kind == "rdmsr":
            value = self._rdmsr(runner, state, regs.rcx & 0xFFFFFFFF)
            if value is None:
                return False
            regs.rax, regs.rdx = value & 0xFFFFFFFF, value >> 32
        elif kind == "wrmsr":
            if not self._wrmsr(
                runner, state, regs.rcx & 0xFFFFFFFF, (regs.rdx & 0xFFFFFFFF) << 32 | regs.rax & 0xFFFFFFFF
            ):
                return False
        else:
            return False
        frame[0] = (frame[0] + insn.length) & _U64
        return None

    def _iopl_ok(self, state: PvVcpu) -> bool:
        """Xen's ``iopl_ok``: the virtual IOPL against the virtual CPL (user 3; kernel 1,
        or 0 once the guest enabled VMASST_TYPE_architectural_iopl)."""
        architectural = self.guest.vm_assist & (1 << x.VMASST_TYPE_architectural_iopl)
        cpl = (0 if architectural else 1) if state.kernel_mode else 3
        return state.iopl >= cpl

    def _soft_interrupt(
        self, runner: VcpuRunner, state: PvVcpu, insn: Insn, frame: list[int]
    ) -> tuple[int, int] | bool | None:
        """``int $n``: delivered if the trap table's DPL allows it from here, else #GP(n<<3|2)."""
        if insn.kind == "into":
            return False  # invalid in 64-bit mode: the #UD stands
        vector = insn.vector
        if insn.kind == "int":
            flags = state.traps.get(vector, (0, 0, 0))[0]
            if (flags & x.TI_DPL_MASK) < (1 if state.kernel_mode else 3):
                return self.bounce(runner, state, x.X86_EXC_GP, (vector << 3) | 2, frame)
        frame[0] = (frame[0] + insn.length) & _U64
        return self.bounce(runner, state, vector, None, frame)

    def _read_cr(self, runner: VcpuRunner, state: PvVcpu, cr: int) -> int | None:
        if cr == 0:
            return 0x80050033
        if cr == 2:
            return state.cr2
        if cr == 3:
            return self.guest.current_cr3(state)
        if cr == 4:
            return state.cr4
        return None

    def _write_cr(self, runner: VcpuRunner, state: PvVcpu, cr: int, value: int) -> bool:
        if cr == 2:
            self.guest.set_cr2(runner.id, value)
            return True
        if cr == 3:
            return self.calls.mmu.new_baseptr(runner, state, value >> 12, user=False) == 0
        if cr == 4 and not (value ^ state.cr4) & ~x.CR4_GUEST_WRITABLE:
            state.cr4 = value
            return True
        return False

    @staticmethod
    def _read_dr(state: PvVcpu, dr: int) -> int | None:
        if dr in (4, 5):
            if state.cr4 & x.CR4_DE:
                return None  # #UD on real hardware; a #GP here
            dr += 2  # aliases of DR6 and DR7 while CR4.DE is clear
        return state.debugreg[dr] if dr < 8 else None

    def _wrmsr(self, runner: VcpuRunner, state: PvVcpu, index: int, value: int) -> bool:
        """The MSRs a PV kernel may write (to their current value); anything else is #GP, as Xen.

        CPUID faulting is not offered: PVM runs a CPL-3 ``cpuid`` without
        faulting it even when KVM's MSR says so, so a user-mode ``cpuid``
        could not be made to fault (tests/test_xen.py, docs/xen-abi.md).
        """
        return index in (MSR_DEBUGCTL, MSR_MISC_FEATURES_ENABLES) and value == 0

    def _rdmsr(self, runner: VcpuRunner, state: PvVcpu, index: int) -> int | None:
        if index in (MSR_FS_BASE, MSR_GS_BASE):
            sregs = runner.vcpu.get_sregs()
            return int(sregs.fs.base if index == MSR_FS_BASE else sregs.gs.base)
        if index == MSR_EFER:
            return 0xD01  # SCE, LME, LMA, NXE as a 64-bit PV kernel sees them
        if index == MSR_TSC:
            return runner.vcpu.read_tsc()
        if index == MSR_DEBUGCTL:
            return 0  # no branch tracing offered, as Xen for a PV guest
        if index in (MSR_PLATFORM_INFO, MSR_MISC_FEATURES_ENABLES):
            return 0  # no CPUID faulting (see _wrmsr)
        return None

    def cpuid(self, leaf: int, sub: int) -> tuple[int, int, int, int]:
        """CPUID as a Xen PV guest sees it: KVM's supported table plus Xen's leaves."""
        if XEN_CPUID_BASE <= leaf < XEN_CPUID_BASE + 0x100:
            if leaf == XEN_CPUID_BASE:
                return (XEN_CPUID_BASE + 4, *XEN_CPUID_SIGNATURE)
            if leaf == XEN_CPUID_BASE + 1:
                return ((x.XEN_VERSION_MAJOR << 16) | x.XEN_VERSION_MINOR, 0, 0, 0)
            if leaf == XEN_CPUID_BASE + 2:
                return (1, 0x40000000, 0, 0)  # one hypercall page, MSR base
            return (0, 0, 0, 0)
        key = (leaf, sub if leaf in self._cpuid_indexed else 0)
        eax, ebx, ecx, edx = self._cpuid.get(key, (0, 0, 0, 0))
        if leaf == 1:
            ecx |= 1 << 31  # running under a hypervisor
            ebx = (ebx & 0x00FFFFFF) | (runnerless_apic_id() << 24)
        return eax, ebx, ecx, edx

    def _syscall(self, runner: VcpuRunner, state: PvVcpu, frame: list[int]) -> tuple[int, int] | None:
        """SYSCALL lands on LSTAR's unmapped page: user mode goes to the guest's syscall
        callback (Xen's switch to kernel); kernel mode makes a hypercall (Xen's 64-bit
        hypercall instruction), returning to rcx with r11's flags."""
        regs = runner.vcpu.run.regs
        frame[0], frame[2] = regs.rcx, (regs.r11 & x.RFLAGS_GUEST_MASK) | 0x202
        if not state.kernel_mode:
            return self.bounce_callback(runner, state, x.CALLBACKTYPE_syscall, frame, syscall=True)
        # The hypercall sees the guest's own context (an iret among its work replaces it).
        stub = regs.rip, regs.rflags, regs.rsp
        regs.rip, regs.rflags, regs.rsp = frame[0], frame[2], frame[3]
        result = self.calls.dispatch(runner, regs.rax & 0xFFFFFFFF, regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8)
        frame[0], frame[2], frame[3] = regs.rip, regs.rflags, regs.rsp
        regs.rip, regs.rflags, regs.rsp = stub  # the stub's iretq takes the guest there
        if result is None:
            raise GuestCrash("the guest stopped in a hypercall made with syscall")
        regs.rax = result & _U64
        if not canonical(frame[0]):
            # SYSRET to a non-canonical address would fault in the hypervisor (XSA-7):
            # Xen delivers #GP(0) at that address to the guest instead.
            return self.bounce(runner, state, x.X86_EXC_GP, 0, frame)
        return None

    # --- delivery ----------------------------------------------------------------------------
    def bounce(
        self, runner: VcpuRunner, state: PvVcpu, vector: int, error_code: int | None, frame: list[int]
    ) -> tuple[int, int]:
        """Deliver ``vector`` to the guest's trap-table handler (Xen's create_bounce_frame)."""
        flags, _cs, handler = state.traps.get(vector, (0, 0, 0))
        if not handler:
            raise GuestCrash(
                f"{exception_name(vector)} (error code {error_code or 0:#x}) at rip {frame[0]:#x} "
                f"and the guest has no handler for it"
            )
        self.deliver(runner, state, handler, bool(flags & x.TI_MASK_EVENTS), error_code, frame)
        return vector, error_code or 0

    def bounce_callback(
        self, runner: VcpuRunner, state: PvVcpu, kind: int, frame: list[int], syscall: bool = False
    ) -> tuple[int, int]:
        address, flags = state.callbacks.get(kind, (0, 0))
        if not address:
            what = "syscall" if syscall else f"callback {kind}"
            raise GuestCrash(f"{what} at rip {frame[0]:#x} and the guest registered no callback for it")
        self.deliver(runner, state, address, bool(flags & x.CALLBACKF_mask_events), None, frame)
        return (0x100 if syscall else 0x200), 0

    def deliver(
        self,
        runner: VcpuRunner,
        state: PvVcpu,
        handler: int,
        mask_events: bool,
        error_code: int | None,
        frame: list[int],
    ) -> None:
        """Write Xen's frame (SS RSP RFLAGS CS RIP [error] R11 RCX) and point ``frame`` at ``handler``."""
        guest, regs = self.guest, runner.vcpu.run.regs
        rip, _cs, rflags, rsp, ss = frame
        kernel = state.kernel_mode
        if not kernel:
            self.calls.mmu.toggle_mode(runner, state)
        saved_mask = guest.upcall_mask(runner.id)
        if mask_events:
            guest.set_upcall_mask(runner.id, True)
        iopl = state.iopl if guest.vm_assist & (1 << x.VMASST_TYPE_architectural_iopl) else None
        new_rsp, blob = bounce_frame(
            kernel, rsp if kernel else state.kernel_sp, regs.rcx, regs.r11, error_code, rip, rflags, rsp, ss,
            saved_mask, iopl,
        )  # fmt: skip
        if not guest.write_virt(state, new_rsp, blob):
            raise GuestCrash(f"cannot write a bounce frame to the guest stack at {new_rsp:#x}")
        frame[0] = handler
        frame[2] = rflags & ~(x.RFLAGS_AC | x.RFLAGS_VM | x.RFLAGS_RF | x.RFLAGS_NT | x.RFLAGS_TF)
        frame[3] = new_rsp


def runnerless_apic_id() -> int:
    """The initial APIC id reported in leaf 1 (vCPU 0's; PV guests do not use it)."""
    return 0
