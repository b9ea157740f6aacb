"""The CLI's colours: the TUI's meanings (a colour per state, levels shaded) in ANSI, on a terminal only.

Plain output when stdout is not a terminal (pipes, files, scripts) or when
``NO_COLOR`` is set to anything but an empty string (https://no-color.org).
Each state has a style of its own beyond its colour (crashed bold, dying
and suspended italic), as in the TUI.
"""

from __future__ import annotations

import os
from typing import TextIO

#: SGR parameters of each tone (the TUI's tones, pvtui/ui/tones.py, in the terminal's own 16 colours).
ANSI_TONES = {
    "running": "32",
    "blocked": "34",
    "paused": "33;1",
    "suspended": "36;3",
    "shutdown": "2",
    "dying": "35;3",
    "crashed": "31;1",
    "warn": "33",
    "high": "31;1",
    "failed": "31",
    "bounced": "35",
}


def wanted(stream: TextIO) -> bool:
    """Colour only for a terminal, and never when NO_COLOR asks for none."""
    if os.environ.get("NO_COLOR", ""):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, tone: str | None, on: bool) -> str:
    """``text`` (padded already: escapes take no columns) in ``tone``'s colour when ``on``."""
    code = ANSI_TONES.get(tone or "") if on else None
    return f"\x1b[{code}m{text}\x1b[0m" if code else text
