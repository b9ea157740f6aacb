"""XTF results: what a Xen Test Framework kernel's console says, as xtf-runner reads it.

An XTF kernel prints ``Test result: SUCCESS|SKIP|ERROR|FAILURE`` as its
last line before it shuts down; anything else (no such line, a crash) is
``CRASH``. Exit codes are xtf-runner's, so scripts written for it work.
"""

from __future__ import annotations

import re

RESULTS = ("SUCCESS", "SKIP", "ERROR", "FAILURE", "CRASH")
#: xtf-runner's exit codes (it avoids 1 and 2, which Python itself uses).
EXIT_CODES = {"SUCCESS": 0, "SKIP": 3, "ERROR": 4, "FAILURE": 5, "CRASH": 6}
_RESULT_LINE = re.compile(r"^Test result: (SUCCESS|SKIP|ERROR|FAILURE)\s*$", re.MULTILINE)


def xtf_result(console: str, crashed: bool) -> str:
    """The test's result from its console; a crashed domain or a missing line is CRASH."""
    found = _RESULT_LINE.findall(console)
    if crashed or not found:
        return "CRASH"
    return found[-1]


def is_xtf_console(console: str) -> bool:
    """Whether a console is an XTF kernel's (it announces the framework first)."""
    return "--- Xen Test Framework ---" in console
