"""The machine a Xen PV guest boots on: guest-physical layout, page tables, private area.

Pure builders (bytes and addresses, no KVM). The guest's RAM starts at 0
with its kernel where its ELF says (virtual = physical, as Xen's domain
builder lays out a kernel without ``VIRT_BASE``); after the kernel come the
p2m list, start_info, the boot page tables and a boot stack, as in Xen.

The engine's own structures (IDT, per-vCPU GDT and TSS, exception stubs and
their stacks, shared_info) live in a *private* guest-physical area outside
the guest's RAM, mapped supervisor-only at ``PRIVATE_VA``, in the PML4 slots
Xen reserves for itself; the guest can neither map nor reach them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pvtui.engine.layout import descriptor
from pvtui.engine.xen import abi as x

PAGE = 4096
#: Guest-physical start of the private area (far above any RAM the guest has).
PRIVATE_GPA = 0x40_0000_0000
#: Its virtual address: PML4 slot 257, inside the range Xen reserves (256-271).
PRIVATE_L4_SLOT = 257
PRIVATE_VA = 0xFFFF_0000_0000_0000 | (PRIVATE_L4_SLOT << 39)
#: The address SYSCALL jumps to (LSTAR): never mapped, so a syscall is a #PF there.
SYSCALL_TRAP_VA = PRIVATE_VA + 0x3F_F000
#: I/O ports the exception stubs report vectors on (stub for vector v: ``out %al, $(base + v)``).
TRAP_PORT_BASE = 0x80
TRAP_VECTORS = 32
GDT_PAGES = 16
HYPERCALL_PORT = 0xF2

# Private-area page indices (pages from PRIVATE_GPA).
P_SHARED_INFO = 0
P_IDT = 1
P_STUBS = 2
P_ZERO = 3
P_L3 = 4
P_L2 = 5
P_L1 = 6
#: The native fast path of the ``iret`` hypercall (code plus its enable flag), run by the guest.
P_FAST_IRET = 7
FAST_IRET_FLAG_OFFSET = 0x800
#: Grant-table frames (shared with no one: a single-host engine has no other domain to grant to).
P_GRANT = 8
GRANT_FRAMES = 4
P_VCPU_BASE = P_GRANT + GRANT_FRAMES
#: Per vCPU: GDT (16 pages), TSS, stub stack.
VCPU_PAGES = GDT_PAGES + 2


def private_pages(max_vcpus: int) -> int:
    return P_VCPU_BASE + max_vcpus * VCPU_PAGES


def vcpu_gdt_va(vcpu: int) -> int:
    return PRIVATE_VA + (P_VCPU_BASE + vcpu * VCPU_PAGES) * PAGE


def vcpu_tss_page(vcpu: int) -> int:
    return P_VCPU_BASE + vcpu * VCPU_PAGES + GDT_PAGES


def vcpu_stack_page(vcpu: int) -> int:
    return vcpu_tss_page(vcpu) + 1


#: The engine's own GDT entries, in the page Xen reserves (from FIRST_RESERVED_GDT_BYTE).
HV_CS_SELECTOR = 0xE008  # ring-0 code for the stubs
TSS_SELECTOR = 0xE040


#: TSS: 104 bytes, then the I/O bitmap (ports 0..255), then the 0xff terminator.
TSS_IOMAP_OFFSET = 104
TSS_LIMIT = TSS_IOMAP_OFFSET + 32


def reserved_gdt_page(tss_va: int) -> bytes:
    """The GDT page at 0xe000: Xen's flat ring-3 selectors, our ring-0 code and the vCPU's TSS."""
    entries = [0] * 512
    entries[(HV_CS_SELECTOR & 0xFFF) // 8] = descriptor(0, 0xFFFFF, 11, 1, 0, 1, 0, 1)
    entries[(x.FLAT_RING3_CS32 & 0xFFF) // 8] = descriptor(0, 0xFFFFF, 11, 1, 3, 0, 1, 1)
    entries[(x.FLAT_RING3_DS32 & 0xFFF) // 8] = descriptor(0, 0xFFFFF, 3, 1, 3, 0, 1, 1)
    entries[(x.FLAT_RING3_CS64 & 0xFFF) // 8] = descriptor(0, 0xFFFFF, 11, 1, 3, 1, 0, 1)
    tss = (TSS_SELECTOR & 0xFFF) // 8
    entries[tss] = descriptor(tss_va, TSS_LIMIT, 9, 0, 0, 0, 0, 0)
    entries[tss + 1] = tss_va >> 32
    return struct.pack("<512Q", *entries)


def tss_bytes(rsp0: int) -> bytes:
    """A 64-bit TSS whose I/O bitmap lets CPL 3 reach the hypercall port and nothing else.

    PVM ignores RFLAGS.IOPL (measured): the bitmap alone decides, so
    every other ``in``/``out`` at CPL 3 raises #GP, which is how the
    guest's *virtual* IOPL is emulated.
    """
    tss = bytearray(TSS_LIMIT + 1)
    struct.pack_into("<Q", tss, 4, rsp0)
    struct.pack_into("<H", tss, 102, TSS_IOMAP_OFFSET)
    bitmap = bytearray(b"\xff" * 32)
    for port in range(HYPERCALL_PORT, HYPERCALL_PORT + 4):
        bitmap[port // 8] &= ~(1 << (port % 8))
    tss[TSS_IOMAP_OFFSET : TSS_IOMAP_OFFSET + 32] = bitmap
    tss[TSS_LIMIT] = 0xFF
    return bytes(tss)


def stub_code() -> bytes:
    """Ring-0 stubs, 8 bytes per vector: ``out %al, $(TRAP_PORT_BASE + v); iretq``.

    The exit hands the engine the vector (the port) with the CPU's own
    exception frame on the stub stack; the engine rewrites that frame and
    the ``iretq`` goes wherever it says (the guest's handler, or back).
    ``out %al`` reads ``al`` and changes no register.
    """
    code = bytearray()
    for vector in range(TRAP_VECTORS):
        code += bytes([0xE6, TRAP_PORT_BASE + vector, 0x48, 0xCF]).ljust(8, b"\x90")
    return bytes(code)


def idt_bytes(stubs_va: int) -> bytes:
    """Interrupt gates (DPL 0) for vectors 0-31 to the stubs; none above."""
    idt = bytearray(256 * 16)
    for vector in range(TRAP_VECTORS):
        target = stubs_va + vector * 8
        low = (target & 0xFFFF) | (HV_CS_SELECTOR << 16) | (0x8E << 40) | (((target >> 16) & 0xFFFF) << 48)
        struct.pack_into("<QQ", idt, vector * 16, low, target >> 32)
    return bytes(idt)


def hypercall_page() -> bytes:
    """Xen's hypercall page, 32 bytes per call: ``mov $nr, %eax; out %eax, $port; ret``.

    The ``iret`` slot pushes rcx, r11 and rax, as Xen's does, so the frame
    is exactly Xen's (guests build it by hand too), then jumps to
    :func:`fast_iret_code` in the private area.
    """
    page = bytearray()
    fast_iret = PRIVATE_VA + P_FAST_IRET * PAGE
    for number in range(PAGE // 32):
        if number == x.XenHypercall.iret:  # push rcx; push r11; push rax; movabs $fast_iret, %rax; jmp *%rax
            slot = b"\x51\x41\x53\x50\x48\xb8" + struct.pack("<Q", fast_iret) + b"\xff\xe0"
        else:
            slot = b"\xb8" + struct.pack("<I", number) + bytes([0xE7, HYPERCALL_PORT, 0xC3])
        page += slot.ljust(32, b"\xcc")
    return bytes(page)


def fast_iret_code() -> bytes:
    """The ``iret`` hypercall, run natively when nothing about it needs the hypervisor.

    With Xen's frame on the stack (rax r11 rcx flags rip cs rflags rsp ss), a
    return that stays in guest kernel mode (the saved CS has RPL 0), is not a
    syscall return, and leaves the virtual IF as it is (the upcall mask in
    vcpu_info equals !IF) changes nothing the engine tracks: the guest pops
    rax, r11, rcx and flags, sets the selectors' RPL to 3 and executes
    ``iretq`` itself, CPL 3 to CPL 3, no exit. Anything else (a return to
    user mode, IF changing, ``VGCF_in_syscall``, or the engine having turned
    the fast path off, e.g. under ``architectural_iopl``) makes the real
    hypercall. A trap bounced to a guest handler and back is then one exit.
    """
    flag_at = FAST_IRET_FLAG_OFFSET
    mask_at = (P_SHARED_INFO - P_FAST_IRET) * PAGE + x.VI_UPCALL_MASK  # vcpu_info[0]'s mask
    code = bytearray()

    def rip_rel(opcode: bytes, target: int, tail: bytes = b"") -> None:
        end = len(code) + len(opcode) + 4 + len(tail)
        code.extend(opcode + struct.pack("<i", target - end) + tail)

    rip_rel(b"\x80\x3d", flag_at, b"\x00")  # cmpb $0, flag(%rip)
    code += b"\x74\x00"  # je slow (patched below)
    jumps = [len(code) - 1]
    code += b"\xf6\x44\x24\x28\x03"  # testb $3, 40(%rsp): RPL 3, a return to user mode
    code += b"\x75\x00"  # jnz slow
    jumps.append(len(code) - 1)
    code += b"\xf7\x44\x24\x18" + struct.pack("<I", x.VGCF_in_syscall)  # testl $VGCF_in_syscall, 24(%rsp)
    code += b"\x75\x00"  # jnz slow
    jumps.append(len(code) - 1)
    code += b"\x48\x8b\x44\x24\x30"  # mov 48(%rsp), %rax: the saved rflags
    code += b"\xc1\xe8\x09\x83\xe0\x01\x83\xf0\x01"  # shr $9; and $1; xor $1: the mask !IF asks for
    rip_rel(b"\x38\x05", mask_at)  # cmp %al, mask(%rip)
    code += b"\x75\x00"  # jne slow
    jumps.append(len(code) - 1)
    code += b"\x58\x41\x5b\x59\x48\x83\xc4\x08"  # pop rax; pop r11; pop rcx; add $8, %rsp
    code += b"\x48\x83\x4c\x24\x08\x03\x48\x83\x4c\x24\x20\x03"  # orq $3, 8(%rsp); orq $3, 32(%rsp)
    code += b"\x48\xcf"  # iretq
    slow = len(code)
    for at in jumps:
        code[at] = slow - (at + 1)
    code += b"\xb8" + struct.pack("<I", x.XenHypercall.iret) + bytes([0xE7, HYPERCALL_PORT]) + b"\x0f\x0b"
    return bytes(code)


@dataclass(frozen=True)
class BootLayout:
    """Where the domain builder put things (all guest-physical = guest-virtual)."""

    nr_pages: int
    p2m: int
    start_info: int
    pt_base: int
    nr_pt_frames: int
    stack_top: int
    end: int


def boot_layout(nr_pages: int, kernel_end: int) -> BootLayout:
    """After the kernel: p2m list, start_info, page tables (L4, L3, L2s, L1s), a 64 KiB stack."""
    at = -(-kernel_end // PAGE) * PAGE
    p2m = at
    at += -(-(nr_pages * 8) // PAGE) * PAGE
    start_info = at
    at += PAGE
    pt_base = at
    n_l1 = -(-nr_pages // 512)
    n_l2 = -(-n_l1 // 512)
    nr_pt_frames = 2 + n_l2 + n_l1
    at += nr_pt_frames * PAGE
    stack_top = at + 16 * PAGE
    return BootLayout(nr_pages, p2m, start_info, pt_base, nr_pt_frames, stack_top, stack_top)


def guest_page_tables(boot: BootLayout, private_l3_gpa: int) -> dict[int, bytes]:
    """4-level tables mapping [0, nr_pages) one to one with 4 KiB pages, writable and user
    (a 64-bit PV kernel runs in ring 3), except the page tables themselves (read-only, as
    Xen requires) and page 0's neighbours kept as the guest finds them. The L4 also holds
    the private area's entry (supervisor-only)."""
    tables: dict[int, bytes] = {}
    n_l1 = -(-boot.nr_pages // 512)
    n_l2 = -(-n_l1 // 512)
    l4, l3 = boot.pt_base, boot.pt_base + PAGE
    l2s = [l3 + PAGE * (1 + i) for i in range(n_l2)]
    l1s = [l2s[-1] + PAGE * (1 + i) for i in range(n_l1)]
    table_flags = x.PTE_P | x.PTE_RW | x.PTE_US | x.PTE_A
    pt_frames = set(range(boot.pt_base // PAGE, boot.pt_base // PAGE + boot.nr_pt_frames))
    l4_entries = [0] * 512
    l4_entries[0] = l3 | table_flags
    l4_entries[PRIVATE_L4_SLOT] = private_l3_gpa | x.PTE_P | x.PTE_RW | x.PTE_US | x.PTE_A
    tables[l4] = struct.pack("<512Q", *l4_entries)
    tables[l3] = struct.pack("<512Q", *([l2 | table_flags for l2 in l2s] + [0] * (512 - n_l2)))
    for i, l2 in enumerate(l2s):
        chunk = l1s[i * 512 : (i + 1) * 512]
        tables[l2] = struct.pack("<512Q", *([l1 | table_flags for l1 in chunk] + [0] * (512 - len(chunk))))
    page_flags = x.PTE_P | x.PTE_RW | x.PTE_US | x.PTE_A | x.PTE_D
    for i, l1 in enumerate(l1s):
        entries = []
        for j in range(512):
            frame = i * 512 + j
            if frame >= boot.nr_pages:
                entries.append(0)
            elif frame in pt_frames:
                entries.append((frame * PAGE) | (page_flags & ~x.PTE_RW))
            else:
                entries.append((frame * PAGE) | page_flags)
        tables[l1] = struct.pack("<512Q", *entries)
    return tables


def private_tables(max_vcpus: int) -> dict[int, bytes]:
    """The private area's L3, L2 and L1 (page index -> bytes), supervisor-only, writable.

    Every private page is mapped at ``PRIVATE_VA + index * PAGE``; each vCPU's
    16 GDT pages start out mapping the zero page for the guest's part (until
    ``set_gdt``) and its reserved page for Xen's selectors.
    """
    flags = x.PTE_P | x.PTE_RW | x.PTE_A | x.PTE_D
    pages = private_pages(max_vcpus)
    if pages > 512:
        raise ValueError("too many vCPUs for one private page table")
    l1 = [0] * 512
    for index in range(pages):
        l1[index] = (PRIVATE_GPA + index * PAGE) | flags
    for vcpu in range(max_vcpus):
        first = P_VCPU_BASE + vcpu * VCPU_PAGES
        for page in range(x.GDT_GUEST_PAGES):
            l1[first + page] = (PRIVATE_GPA + P_ZERO * PAGE) | flags
    # Ring 3 runs the fast iret and reads the upcall mask it compares: both read-only to it.
    for page in (P_FAST_IRET, P_SHARED_INFO):
        l1[page] = (PRIVATE_GPA + page * PAGE) | x.PTE_P | x.PTE_US | x.PTE_A
    upper = flags | x.PTE_US  # the levels above: the L1 entries decide what ring 3 reaches
    return {
        P_L3: struct.pack("<512Q", *([(PRIVATE_GPA + P_L2 * PAGE) | upper] + [0] * 511)),
        P_L2: struct.pack("<512Q", *([(PRIVATE_GPA + P_L1 * PAGE) | upper] + [0] * 511)),
        P_L1: struct.pack("<512Q", *l1),
    }


def gdt_l1_index(vcpu: int, page: int) -> int:
    """The private L1 entry mapping page ``page`` of ``vcpu``'s GDT."""
    return P_VCPU_BASE + vcpu * VCPU_PAGES + page


def start_info_bytes(boot: BootLayout, shared_info_maddr: int, flags: int, cmdline: bytes) -> bytes:
    info = bytearray(x.START_INFO_SIZE)
    info[0 : len(x.START_INFO_MAGIC)] = x.START_INFO_MAGIC
    struct.pack_into("<QQQ", info, x.SI_NR_PAGES, boot.nr_pages, shared_info_maddr, flags)
    struct.pack_into("<QQQ", info, x.SI_PT_BASE, boot.pt_base, boot.nr_pt_frames, boot.p2m)
    info[x.SI_CMD_LINE : x.SI_CMD_LINE + len(cmdline)] = cmdline
    return bytes(info)
