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


#: A pairing of TSC and clock is as good as the time between the two clock reads around the TSC read:
#: the guest's clock is off by up to half of it. A thread preempted in between (a loaded host) makes
#: that milliseconds, so the sample is taken again (the narrowest kept) until it is this narrow.
PAIRING_WINDOW_NS = 50_000
PAIRING_TRIES = 8


def sample_time_info(vcpu: Vcpu, tsc_khz: int, version: int, offset_ns: int = 0) -> bytes:
    """Pair the guest TSC with the monotonic clock (plus the domain's offset), as a pv_vcpu_time_info.

    The offset is 0 for a domain that never moved; a domain restored or
    migrated onto a host whose clock is behind the one it left gets the
    difference, so its clock never goes backwards."""
    best: tuple[int, int, int] | None = None  # (window, tsc, midpoint)
    for _ in range(PAIRING_TRIES):
        before = time.monotonic_ns()
        tsc = vcpu.read_tsc()
        after = time.monotonic_ns()
        if best is None or after - before < best[0]:
            best = (after - before, tsc, (before + after) // 2)
        if after - before <= PAIRING_WINDOW_NS:
            break
    assert best is not None
    _, tsc, midpoint = best
    mul, shift = tsc_to_ns_mul_shift(tsc_khz)
    return VCPU_TIME_INFO.pack(version, 0, tsc, midpoint + offset_ns, mul, shift)
