"""Text renderings used across screens: bars, sparklines, human units, history."""

from __future__ import annotations

from collections import deque
from functools import lru_cache

MIB = 1 << 20
SPARK = " ▁▂▃▄▅▆▇█"
HISTORY = 20


def spark(values: list[float] | deque[float], top: float) -> str:
    """One character per sample, scaled to ``top``."""
    return _spark(tuple(values), top)


@lru_cache(maxsize=4096)
def _spark(values: tuple[float, ...], top: float) -> str:
    """Cached: a hundred rows of mostly steady series redraw the same lines every second."""
    scale = 8 / top if top > 0 else 8.0
    return "".join(SPARK[min(8, max(0, round(v * scale)))] for v in values)


def bar(fraction: float, width: int = 20) -> str:
    """A horizontal bar in eighths: 0.0 empty, 1.0 full."""
    fraction = max(0.0, min(1.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    partial = "▏▎▍▌▋▊▉"[part - 1] if part else ""
    return ("█" * full + partial).ljust(width, "·")


def mib(num_bytes: int) -> str:
    value = num_bytes / MIB
    return f"{value / 1024:.1f}G" if value >= 10240 else f"{value:.0f}M"


def duration(seconds: float) -> str:
    """Minute resolution: a per-second uptime would repaint every row of a table every second."""
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m" if minutes else "<1m"


def minute_aligned(uptime_s: float, wall_time: float) -> float:
    """Uptime as it was at the last whole minute of the wall clock.

    Shown at minute resolution, each domain's uptime would tick over at its
    own second, and every tick repaints the whole table; aligned, all of them
    tick over together at hh:mm:00 (one repaint a minute), at most a minute
    behind, which is the display's resolution anyway.
    """
    return max(0.0, uptime_s - wall_time % 60)


class History:
    """Recent samples per key, for sparklines."""

    def __init__(self, length: int = HISTORY) -> None:
        self.length = length
        self._series: dict[str, deque[float]] = {}

    def add(self, key: str, value: float) -> deque[float]:
        series = self._series.setdefault(key, deque([0.0] * self.length, maxlen=self.length))
        series.append(value)
        return series

    def get(self, key: str) -> deque[float]:
        return self._series.get(key) or deque([0.0] * self.length, maxlen=self.length)

    def forget(self, key: str) -> None:
        self._series.pop(key, None)
