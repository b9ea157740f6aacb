"""A domain's console: what the guest wrote with console_io, bounded, rate-limited, with followers.

Bounds (docs/abi.md, "Console"): the engine keeps the last
:data:`DEFAULT_CONSOLE_BYTES` of output, and takes output at
:data:`CONSOLE_RATE_BYTES_PER_S` on average with bursts up to
:data:`CONSOLE_BURST_BYTES` (a token bucket, as Xen's console daemon limits a
domain). Output past the rate is dropped and counted, and a marker line in
the console says how much went, so a guest printing in a loop costs the host
a bounded amount of work and memory and its neighbours nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_CONSOLE_BYTES = 256 * 1024
CONSOLE_RATE_BYTES_PER_S = 64 * 1024
CONSOLE_BURST_BYTES = 256 * 1024


class ConsoleBuffer:
    def __init__(
        self,
        limit: int = DEFAULT_CONSOLE_BYTES,
        rate: float = CONSOLE_RATE_BYTES_PER_S,
        burst: int = CONSOLE_BURST_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._filled_at = clock()
        self._data = bytearray()
        self._lock = threading.Lock()
        #: Bytes kept (markers included): offsets into the console count these.
        self.total_bytes = 0
        #: Bytes the guest wrote that the rate limit dropped.
        self.dropped_bytes = 0
        self._dropped_unreported = 0
        self.followers: list[Callable[[bytes], None]] = []

    def write(self, data: bytes) -> None:
        """Append what the guest wrote, if the rate allows; else count it as dropped."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._filled_at) * self.rate)
            self._filled_at = now
            if len(data) > self._tokens:
                self.dropped_bytes += len(data)
                self._dropped_unreported += len(data)
                return
            self._tokens -= len(data)
            if self._dropped_unreported:
                marker = (
                    f"\n[pvtui: {self._dropped_unreported} bytes of console output dropped: "
                    f"the guest wrote faster than {self.rate / 1024:g} KiB/s]\n"
                ).encode()
                self._dropped_unreported = 0
                data = marker + data
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
