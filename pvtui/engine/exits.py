"""Decoding a vCPU exit into what the engine must do: a pure function.

Kept free of KVM objects so it can be unit-tested with fabricated exits.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvtui.engine.abi import HYPERCALL_PORT
from pvtui.engine.kvm import ioctl as k


@dataclass(frozen=True, slots=True)
class HypercallExit:
    number: int
    args: tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class MalformedHypercall:
    """An access to the hypercall port that is not a 32-bit ``out``."""

    why: str


@dataclass(frozen=True, slots=True)
class GuestFault:
    """The guest did something that ends it as a crash."""

    why: str


ExitAction = HypercallExit | MalformedHypercall | GuestFault


#: ``kvm_run.io`` (direction u8, size u8, port u16, count u32) of a hypercall, read as
#: one little-endian u64 so the hot path compares a single integer.
HYPERCALL_IO_WORD = k.KVM_EXIT_IO_OUT | (4 << 8) | (HYPERCALL_PORT << 16) | (1 << 32)


def is_hypercall(exit_reason: int, direction: int, size: int, port: int, count: int) -> bool:
    """The common exit, checked first on the hot path (see VcpuRunner._main)."""
    return (
        exit_reason == k.KVM_EXIT_IO
        and port == HYPERCALL_PORT
        and size == 4
        and direction == k.KVM_EXIT_IO_OUT
        and count == 1
    )


def decode_exit(
    exit_reason: int,
    io: tuple[int, int, int, int] | None,
    io_value: int,
    regs: tuple[int, int, int, int, int],
    rip: int,
    mmio_addr: int = 0,
) -> ExitAction:
    """What an exit means.

    ``io`` is (direction, size, port, count) for I/O exits, ``io_value`` the
    32-bit value written, ``regs`` the argument registers (rdi, rsi, rdx,
    r10, r8), ``rip`` the guest instruction pointer after the exit.
    """
    if exit_reason == k.KVM_EXIT_IO and io is not None:
        direction, size, port, count = io
        if is_hypercall(exit_reason, direction, size, port, count):
            return HypercallExit(io_value & 0xFFFFFFFF, regs)
        if port != HYPERCALL_PORT:
            return GuestFault(f"I/O port {port:#x} access at rip {rip:#x}; only the hypercall port exists")
        return MalformedHypercall(f"hypercall port needs a 32-bit out, got size {size} dir {direction}")
    if exit_reason == k.KVM_EXIT_MMIO:
        return GuestFault(f"access to unmapped guest-physical address {mmio_addr:#x} at rip {rip:#x}")
    if exit_reason == k.KVM_EXIT_SHUTDOWN:
        return GuestFault(f"privileged instruction or unhandled fault at rip {rip:#x}")
    if exit_reason == k.KVM_EXIT_HLT:
        return GuestFault(f"hlt at rip {rip:#x}; guests block with sched_op instead")
    name = k.EXIT_REASON_NAMES.get(exit_reason, str(exit_reason))
    return GuestFault(f"unexpected KVM exit {name} at rip {rip:#x}")
