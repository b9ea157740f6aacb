"""Host admission control: refuse what the host cannot hold, before anything moves.

Memory is *committed*, as Xen reserves a domain's memory at creation: every
running domain counts with all the guest memory it may touch (its present
size, hot-added memory included, whatever its balloon target), and a request
that would take the sum past what the host can back is refused. What the host
can back is its total memory minus :data:`HOST_RESERVE_BYTES`, times the
overcommit ratio (1.0 unless pvd was started with ``--overcommit``).
Comparing with the memory free *now* (as pvd once did) admits domains whose
pages are not touched yet, and leaves the kernel's OOM killer to choose which
of them dies once they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from pvtui.domain.limits import pin_problem
from pvtui.domain.units import MIB
from pvtui.errors import PvtuiError

#: Memory pvd always leaves to the host itself (its kernel, pvd, the monitors' own processes).
HOST_RESERVE_BYTES = 512 * MIB

#: The environment variable pvd reads its overcommit ratio from when ``--overcommit`` is not given.
OVERCOMMIT_ENV = "PVTUI_OVERCOMMIT"

#: No ratio above this is accepted: past it, "committed" stops meaning anything.
MAX_OVERCOMMIT = 10.0


class AdmissionError(PvtuiError):
    """The host cannot give what was asked; nothing was changed."""


def parse_overcommit(text: str | None) -> float:
    """The overcommit ratio from its command-line or environment text (empty: off)."""
    if not text:
        return 1.0
    try:
        ratio = float(text)
    except ValueError:
        ratio = 0.0
    if not 1.0 <= ratio <= MAX_OVERCOMMIT:
        raise PvtuiError(
            f"Bad overcommit ratio {text!r}",
            f"Give a number from 1.0 (no overcommit, the default) to {MAX_OVERCOMMIT:g}, e.g. --overcommit 1.5.",
        )
    return ratio


@dataclass(frozen=True)
class MemoryLedger:
    """What the host can back; :meth:`check` compares a request against it."""

    total_bytes: int
    overcommit: float = 1.0
    reserve_bytes: int = HOST_RESERVE_BYTES

    @classmethod
    def for_host(cls, overcommit: float = 1.0) -> MemoryLedger:
        return cls(psutil.virtual_memory().total, overcommit)

    @property
    def backed_bytes(self) -> int:
        """What the host can back with real memory: its total less the reserve."""
        return max(0, self.total_bytes - self.reserve_bytes)

    @property
    def limit_bytes(self) -> int:
        """What pvd lets domains commit: the backed memory times the overcommit ratio."""
        return int(self.backed_bytes * self.overcommit)

    def overcommitted_percent(self, committed: int) -> float:
        """How far ``committed`` goes past what the host can back (0 when it does not)."""
        if not self.backed_bytes:
            return 0.0
        return max(0.0, (committed - self.backed_bytes) * 100.0 / self.backed_bytes)

    def check(self, committed: int, extra_bytes: int, what: str) -> None:
        """Refuse ``extra_bytes`` more if the domains' ``committed`` memory would pass the limit."""
        if extra_bytes <= 0:
            return
        if committed + extra_bytes <= self.limit_bytes:
            return
        room = max(0, self.limit_bytes - committed)
        ratio = f" x overcommit {self.overcommit:g}" if self.overcommit != 1.0 else ""
        raise AdmissionError(
            f"Not enough host memory for {what}",
            f"It needs {extra_bytes // MIB} MiB; domains have {committed // MIB} MiB committed of the "
            f"{self.limit_bytes // MIB} MiB pvd may commit ({self.total_bytes // MIB} MiB total less "
            f"{self.reserve_bytes // MIB} MiB kept for the host{ratio}), so {room // MIB} MiB are left. "
            "Destroy or shrink a domain (mem-max cannot shrink; recreate it smaller), ask for less, "
            f"or start pvd with --overcommit (or {OVERCOMMIT_ENV}) to allow more than the host can back.",
        )


def check_cpus(cpus: set[int] | None, what: str) -> None:
    problem = pin_problem(cpus)
    if problem:
        raise AdmissionError(f"Cannot pin {what}", problem)
