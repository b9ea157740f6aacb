"""Xen's hypercalls on a PV vCPU's own state: debug registers, segment bases, IOPL, VM assists."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pvtui.engine.xen import abi as x
from pvtui.engine.xen.calls import GuestCalls
from pvtui.engine.xen.calls import neg as _neg

if TYPE_CHECKING:
    from pvtui.engine.vcpu import VcpuRunner
    from pvtui.engine.xen.guest import PvVcpu


class CpuCalls(GuestCalls):
    """set/get_debugreg, fpu_taskswitch, set_segment_base, update_descriptor, physdev_op, vm_assist."""

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
