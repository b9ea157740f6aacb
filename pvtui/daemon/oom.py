"""Telling a monitor the kernel's OOM killer took from one that crashed.

The zygote lets the kernel reap monitors (it ignores SIGCHLD), so pvd never
sees an exit status. Two witnesses remain: the kernel log, which names the
killed pid ("Killed process 1234 (pvtui-dom)"; readable by root), and the
``oom_kill`` counter of ``/proc/vmstat``, which says only that the OOM killer
struck somewhere since pvd last looked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

OOM_REASON = "killed by the kernel's OOM killer"

_KILLED = re.compile(rb"Killed process (\d+)")


def oom_kills() -> int:
    """The kernel's count of OOM kills since boot (0 where the kernel does not say)."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def killed_pids_in_kernel_log(kmsg: str = "/dev/kmsg") -> set[int] | None:
    """Pids the kernel log says the OOM killer took (None if the log cannot be read)."""
    try:
        fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    pids: set[int] = set()
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: a record was overwritten while reading; go on
                continue
            if not record:
                break
            match = _KILLED.search(record)
            if match:
                pids.add(int(match.group(1)))
    finally:
        os.close(fd)
    return pids


class OomWitness:
    """Decides whether a monitor that vanished was taken by the OOM killer."""

    def __init__(self) -> None:
        self.seen = oom_kills()

    def sample(self) -> None:
        """Note the counter now: kills after this point are candidates (called at 1 Hz)."""
        self.seen = oom_kills()

    def was_killed(self, pid: int | None) -> bool:
        killed = killed_pids_in_kernel_log()
        if killed is not None and pid is not None:
            return pid in killed
        return oom_kills() > self.seen
