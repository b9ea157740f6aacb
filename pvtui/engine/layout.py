"""The guest-physical memory map below 1 MiB and the boot-time CPU state.

Everything here is part of the guest ABI (``docs/abi.md``): a guest finds
the start-info page through ``rdi`` and everything else through it, but the
addresses are fixed so that tools (and the C baseline VMM in ``bench/``) can
build the same machine.
"""

from __future__ import annotations

import struct

from pvtui.domain.units import GIB
from pvtui.engine.kvm.structs import KvmSegment, KvmSregs

PAGE_SIZE = 4096
PAGE_SHIFT = 12
LARGE_PAGE_SIZE = 2 << 20

START_INFO_ADDR = 0x1000
SHARED_INFO_ADDR = 0x2000
SHARED_INFO_SIZE = 0x2000
GDT_ADDR = 0x4000
TSS_ADDR = 0x5000
PML4_ADDR = 0x10000
PDPT_ADDR = 0x11000
PD_BASE_ADDR = 0x12000
LOW_AREA_END = 0xA0000
KERNEL_MIN_ADDR = 0x100000
VCPU_STACK_SIZE = 16 * 1024

#: One page directory maps 1 GiB with 2 MiB pages; they sit between
#: PD_BASE_ADDR and the end of low memory.
MAX_IDENTITY_MAPPED = ((LOW_AREA_END - PD_BASE_ADDR) // PAGE_SIZE) * GIB

# Page-table entry bits: present, writable, user; PS for 2 MiB pages.
_PTE_TABLE = 0x7
_PTE_LARGE = 0x87

# Selectors match Linux's x86-64 GDT: user data at index 5, user code at 6.
KERNEL_CS_SELECTOR = 0x08
USER_DS_SELECTOR = 0x2B
USER_CS_SELECTOR = 0x33
TSS_SELECTOR = 0x40

CR0_PE_MP_ET_NE_WP_AM_PG = 0x80050033
CR4_PAE_OSFXSR_OSXMMEXCPT = 0x620
EFER_LME_LMA = 0x500
RFLAGS_IOPL3_RESERVED = 0x3002


def page_table_bytes(mapped_bytes: int) -> dict[int, bytes]:
    """Identity page tables covering ``[0, mapped_bytes)`` with 2 MiB user pages.

    Returns guest-physical address -> contents, ready to copy into memory.
    """
    if mapped_bytes > MAX_IDENTITY_MAPPED:
        raise ValueError(f"cannot identity-map more than {MAX_IDENTITY_MAPPED // GIB} GiB")
    n_pds = max(1, -(-mapped_bytes // GIB))
    tables: dict[int, bytes] = {PML4_ADDR: struct.pack("<Q", PDPT_ADDR | _PTE_TABLE).ljust(PAGE_SIZE, b"\0")}
    pdpt = b"".join(struct.pack("<Q", (PD_BASE_ADDR + i * PAGE_SIZE) | _PTE_TABLE) for i in range(n_pds))
    tables[PDPT_ADDR] = pdpt.ljust(PAGE_SIZE, b"\0")
    for i in range(n_pds):
        base = i * GIB
        entries = struct.pack("<512Q", *((base + j * LARGE_PAGE_SIZE) | _PTE_LARGE for j in range(512)))
        tables[PD_BASE_ADDR + i * PAGE_SIZE] = entries
    return tables


def descriptor(base: int, limit: int, type_: int, s: int, dpl: int, l_bit: int, db: int, g: int) -> int:
    """One 8-byte GDT descriptor (both personalities build their GDTs with it)."""
    access = type_ | (s << 4) | (dpl << 5) | (1 << 7)
    flags = (l_bit << 1) | (db << 2) | (g << 3)
    return (
        (limit & 0xFFFF)
        | ((base & 0xFFFFFF) << 16)
        | (access << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (flags << 52)
        | (((base >> 24) & 0xFF) << 56)
    )


def gdt_bytes() -> bytes:
    """A GDT with kernel code, user data/code and a 64-bit TSS (16-byte entry)."""
    entries = [0] * 10
    entries[1] = descriptor(0, 0xFFFFF, 11, 1, 0, 1, 0, 1)
    entries[5] = descriptor(0, 0xFFFFF, 3, 1, 3, 0, 1, 1)
    entries[6] = descriptor(0, 0xFFFFF, 11, 1, 3, 1, 0, 1)
    entries[8] = descriptor(TSS_ADDR, 0x67, 11, 0, 0, 0, 0, 0)
    entries[9] = TSS_ADDR >> 32
    return struct.pack("<10Q", *entries)


def _segment(selector: int, type_: int, dpl: int, l_bit: int, db: int, s: int = 1) -> KvmSegment:
    seg = KvmSegment()
    seg.base = 0
    seg.limit = 0xFFFFFFFF
    seg.selector = selector
    seg.type = type_
    seg.present = 1
    seg.dpl = dpl
    seg.db = db
    seg.s = s
    seg.l = l_bit
    seg.g = 1
    return seg


def apply_boot_sregs(sregs: KvmSregs) -> None:
    """Long mode, ring 3 flat segments, paging on our identity tables."""
    code = _segment(USER_CS_SELECTOR, 11, 3, 1, 0)
    data = _segment(USER_DS_SELECTOR, 3, 3, 0, 1)
    sregs.cs = code
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, data)
    tr = KvmSegment()
    tr.base, tr.limit, tr.selector, tr.type, tr.present = TSS_ADDR, 0x67, TSS_SELECTOR, 11, 1
    sregs.tr = tr
    sregs.gdt.base, sregs.gdt.limit = GDT_ADDR, 10 * 8 - 1
    sregs.cr0 = CR0_PE_MP_ET_NE_WP_AM_PG
    sregs.cr3 = PML4_ADDR
    sregs.cr4 = CR4_PAE_OSFXSR_OSXMMEXCPT
    sregs.efer = EFER_LME_LMA
