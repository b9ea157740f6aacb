"""Publishing the engine's monotonic clock to the guest (Xen's vcpu_time_info).

The guest reads time with ``rdtsc`` and this linear map, so reading the
clock costs no exit. ``rdtsc`` at CPL 3 returns the guest TSC, the same
counter ``KVM_GET_MSRS(IA32_TSC)`` reports.
"""

from __future__ import annotations

import time

from pvtui.engine.abi import VCPU_TIME_INFO
from pvtui.engine.kvm import Vcpu


def tsc_to_ns_mul_shift(tsc_khz: int) -> tuple[int, int]:
    """(mul, shift) with ns = ((ticks << shift) * mul) >> 32, mul in [2^31, 2^32)."""
    if tsc_khz <= 0:
        raise ValueError("TSC frequency must be positive")
    # ns per tick = 1e6 / tsc_khz; scale it into [0.5, 1) by a power of two.
    shift = 0
    numerator, denominator = 1_000_000, tsc_khz
    while numerator >= denominator:
        denominator *= 2
        shift += 1
    while numerator * 2 < denominator:
        numerator *= 2
        shift -= 1
    return (numerator << 32) // denominator, shift


def sample_time_info(vcpu: Vcpu, tsc_khz: int, version: int, offset_ns: int = 0) -> bytes:
    """Pair the guest TSC with the monotonic clock (plus the domain's offset), as a pv_vcpu_time_info.

    The offset is 0 for a domain that never moved; a domain restored or
    migrated onto a host whose clock is behind the one it left gets the
    difference, so its clock never goes backwards."""
    before = time.monotonic_ns()
    tsc = vcpu.read_tsc()
    after = time.monotonic_ns()
    mul, shift = tsc_to_ns_mul_shift(tsc_khz)
    return VCPU_TIME_INFO.pack(version, 0, tsc, (before + after) // 2 + offset_ns, mul, shift)
