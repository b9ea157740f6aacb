"""What the scheduler measured of one thread: seconds run and seconds waited for a CPU.

Read from ``/proc/self/task/TID/schedstat`` (the scheduler's own runtime,
the clock ``time.thread_time`` reads) rather than ``stat``'s 10 ms ticks: at
1 Hz a tick is a whole percent, and an idle vCPU's cost is far below one
tick a second.
"""

from __future__ import annotations

import threading


def thread_schedstat(native_id: int) -> tuple[float, float]:
    """(seconds run, seconds waited runnable on a run queue) of one thread of this process (zeros once gone)."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat", "rb") as f:
            fields = f.read().split()
            return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


def own_schedstat() -> tuple[float, float]:
    """:func:`thread_schedstat` of the calling thread."""
    return thread_schedstat(threading.get_native_id())
