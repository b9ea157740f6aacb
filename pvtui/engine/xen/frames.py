"""Xen's exception frames for a PV guest, as pure functions (no KVM): the tests build them too."""

from __future__ import annotations

import struct

from pvtui.engine.xen import abi as x
from pvtui.engine.xen.decode import GPR_NAMES

_U64 = (1 << 64) - 1


def bounce_frame(
    kernel_mode: bool,
    stack: int,
    rcx: int,
    r11: int,
    error_code: int | None,
    rip: int,
    rflags: int,
    rsp: int,
    ss: int,
    saved_mask: int,
    iopl: int | None,
) -> tuple[int, bytes]:
    """Xen's bounce frame (x86-64 ``create_bounce_frame``), lowest address first:
    RCX, R11, [error code], RIP, CS (saved upcall mask in bits 32+), RFLAGS, RSP, SS,
    below ``stack`` aligned down to 16. Returns (the frame's address, its bytes).

    CS shows RPL 0 when the guest was in kernel mode ("indicate kernel context
    to guest"); RFLAGS.IF shows the virtual IF (not the upcall mask), and IOPL
    the virtual IOPL once the guest enabled architectural IOPL.
    """
    cs = x.FLAT_RING3_CS64 & ~3 if kernel_mode else x.FLAT_RING3_CS64
    shown = (rflags & ~(x.RFLAGS_IF | x.RFLAGS_IOPL)) | (0 if saved_mask else x.RFLAGS_IF)
    if iopl is not None:
        shown |= iopl << 12
    words = [rcx, r11] + ([error_code] if error_code is not None else [])
    words += [rip, cs | (saved_mask << 32), shown, rsp, ss]
    address = ((stack & ~0xF) - 8 * len(words)) & _U64
    return address, struct.pack(f"<{len(words)}Q", *(w & _U64 for w in words))


def get_gpr(regs: object, frame: list[int], gpr: int) -> int:
    """A guest register at the fault: rsp is in the exception frame (the stub runs on its own stack)."""
    return frame[3] if gpr == 4 else int(getattr(regs, GPR_NAMES[gpr]))


def set_gpr(regs: object, frame: list[int], gpr: int, value: int) -> None:
    if gpr == 4:
        frame[3] = value & _U64
    else:
        setattr(regs, GPR_NAMES[gpr], value & _U64)
