"""A domain's console: what the guest wrote with console_io, bounded, with followers."""

from __future__ import annotations

import threading
from collections.abc import Callable

DEFAULT_CONSOLE_BYTES = 256 * 1024


class ConsoleBuffer:
    def __init__(self, limit: int = DEFAULT_CONSOLE_BYTES) -> None:
        self.limit = limit
        self._data = bytearray()
        self._lock = threading.Lock()
        self.total_bytes = 0
        self.followers: list[Callable[[bytes], None]] = []

    def write(self, data: bytes) -> None:
        with self._lock:
            self._data += data
            self.total_bytes += len(data)
            if len(self._data) > self.limit:
                del self._data[: len(self._data) - self.limit]
        for follower in list(self.followers):
            follower(data)

    def contents(self) -> bytes:
        with self._lock:
            return bytes(self._data)

    def text(self) -> str:
        return self.contents().decode("utf-8", errors="replace")
