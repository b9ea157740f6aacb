"""A running Xen PV guest: its machine, its address space, and its vCPUs' PV state.

The domain builder's half (``XenGuest.__init__``) lays out Xen's boot
structures and the engine's private area; the rest is what hypercalls and
trap delivery need: reading and writing guest-*virtual* memory through the
guest's own page tables, writing page-table entries the way PVM sees them,
and each vCPU's PV state (kernel or user mode, trap table, callbacks,
virtual IOPL, control and debug registers).
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pvtui.engine.errors import DomainError
from pvtui.engine.kvm.structs import KvmSegment, kvm_msrs
from pvtui.engine.xen import abi as x
from pvtui.engine.xen import machine as m
from pvtui.engine.xen.notes import XenNotes

if TYPE_CHECKING:
    from pvtui.engine.domain import Domain
    from pvtui.engine.kvm import Vcpu

PAGE = m.PAGE
PRIVATE_SLOT = 200
MSR_LSTAR, MSR_STAR, MSR_CSTAR, MSR_SYSCALL_MASK = 0xC0000082, 0xC0000081, 0xC0000083, 0xC0000084
_U64 = struct.Struct("<Q")
_CANONICAL_LOW, _CANONICAL_HIGH = 0x0000_8000_0000_0000, 0xFFFF_8000_0000_0000


def canonical(va: int) -> bool:
    return va < _CANONICAL_LOW or va >= _CANONICAL_HIGH


@dataclass
class PvVcpu:
    """One vCPU's PV state, as Xen keeps it in ``struct pv_vcpu``."""

    kernel_mode: bool = True
    kernel_ss: int = x.FLAT_KERNEL_SS
    kernel_sp: int = 0
    #: vector -> (flags, cs, handler address), from set_trap_table
    traps: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    #: CALLBACKTYPE_* -> (address, flags)
    callbacks: dict[int, tuple[int, int]] = field(default_factory=dict)
    iopl: int = 0  # virtual IOPL, 0-3
    cr2: int = 0
    cr4: int = x.GUEST_CR4
    kernel_cr3: int = 0
    user_cr3: int = 0
    debugreg: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0, 0, 0xFFFF0FF0, 0x400])
    gdt_frames: list[int] = field(default_factory=list)
    gdt_entries: int = 0


class XenGuest:
    """The Xen personality of one domain (built by :class:`~pvtui.engine.domain.Domain`)."""

    def __init__(self, domain: Domain, notes: XenNotes, kernel_end: int, cmdline: str) -> None:
        self.domain = domain
        self.notes = notes
        self.memory = domain.memory
        #: The boot RAM slot (it starts at 0): the fast path of every guest access.
        self.ram = domain.memory.slots[0].view
        self.nr_pages = domain.config.memory // PAGE
        self.vm_assist = 0
        self._lock = threading.RLock()
        self.boot = m.boot_layout(self.nr_pages, kernel_end)
        if self.boot.end > domain.config.memory:
            raise DomainError(
                f"Domain {domain.name} has too little memory",
                f"Its kernel and Xen's boot structures need {self.boot.end >> 20} MiB; raise memory:.",
            )
        pages = m.private_pages(domain.max_vcpus)
        self._private_map = mmap.mmap(-1, pages * PAGE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.private = memoryview(self._private_map)
        self._private_host = ctypes.addressof(ctypes.c_char.from_buffer(self._private_map))
        self._private_size = pages * PAGE
        domain.vm.set_memory_region(PRIVATE_SLOT, m.PRIVATE_GPA, self._private_size, self._private_host)
        self._write_private()
        self._write_boot(cmdline)
        self.shared_info_maddr = m.PRIVATE_GPA + m.P_SHARED_INFO * PAGE
        self.shared = self.private[m.P_SHARED_INFO * PAGE : (m.P_SHARED_INFO + 1) * PAGE]
        self.vcpus: dict[int, PvVcpu] = {}
        #: 2-level event channels: port -> (kind, vcpu) for ports in use
        self.ports: dict[int, tuple[str, int]] = {}
        #: (cr3, virtual page) -> (guest-physical page, writable): the walks the guest's
        #: tables gave, dropped whenever a table or cr3 changes (flush_mappings).
        self._tlb: dict[tuple[int, int], tuple[int, bool]] = {}
        self.grant_frames = 0
        self.grant_version = 1

    # --- building ---------------------------------------------------------------
    def _write_private(self) -> None:
        def put(page: int, data: bytes, offset: int = 0) -> None:
            at = page * PAGE + offset
            self.private[at : at + len(data)] = data

        put(m.P_IDT, m.idt_bytes(m.PRIVATE_VA + m.P_STUBS * PAGE))
        put(m.P_STUBS, m.stub_code())
        put(m.P_FAST_IRET, m.fast_iret_code())
        self.set_fast_iret()
        for page, data in m.private_tables(self.domain.max_vcpus).items():
            put(page, data)
        for vcpu in range(self.domain.max_vcpus):
            tss_va = m.PRIVATE_VA + m.vcpu_tss_page(vcpu) * PAGE
            rsp0 = m.PRIVATE_VA + (m.vcpu_stack_page(vcpu) + 1) * PAGE
            put(m.vcpu_tss_page(vcpu), m.tss_bytes(rsp0))
            reserved_page = m.P_VCPU_BASE + vcpu * m.VCPU_PAGES + x.GDT_GUEST_PAGES
            put(reserved_page, m.reserved_gdt_page(tss_va))
        struct.pack_into("<Q", self.private, m.P_SHARED_INFO * PAGE + x.SHI_MAX_PFN, self.nr_pages)

    def _write_boot(self, cmdline: str) -> None:
        mem, boot = self.memory, self.boot
        private_l3 = m.PRIVATE_GPA + m.P_L3 * PAGE
        for addr, table in m.guest_page_tables(boot, private_l3).items():
            mem.write(addr, table)
        mem.write(boot.p2m, struct.pack(f"<{self.nr_pages}Q", *range(self.nr_pages)))
        flags = x.SIF_PRIVILEGED | x.SIF_INITDOMAIN
        encoded = cmdline.encode()[: x.MAX_GUEST_CMDLINE - 1]
        info = m.start_info_bytes(boot, m.PRIVATE_GPA + m.P_SHARED_INFO * PAGE, flags, encoded)
        mem.write(boot.start_info, info)
        if not mem.write(self.notes.hypercall_page, m.hypercall_page()):
            raise DomainError(
                f"Kernel of {self.domain.name} has its hypercall page outside memory",
                f"XEN_ELFNOTE_HYPERCALL_PAGE says {self.notes.hypercall_page:#x}; raise memory: or fix the kernel.",
            )

    def set_fast_iret(self) -> None:
        """Allow the native iret only where it changes nothing the engine tracks: one vCPU
        (it compares vcpu_info[0]'s mask) and no architectural IOPL (iret then sets the IOPL)."""
        allowed = self.domain.max_vcpus == 1 and not self.vm_assist & (1 << x.VMASST_TYPE_architectural_iopl)
        self.private[m.P_FAST_IRET * PAGE + m.FAST_IRET_FLAG_OFFSET] = 1 if allowed else 0

    def setup_vcpu(self, vcpu: Vcpu, entry: int) -> PvVcpu:
        """Ring-3 flat segments with Xen's selectors, the engine's GDT/IDT/TSS, LSTAR trap."""
        state = PvVcpu(kernel_sp=self.boot.stack_top, kernel_cr3=self.boot.pt_base, user_cr3=0)
        self.vcpus[vcpu.id] = state
        sregs = vcpu.get_sregs()

        def segment(selector: int, type_: int, dpl: int, l_bit: int, db: int, s: int = 1) -> KvmSegment:
            seg = KvmSegment()
            seg.base, seg.limit, seg.selector, seg.type, seg.present = 0, 0xFFFFFFFF, selector, type_, 1
            seg.dpl, seg.db, seg.s, seg.l, seg.g = dpl, db, s, l_bit, 1
            return seg

        sregs.cs = segment(x.FLAT_RING3_CS64, 11, 3, 1, 0)
        data = segment(x.FLAT_RING3_SS64, 3, 3, 0, 1)
        for name in ("ds", "es", "fs", "gs", "ss"):
            setattr(sregs, name, data)
        tr = KvmSegment()
        tr.base = m.PRIVATE_VA + m.vcpu_tss_page(vcpu.id) * PAGE
        tr.limit, tr.selector, tr.type, tr.present = m.TSS_LIMIT, m.TSS_SELECTOR, 11, 1
        sregs.tr = tr
        sregs.gdt.base, sregs.gdt.limit = m.vcpu_gdt_va(vcpu.id), m.GDT_PAGES * PAGE - 1
        sregs.idt.base, sregs.idt.limit = m.PRIVATE_VA + m.P_IDT * PAGE, 256 * 16 - 1
        sregs.cr0 = 0x80050033
        sregs.cr3 = self.boot.pt_base
        sregs.cr4 = 0x620
        sregs.efer = 0x500
        vcpu.set_sregs(sregs)
        msrs = kvm_msrs([MSR_LSTAR, MSR_STAR, MSR_SYSCALL_MASK])
        for i, value in enumerate((m.SYSCALL_TRAP_VA, 0, 0)):
            msrs.entries[i].data = value
        vcpu.set_msrs(msrs)
        return state

    # --- guest memory through the guest's page tables ------------------------------
    def phys_read(self, gpa: int, length: int) -> bytes | None:
        if gpa >= m.PRIVATE_GPA and gpa + length <= m.PRIVATE_GPA + self._private_size:
            at = gpa - m.PRIVATE_GPA
            return self.private[at : at + length].tobytes()
        return self.memory.read(gpa, length)

    def phys_write(self, gpa: int, data: bytes) -> bool:
        if gpa >= m.PRIVATE_GPA and gpa + len(data) <= m.PRIVATE_GPA + self._private_size:
            at = gpa - m.PRIVATE_GPA
            self.private[at : at + len(data)] = data
            return True
        return self.memory.write(gpa, data)

    def walk(self, cr3: int, va: int, write: bool = False, user: bool = True) -> tuple[int, int]:
        """(guest-physical address, 0) for ``va``, or (0, #PF error code) if the access faults."""
        if not canonical(va):
            return 0, -1
        table = cr3 & x.PTE_ADDR_MASK
        code = (x.PFEC_WRITE if write else 0) | (x.PFEC_USER if user else 0)
        for level, shift in enumerate((39, 30, 21, 12)):
            raw = self.phys_read(table + ((va >> shift) & 511) * 8, 8)
            if raw is None:
                return 0, code | x.PFEC_RSVD
            entry = _U64.unpack(raw)[0]
            if not entry & x.PTE_P:
                return 0, code
            if (write and not entry & x.PTE_RW) or (user and not entry & x.PTE_US):
                return 0, code | x.PFEC_PRESENT
            if entry & x.PTE_PSE and level in (1, 2):
                size = 1 << shift
                return (entry & x.PTE_ADDR_MASK & ~(size - 1)) | (va & (size - 1)), 0
            table = entry & x.PTE_ADDR_MASK
        return table | (va & 0xFFF), 0

    def current_cr3(self, state: PvVcpu) -> int:
        return state.kernel_cr3 if state.kernel_mode or not state.user_cr3 else state.user_cr3

    def translate(self, cr3: int, va: int, write: bool) -> int | None:
        """Guest-physical address of ``va`` for a guest-kernel access, cached per page."""
        key = (cr3, va >> 12)
        hit = self._tlb.get(key)
        if hit is not None and (hit[1] or not write):
            return hit[0] | (va & 0xFFF)
        gpa, fault = self.walk(cr3, va & ~0xFFF, write=write)
        if fault:
            return None
        writable = write or not self.walk(cr3, va & ~0xFFF, write=True)[1]
        self._tlb[key] = (gpa, writable)
        return gpa | (va & 0xFFF)

    def read_virt(self, state: PvVcpu, va: int, length: int) -> bytes | None:
        """Bytes at guest-virtual ``va`` as the guest kernel sees them, or None if any page is unmapped."""
        cr3 = self.current_cr3(state)
        if (va & 0xFFF) + length <= PAGE:  # the common case: one page
            gpa = self.translate(cr3, va, False)
            return None if gpa is None else self.phys_read(gpa, length)
        out = bytearray()
        while length > 0:
            gpa = self.translate(cr3, va, False)
            chunk = min(length, PAGE - (va & 0xFFF))
            data = None if gpa is None else self.phys_read(gpa, chunk)
            if data is None:
                return None
            out += data
            va, length = va + chunk, length - chunk
        return bytes(out)

    def write_virt(self, state: PvVcpu, va: int, data: bytes) -> bool:
        cr3 = self.current_cr3(state)
        at = 0
        while at < len(data):
            gpa = self.translate(cr3, va + at, True)
            if gpa is None:
                return False
            chunk = min(len(data) - at, PAGE - ((va + at) & 0xFFF))
            if not self.phys_write(gpa, data[at : at + chunk]):
                return False
            at += chunk
        return True

    # --- page-table writes PVM can see ----------------------------------------------
    def flush_mappings(self) -> None:
        """Make PVM's shadow MMU drop what it cached of the guest's tables.

        PVM does not see the VMM's own writes to page tables in guest memory
        (measured on PVM); deleting and re-adding the memory slots does flush
        them (~0.06 ms each). Only the calling vCPU runs Xen PV guests' MMU
        hypercalls, so no other vCPU is inside KVM_RUN on a vanishing slot.
        """
        with self._lock:
            self._tlb.clear()
            vm = self.domain.vm
            for slot in self.memory.slots:
                vm.set_memory_region(slot.index, slot.gpa, 0, slot.host_addr)
                vm.set_memory_region(slot.index, slot.gpa, slot.size, slot.host_addr)
            vm.set_memory_region(PRIVATE_SLOT, m.PRIVATE_GPA, 0, self._private_host)
            vm.set_memory_region(PRIVATE_SLOT, m.PRIVATE_GPA, self._private_size, self._private_host)

    def frame_ok(self, mfn: int) -> bool:
        """A frame a guest PTE may point at: its own RAM or its shared_info page."""
        if 0 <= mfn < self.nr_pages or mfn == self.shared_info_maddr >> 12:
            return True
        first_grant = (m.PRIVATE_GPA >> 12) + m.P_GRANT
        return first_grant <= mfn < first_grant + self.grant_frames

    def l1_entry_address(self, cr3: int, va: int) -> int | None:
        """Guest-physical address of the L1 entry for ``va`` (None: no L1 table there)."""
        table = cr3 & x.PTE_ADDR_MASK
        for shift in (39, 30, 21):
            raw = self.phys_read(table + ((va >> shift) & 511) * 8, 8)
            if raw is None:
                return None
            entry = _U64.unpack(raw)[0]
            if not entry & x.PTE_P or entry & x.PTE_PSE:
                return None
            table = entry & x.PTE_ADDR_MASK
        return table + ((va >> 12) & 511) * 8

    def guest_pte(self, value: int) -> int | None:
        """A guest's new L1 entry as Xen installs it (user bit forced for a 64-bit PV kernel), or None."""
        if not value & x.PTE_P:
            return value
        if not self.frame_ok((value & x.PTE_ADDR_MASK) >> 12):
            return None
        if value & x.PTE_PSE:
            return None
        return value | x.PTE_US

    def install_l4_private(self, l4_gpa: int) -> bool:
        """Give a guest L4 the private area's entry (as Xen copies its slots into every L4)."""
        entry = (m.PRIVATE_GPA + m.P_L3 * PAGE) | x.PTE_P | x.PTE_RW | x.PTE_US | x.PTE_A
        return self.memory.write(l4_gpa + m.PRIVATE_L4_SLOT * 8, _U64.pack(entry))

    # --- GDT -----------------------------------------------------------------------
    def set_gdt(self, vcpu_id: int, frames: list[int], entries: int) -> None:
        state = self.vcpus[vcpu_id]
        zero = m.PRIVATE_GPA + m.P_ZERO * PAGE
        flags = x.PTE_P | x.PTE_RW | x.PTE_A | x.PTE_D
        for page in range(x.GDT_GUEST_PAGES):
            target = (frames[page] << 12) if page < len(frames) else zero
            at = m.P_L1 * PAGE + m.gdt_l1_index(vcpu_id, page) * 8
            self.private[at : at + 8] = _U64.pack(target | flags)
        state.gdt_frames, state.gdt_entries = list(frames), entries
        self.flush_mappings()

    # --- vcpu_info and events ------------------------------------------------------------
    def vcpu_info_offset(self, vcpu_id: int) -> int:
        return vcpu_id * x.VCPU_INFO_SIZE

    def upcall_mask(self, vcpu_id: int) -> int:
        return self.shared[self.vcpu_info_offset(vcpu_id) + x.VI_UPCALL_MASK]

    def set_upcall_mask(self, vcpu_id: int, masked: bool) -> None:
        self.shared[self.vcpu_info_offset(vcpu_id) + x.VI_UPCALL_MASK] = 1 if masked else 0

    def set_cr2(self, vcpu_id: int, cr2: int) -> None:
        self.vcpus[vcpu_id].cr2 = cr2
        at = self.vcpu_info_offset(vcpu_id) + x.VI_CR2
        self.shared[at : at + 8] = _U64.pack(cr2)

    def raise_port(self, port: int) -> int | None:
        """Mark ``port`` pending (2-level ABI); the vCPU to notify, if its upcall is due."""
        word, bit = divmod(port, 64)
        pending_at, mask_at = x.SHI_EVTCHN_PENDING + word * 8, x.SHI_EVTCHN_MASK + word * 8
        pending = _U64.unpack_from(self.shared, pending_at)[0]
        if pending & (1 << bit):
            return None
        self.shared[pending_at : pending_at + 8] = _U64.pack(pending | (1 << bit))
        if _U64.unpack_from(self.shared, mask_at)[0] & (1 << bit):
            return None
        vcpu = self.ports.get(port, ("", 0))[1]
        info = self.vcpu_info_offset(vcpu)
        sel = _U64.unpack_from(self.shared, info + x.VI_PENDING_SEL)[0]
        self.shared[info + x.VI_PENDING_SEL : info + x.VI_PENDING_SEL + 8] = _U64.pack(sel | (1 << word))
        self.shared[info + x.VI_UPCALL_PENDING] = 1
        return vcpu

    def upcall_due(self, vcpu_id: int) -> bool:
        info = self.vcpu_info_offset(vcpu_id)
        return bool(self.shared[info + x.VI_UPCALL_PENDING]) and not self.shared[info + x.VI_UPCALL_MASK]

    def close(self) -> None:
        self.private.release()
        self._private_map.close()
