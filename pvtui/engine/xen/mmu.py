"""Xen's MMU hypercalls for a PV guest: page-table updates, base pointers, the GDT, reservations.

PVM does not see the engine's writes to guest page tables, so every change
ends with :meth:`XenGuest.flush_mappings` (``docs/xen-abi.md``).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pvtui.engine.xen import abi as x
from pvtui.engine.xen import machine as m
from pvtui.engine.xen.calls import GuestCalls
from pvtui.engine.xen.calls import neg as _neg
from pvtui.engine.xen.machine import PAGE

if TYPE_CHECKING:
    from pvtui.engine.vcpu import VcpuRunner
    from pvtui.engine.xen.guest import PvVcpu, XenGuest


class MmuCalls(GuestCalls):
    """update_va_mapping, mmu_update, mmuext_op, set_gdt, memory_op, and the kernel/user switch."""

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
            level = table_level(self.guest, self.guest.current_cr3(self._state(runner)), address)
            if level == 4 and (address & 0xFFF) // 8 == m.PRIVATE_L4_SLOT:
                return _neg(x.EPERM)  # the engine's own slot
            self.guest.memory.write(address, struct.pack("<Q", pte))
            if level is not None and level > 1 and pte & x.PTE_P and not pte & x.PTE_PSE:
                validate_tables(self.guest, pte, level - 1)  # as Xen validates a table it links in
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
            validate_tables(self.guest, mfn << 12, 4)
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

    def toggle_mode(self, runner: VcpuRunner, state: PvVcpu) -> None:
        """Xen's toggle_guest_mode: kernel <-> user, switching page tables if they differ."""
        before = self.guest.current_cr3(state)
        state.kernel_mode = not state.kernel_mode
        after = self.guest.current_cr3(state)
        if after != before:
            sregs = runner.vcpu.get_sregs()
            sregs.cr3 = after
            runner.vcpu.set_sregs(sregs)


def validate_tables(guest: XenGuest, table_gpa: int, level: int) -> None:
    """Xen's page-table validation, as far as a 64-bit PV guest sees it: every present
    entry of the table at ``table_gpa`` (``level`` 4..1) and of the tables below it gets
    the user bit (the guest kernel runs in ring 3). Frames outside the guest's RAM are
    left alone."""
    seen: set[int] = set()
    work = [(table_gpa & x.PTE_ADDR_MASK, level)]
    while work:
        table, depth = work.pop()
        if table in seen or not 0 <= table >> 12 < guest.nr_pages:
            continue
        seen.add(table)
        entries = list(struct.unpack("<512Q", guest.ram[table : table + PAGE]))
        changed = False
        for index, entry in enumerate(entries):
            if not entry & x.PTE_P or (depth == 4 and index == m.PRIVATE_L4_SLOT):
                continue
            if not entry & x.PTE_US:
                entries[index] = entry | x.PTE_US
                changed = True
            if depth > 1 and not (depth in (2, 3) and entry & x.PTE_PSE):
                work.append((entry & x.PTE_ADDR_MASK, depth - 1))
        if changed:
            guest.ram[table : table + PAGE] = struct.pack("<512Q", *entries)
            guest.memory.note_written(table, PAGE)


def table_level(guest: XenGuest, cr3: int, table_gpa: int) -> int | None:
    """The level (4..1) ``table_gpa``'s page has in the tables under ``cr3``, if it is one of them."""
    frame = table_gpa & x.PTE_ADDR_MASK
    level_tables = [cr3 & x.PTE_ADDR_MASK]
    for level in (4, 3, 2, 1):
        if frame in level_tables:
            return level
        if level == 1:
            return None
        below = []
        for table in level_tables:
            if not 0 <= table >> 12 < guest.nr_pages:
                continue
            for index, entry in enumerate(struct.unpack("<512Q", guest.ram[table : table + PAGE])):
                large = level in (2, 3) and entry & x.PTE_PSE
                private = level == 4 and index == m.PRIVATE_L4_SLOT
                if entry & x.PTE_P and not large and not private:
                    below.append(entry & x.PTE_ADDR_MASK)
        level_tables = below
    return None
