"""One pvd per runtime directory: the locks that say so, and who holds them."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TextIO


class AlreadyRunning(Exception):
    """Another pvd holds the lock (its pid, as it wrote it, or ``?``)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def take_lock(path: Path) -> TextIO:
    """Lock ``path`` for this process's lifetime and write our pid in it.

    Keep the returned file open: closing it releases the lock. Raises
    :class:`AlreadyRunning` if another process holds it.
    """
    lock = open(path, "a+")  # noqa: SIM115 - held for the process's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise AlreadyRunning(holder) from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock
