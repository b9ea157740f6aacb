"""Decoding the few instructions a PV guest's faults ask the engine to emulate (pure).

PVM turns a CPL-3 ``int n`` into #UD and a privileged instruction into
#GP; Xen emulates some of them for PV guests (forced-emulation ``cpuid``,
``mov %crN``, ``rdmsr``/``wrmsr``, ``cli``/``sti``/``in``/``out`` under a
virtual IOPL, soft ``int $n``). This module says which instruction sits at
the faulting address and how long it is; the caller decides what it means.
"""

from __future__ import annotations

from dataclasses import dataclass

_LEGACY_PREFIXES = frozenset({0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65})
#: Xen's forced-emulation prefix for PV guests: ``ud2; .ascii "xen"``.
FEP = b"\x0f\x0bxen"


@dataclass(frozen=True)
class Insn:
    """``kind`` names the instruction; ``length`` its bytes; the rest its operands."""

    kind: str
    length: int
    vector: int = 0  # int n
    cr: int = 0  # mov cr: the control register
    gpr: int = 0  # mov cr: the general register (0 rax ... 15 r15)
    port: int | None = None  # in/out with an immediate port (None: the port is in dx)
    size: int = 1  # in/out operand size in bytes
    forced: bool = False  # behind the forced-emulation prefix


def decode(code: bytes) -> Insn | None:
    """The instruction at the start of ``code`` if it is one the engine emulates, else None."""
    forced = code.startswith(FEP)
    at = len(FEP) if forced else 0
    opsize = 4
    while at < len(code) and code[at] in _LEGACY_PREFIXES:
        if code[at] == 0x66:
            opsize = 2
        at += 1
    rex = 0
    if at < len(code) and 0x40 <= code[at] <= 0x4F:
        rex = code[at]
        at += 1
    if at >= len(code):
        return None
    op = code[at]
    rest = code[at + 1 :]
    if forced:
        return Insn("cpuid", at + 2, forced=True) if rest[:1] == b"\xa2" and op == 0x0F else None
    if op == 0xCD and rest:
        return Insn("int", at + 2, vector=rest[0])
    if op == 0xCC:
        return Insn("int3", at + 1, vector=3)
    if op == 0xF1:
        return Insn("icebp", at + 1, vector=1)
    if op == 0xCE:
        return Insn("into", at + 1, vector=4)
    if op in (0xFA, 0xFB):
        return Insn("cli" if op == 0xFA else "sti", at + 1)
    if op == 0xF4:
        return Insn("hlt", at + 1)
    if op in (0xE4, 0xE5, 0xE6, 0xE7) and rest:
        size = 1 if op in (0xE4, 0xE6) else opsize
        return Insn("in" if op in (0xE4, 0xE5) else "out", at + 2, port=rest[0], size=size)
    if op in (0xEC, 0xED, 0xEE, 0xEF):
        size = 1 if op in (0xEC, 0xEE) else opsize
        return Insn("in" if op in (0xEC, 0xED) else "out", at + 1, size=size)
    if op in (0x6C, 0x6D, 0x6E, 0x6F):
        size = 1 if op in (0x6C, 0x6E) else opsize
        return Insn("ins" if op < 0x6E else "outs", at + 1, size=size)
    if op != 0x0F or not rest:
        return None
    op2 = rest[0]
    if op2 in (0x20, 0x22) and len(rest) >= 2:
        modrm = rest[1]
        if modrm >> 6 != 3:
            return None
        cr = ((modrm >> 3) & 7) | (8 if rex & 4 else 0)
        gpr = (modrm & 7) | (8 if rex & 1 else 0)
        return Insn("mov_from_cr" if op2 == 0x20 else "mov_to_cr", at + 3, cr=cr, gpr=gpr)
    if op2 in (0x21, 0x23) and len(rest) >= 2:
        modrm = rest[1]
        dr = ((modrm >> 3) & 7) | (8 if rex & 4 else 0)
        gpr = (modrm & 7) | (8 if rex & 1 else 0)
        return Insn("mov_from_dr" if op2 == 0x21 else "mov_to_dr", at + 3, cr=dr, gpr=gpr)
    simple = {0x30: "wrmsr", 0x32: "rdmsr", 0x31: "rdtsc", 0x33: "rdpmc", 0xA2: "cpuid", 0x06: "clts", 0x09: "wbinvd"}
    if op2 in simple:
        return Insn(simple[op2], at + 2)
    if op2 == 0x01 and len(rest) >= 2 and rest[1] == 0xF9:
        return Insn("rdtscp", at + 3)
    return None


#: Register order of ``struct kvm_regs`` for the 16 general registers, by x86 encoding.
GPR_NAMES = (
    "rax",
    "rcx",
    "rdx",
    "rbx",
    "rsp",
    "rbp",
    "rsi",
    "rdi",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
)
