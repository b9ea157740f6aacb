"""Text renderings used across screens: bars, sparklines, human units, history."""

from __future__ import annotations

from collections import deque
from functools import lru_cache

from pvtui.domain.state import state_flag
from pvtui.domain.units import MIB

SPARK = " ▁▂▃▄▅▆▇█"
HISTORY = 20


def spark(values: list[float] | deque[float], top: float, width: int = 0) -> str:
    """One character per measured sample, scaled to ``top``, right-aligned in ``width``.

    Only samples that were measured are drawn: a series shorter than
    ``width`` is padded with blanks on the left, never with made-up zeros.
    """
    return _spark(tuple(values), top).rjust(width)


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
    """Whole units, rounded down: ``<1m``, ``12m``, ``3h05m``, ``2d04h``.

    Each value is the uptime truncated to the unit shown, so it is never
    wrong by that unit (a row repaints once a minute, when its value moves).
    """
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m" if minutes else "<1m"


def measured(value: float | None, width: int = 5, digits: int = 1) -> str:
    """A measured figure (a percentage, a rate), or a dash where nothing was measured yet (never a made-up 0)."""
    return "-".rjust(width) if value is None else f"{value:{width}.{digits}f}"


class History:
    """The measured samples per key, newest last, for sparklines (nothing before the first).

    It also tells when a key's sparkline last changed (:meth:`changed_at`):
    an idle domain adds the same sample every second, which leaves its newest
    ``shown`` samples, and so its sparkline, as they were. A table of a
    thousand such rows then compares one number per row instead of rebuilding
    each row's samples to find that nothing moved.
    """

    def __init__(self, length: int = HISTORY, shown: int | None = None) -> None:
        self.length = length
        #: How many of the newest samples a sparkline shows.
        self.shown = min(shown or length, length)
        self._series: dict[str, deque[float]] = {}
        #: Per key: how many samples at its end equal the newest one.
        self._same_run: dict[str, int] = {}
        #: Per key: the add (counted over every key) that last changed its newest ``shown`` samples.
        self._changed_at: dict[str, int] = {}
        self._adds = 0

    def add(self, key: str, value: float) -> deque[float]:
        series = self._series.setdefault(key, deque(maxlen=self.length))
        self._adds += 1
        run = self._same_run.get(key, 0)
        if series and series[-1] == value:
            self._same_run[key] = run + 1
            if run < self.shown:  # an older, different sample is still in the window it pushes along
                self._changed_at[key] = self._adds
        else:
            self._same_run[key] = 1
            self._changed_at[key] = self._adds
        series.append(value)
        return series

    def changed_at(self, key: str) -> int:
        """A number that stays the same while the key's newest ``shown`` samples do (0: no samples)."""
        return self._changed_at.get(key, 0)

    def get(self, key: str) -> deque[float]:
        return self._series.get(key) or deque(maxlen=self.length)

    def keep_only(self, keys: set[str]) -> None:
        """Drop the series of keys no longer shown (a destroyed domain leaves no history behind)."""
        for key in self._series.keys() - keys:
            del self._series[key]
            self._same_run.pop(key, None)
            self._changed_at.pop(key, None)


def migration_text(progress: dict[str, object]) -> str:
    """A migration's progress in a few cells: ``⇄ r2 63%`` (round, share of memory sent)."""
    sent = float(str(progress.get("sent_bytes") or 0))
    total = max(1.0, float(str(progress.get("total_bytes") or 1)))
    stage = progress.get("stage")
    if stage == "stopped":
        return "⇄ stop&copy"
    return f"⇄ r{progress.get('round', 0)} {min(100, int(100 * sent / total))}%"


def short_reason(crash_reason: str | None) -> str:
    """Why a domain crashed, in a few words for its row (the domain view and ``pvtui events`` say it all)."""
    if not crash_reason:
        return ""
    text = crash_reason.splitlines()[0]
    if "OOM killer" in text:
        return "OOM-killed"
    if text.startswith("monitor process") and " killed" in text:
        return "monitor killed"
    if "engine error" in text:
        return "engine error"
    if text.startswith("vCPU ") and ": " in text:
        text = text.split(": ", 1)[1]
    return text if len(text) <= 28 else text[:27] + "…"


def state_text(state: str, crash_reason: str | None, migration: dict[str, object] | None) -> str:
    """A row's STATE cell: the xl letter and the state, a crash's reason, or a migration's progress."""
    if migration:
        return migration_text(migration)
    why = short_reason(crash_reason) if state == "crashed" else ""
    return f"{state_flag(state)} {state}" + (f": {why}" if why else "")
