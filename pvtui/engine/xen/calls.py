"""What every group of Xen hypercall handlers shares: the guest, and memory by guest-virtual address."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pvtui.engine.vcpu import VcpuRunner
    from pvtui.engine.xen.guest import PvVcpu, XenGuest


def neg(errno: int) -> int:
    """A failing hypercall's result: the negated Xen errno."""
    return -errno


class GuestCalls:
    """A group of hypercall handlers of one Xen PV domain."""

    def __init__(self, guest: XenGuest) -> None:
        self.guest = guest
        self.domain = guest.domain

    def _state(self, runner: VcpuRunner) -> PvVcpu:
        return self.guest.vcpus[runner.id]

    def _read(self, runner: VcpuRunner, va: int, length: int) -> bytes | None:
        return self.guest.read_virt(self._state(runner), va, length)

    def _write(self, runner: VcpuRunner, va: int, data: bytes) -> bool:
        return self.guest.write_virt(self._state(runner), va, data)
