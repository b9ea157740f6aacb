"""A domain's figures at one moment (the engine's half of ``DomainStats``)."""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from pvtui.domain.model import DomainStats, MemoryInfo, VcpuInfo
from pvtui.domain.state import DomainState
from pvtui.engine import abi, layout

if TYPE_CHECKING:
    from pvtui.engine.domain import Domain


def domain_stats(domain: Domain) -> DomainStats:
    schedstats = domain.vcpus.schedstats()
    per_vcpu = domain.accounting.per_vcpu()
    vcpus = [
        VcpuInfo(
            vcpu_id,
            runner.state,
            runner.is_up,
            schedstats.get(vcpu_id, (0.0, 0.0))[0],
            per_vcpu.get(vcpu_id, 0),
            sorted(runner.affinity) if runner.affinity else None,
            wait_time_s=round(schedstats.get(vcpu_id, (0.0, 0.0))[1], 6),
        )
        for vcpu_id, runner in sorted(list(domain.vcpus.runners.items()))
    ]
    alive = domain._state not in (DomainState.DEAD,)
    reports = alive and domain.xen is None  # a Xen PV guest reports no use of its own
    guest_used = struct.unpack_from("<Q", domain.shared, abi.SI_GUEST_USED_PAGES)[0] if reports else 0
    memory = MemoryInfo(
        boot_bytes=domain.config.memory,
        present_bytes=domain.memory.size if alive else 0,
        max_bytes=domain.config.maxmem_or_memory,
        target_bytes=domain.balloon_target_bytes if alive else 0,
        held_bytes=domain.memory.held_pages * layout.PAGE_SIZE if alive else 0,
        guest_used_bytes=guest_used * layout.PAGE_SIZE,
        rss_bytes=domain.memory.resident_bytes() if alive else 0,
    )
    per_op = domain.accounting.per_op()
    return DomainStats(
        domain.name,
        domain.state,
        (time.monotonic_ns() - domain.started_ns) / 1e9 if domain.started_ns else 0.0,
        vcpus,
        memory,
        per_op,
        sum(per_op.values()),
        domain.shutdown_reason.name if domain.shutdown_reason is not None else None,
        domain.crash_reason,
        sampled_s=time.monotonic(),
        personality=domain.personality,
        hypercalls_per_vcpu={str(v.id): v.hypercalls for v in vcpus},
    )


def quick_counters(domain: Domain) -> tuple[object, ...]:
    """What changes whenever anything in :func:`domain_stats` can: cheap enough to read every second.

    An idle domain's counters stand still (its vCPUs blocked, its memory
    untouched): equal quick counters mean a full sample would say nothing new.
    """
    return (
        domain.state,
        domain.accounting.last_seq,
        tuple(sorted(domain.vcpus.schedstats().items())),
        domain.balloon_target_bytes,
        domain.memory.held_pages,
        domain.memory.size,
        domain.online_vcpus,
        domain.console.total_bytes,
    )
