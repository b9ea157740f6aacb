"""Levels of load, shared by the TUI's shading and the CLI's colours: where "warn" and "high" begin.

No UI import here: ``pvtui list`` colours its rows without loading Textual.
Documented in docs/ui.md.
"""

from __future__ import annotations

#: A level is "warn" from this share of its whole (CPU: of its online vCPUs)...
WARN_AT = 0.60
#: ...and "high" from this one.
HIGH_AT = 0.85
#: MEM% (a domain's share of host memory) has lower steps: one domain holding a quarter of the host is a lot.
MEM_WARN_AT = 0.25
MEM_HIGH_AT = 0.50


def level_tone(fraction: float | None, warn: float = WARN_AT, high: float = HIGH_AT) -> str | None:
    """``warn`` or ``high`` for a share of a whole; nothing below ``warn`` (or when not measured)."""
    if fraction is None:
        return None
    if fraction >= high:
        return "high"
    if fraction >= warn:
        return "warn"
    return None


def cpu_tone(cpu_percent: float | None, vcpus: int) -> str | None:
    """A domain's CPU against what its online vCPUs can use (100 % each)."""
    return None if cpu_percent is None else level_tone(cpu_percent / (100 * max(1, vcpus)))


def mem_tone(share_of_host: float | None) -> str | None:
    return level_tone(share_of_host, MEM_WARN_AT, MEM_HIGH_AT)
