"""One entry of pvd's journal as the CLI and the TUI show it (pvd writes them: pvtui/daemon/journal.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

#: Keys every entry has; the rest is its detail.
_FIXED = ("time", "domain", "what", "as_of")


@dataclass(frozen=True)
class JournalEntry:
    time: float
    domain: str | None
    what: str
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JournalEntry:
        detail = {k: v for k, v in data.items() if k not in _FIXED and v not in (None, "", {})}
        return cls(float(data.get("time", 0.0)), data.get("domain"), str(data.get("what", "")), detail)

    @property
    def detail_text(self) -> str:
        return "  ".join(f"{k}={v}" for k, v in self.detail.items())

    def stamp(self, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        return time.strftime(fmt, time.localtime(self.time))

    @property
    def tone(self) -> str | None:
        """A crash is an error, a refusal a warning; everything else is plain."""
        if "crash" in self.what or "crash_reason" in self.detail or self.detail.get("reason") == "crash":
            return "crashed"
        if self.what.startswith("refused:"):
            return "warn"
        return None

    def line(self) -> str:
        return f"{self.stamp()}  {self.domain or '-':<16} {self.what}  {self.detail_text}".rstrip()
