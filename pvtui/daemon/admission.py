"""Host admission control: refuse what the host cannot hold, before anything moves."""

from __future__ import annotations

import psutil

from pvtui.domain.limits import pin_problem
from pvtui.domain.units import MIB
from pvtui.errors import PvtuiError

#: Memory pvd always leaves to the host itself.
HOST_RESERVE_BYTES = 256 * MIB


class AdmissionError(PvtuiError):
    """The host cannot give what was asked; nothing was changed."""


def check_memory(extra_bytes: int, what: str) -> None:
    """Refuse ``extra_bytes`` more guest memory if the host does not have it free."""
    if extra_bytes <= 0:
        return
    free = psutil.virtual_memory().available - HOST_RESERVE_BYTES
    if extra_bytes > free:
        raise AdmissionError(
            f"Not enough host memory for {what}",
            f"It needs {extra_bytes // MIB} MiB more but the host can give {max(0, free) // MIB} MiB "
            f"(keeping {HOST_RESERVE_BYTES // MIB} MiB for itself). Shrink other domains (mem-set) or ask for less.",
        )


def check_cpus(cpus: set[int] | None, what: str) -> None:
    problem = pin_problem(cpus)
    if problem:
        raise AdmissionError(f"Cannot pin {what}", problem)
