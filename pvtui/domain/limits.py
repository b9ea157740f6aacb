"""The rules a request about a domain must follow, in one place for pvd and the engine.

Each returns ``None`` when the request is fine, else the sentence that
tells the operator what is allowed (the caller adds its own title).
"""

from __future__ import annotations

import os

from pvtui.domain.cpuset import format_cpu_list

#: How long a guest gets to shut down when asked before it is destroyed (``shutdown``, ``reboot``).
SHUTDOWN_TIMEOUT_S = 30.0


def host_cpus() -> set[int]:
    return set(range(os.cpu_count() or 1))


def vcpu_count_problem(count: int, maxvcpus: int) -> str | None:
    if 1 <= count <= maxvcpus:
        return None
    return f"Choose between 1 and maxvcpus ({maxvcpus}); raise maxvcpus: in its definition for more."


def pin_problem(cpus: set[int] | None) -> str | None:
    """Pinning to ``cpus`` (None: any CPU) is possible only onto CPUs this host has."""
    if cpus is None:
        return None
    host = host_cpus()
    missing = sorted(cpus - host)
    if cpus and not missing:
        return None
    return f"CPU {', '.join(map(str, missing)) or '(none)'} does not exist; this host has CPUs {format_cpu_list(host)}."
