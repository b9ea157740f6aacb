"""Live migration of one domain over a byte stream: pre-copy with dirty-page logging.

The stream is any connected socket (a unix socket to another pvd here; the
same bytes could run over ssh). Frames are ``kind u8, CRC-32 u32, length
u64, payload``:

    source -> target   L  memory layout (JSON: the engine's slot sizes)
                       P  pages: first frame u64, count u64, the bytes
                       S  state (JSON: vCPUs, engine, Xen PV state)
                       D  done: run it
    target -> source   A  answer (JSON: {"stage": "ready" | "loaded" | "running"}
                          or {"error": title, "message": ...})

The source copies every backed page while the guest runs, then in rounds the
pages dirtied since, until what is left can be sent within the downtime goal
or the rounds stop converging; then it pauses the guest, sends the rest and
the state, and waits. The target answers ``loaded`` once the domain is
built, and runs it only on ``D``; it answers ``running`` and the source is
then destroyed by its pvd. Before ``D`` any failure leaves the source
running (unpaused); a failure between sending ``D`` and reading ``running``
leaves it paused and says so, since the target may or may not run it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pvtui.engine import layout
from pvtui.engine.domain import Domain
from pvtui.engine.snapshot import state
from pvtui.engine.snapshot.image import capture, load_state
from pvtui.errors import PvtuiError

FRAME = struct.Struct("<BIQ")
PAGES = struct.Struct("<QQ")
#: Largest frame accepted: a state frame of many vCPUs, or a batch of pages.
MAX_FRAME = 256 << 20
#: Pages per P frame: large enough to keep the stream busy, small enough to cancel quickly.
PAGES_PER_FRAME = 2048
DEFAULT_DOWNTIME_MS = 20.0
MAX_ROUNDS = 30
#: What stopping costs besides the last pages (measured: capture ~1 ms, the state frame, loading
#: it on the target ~1 ms, two answers, starting the vCPUs): the rounds aim below goal minus this.
STOP_COST_S = 0.006
#: Seconds either side waits on the other (an answer, room to send, the next frame) before giving up.
STALL_TIMEOUT_S = 30.0


class MigrationError(PvtuiError):
    """The migration stopped; ``in_doubt`` when the target may already run the domain."""

    code = "migration_failed"

    def __init__(self, title: str, message: str, in_doubt: bool = False) -> None:
        super().__init__(title, message)
        self.in_doubt = in_doubt


class MigrationCancelled(MigrationError):
    def __init__(self) -> None:
        super().__init__("Migration cancelled", "The domain keeps running here, unchanged.")


def frames_to_runs(frames: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for frame in frames:
        if runs and runs[-1][0] + runs[-1][1] == frame:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((frame, 1))
    return runs


class FrameStream:
    """Framed, checksummed messages over a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent_bytes = 0

    def send(self, kind: bytes, *parts: bytes | memoryview) -> None:
        crc = 0
        length = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
            length += len(part)
        self.sock.sendall(FRAME.pack(kind[0], crc, length))
        for part in parts:
            self.sock.sendall(part)
        self.sent_bytes += FRAME.size + length

    def send_json(self, kind: bytes, value: Any) -> None:
        self.send(kind, json.dumps(value, separators=(",", ":")).encode())

    def _read_exactly(self, view: memoryview) -> None:
        while view:
            got = self.sock.recv_into(view)
            if not got:
                raise ConnectionError("the other side closed the migration stream")
            view = view[got:]

    def recv_header(self) -> tuple[bytes, int, int]:
        head = bytearray(FRAME.size)
        self._read_exactly(memoryview(head))
        kind, crc, length = FRAME.unpack(head)
        if length > MAX_FRAME:
            raise ConnectionError(f"a {length}-byte frame is over the {MAX_FRAME}-byte limit")
        return bytes([kind]), crc, length

    def recv_body(self, crc: int, length: int) -> bytes:
        body = bytearray(length)
        self._read_exactly(memoryview(body))
        if zlib.crc32(body) != crc:
            raise ConnectionError("a migration frame failed its checksum")
        return bytes(body)

    def recv(self) -> tuple[bytes, bytes]:
        kind, crc, length = self.recv_header()
        return kind, self.recv_body(crc, length)

    def recv_json(self, kind: bytes) -> Any:
        got, body = self.recv()
        if got != kind:
            raise ConnectionError(f"expected a {kind!r} frame, got {got!r}")
        return json.loads(body)


@dataclass
class MigrationFigures:
    rounds: int
    total_s: float
    downtime_s: float
    sent_bytes: int
    final_pages: int
    #: When the source's vCPUs stopped (the engine's monotonic clock): downtime runs from here.
    paused_at_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "paused_at_ns": self.paused_at_ns,
            "rounds": self.rounds,
            "total_s": self.total_s,
            "downtime_ms": self.downtime_s * 1000,
            "sent_bytes": self.sent_bytes,
            "final_pages": self.final_pages,
        }


# --- the source ------------------------------------------------------------------------
class Sender:
    """Sends one running domain; ``progress`` gets a dict per round, ``cancelled`` is polled."""

    def __init__(
        self,
        domain: Domain,
        sock: socket.socket,
        progress: Callable[[dict[str, Any]], None] = lambda p: None,
        cancelled: Callable[[], bool] = lambda: False,
        downtime_ms: float = DEFAULT_DOWNTIME_MS,
        max_rounds: int = MAX_ROUNDS,
    ) -> None:
        self.domain = domain
        self.stream = FrameStream(sock)
        self.progress = progress
        self.cancelled = cancelled
        self.downtime_s = downtime_ms / 1000
        self.max_rounds = max_rounds
        self.rate_bytes_s = 0.0
        self._buffer = bytearray(PAGES_PER_FRAME * layout.PAGE_SIZE)

    def _answer(self, stage: str) -> None:
        answer = self.stream.recv_json(b"A")
        if "error" in answer:
            raise MigrationError(str(answer["error"]), str(answer.get("message", "")))
        if answer.get("stage") != stage:
            raise ConnectionError(f"the target answered {answer.get('stage')!r}, expected {stage!r}")

    def _send_runs(self, runs: list[tuple[int, int]]) -> None:
        memory = self.domain.memory
        for first, count in memory.split_runs(runs):
            for at in range(first, first + count, PAGES_PER_FRAME):
                if self.cancelled():
                    raise MigrationCancelled()
                n = min(PAGES_PER_FRAME, first + count - at)
                view = memory.frame_view(at, n)
                data = memoryview(self._buffer)[: n * layout.PAGE_SIZE]
                try:
                    # A copy: the guest keeps writing while its pages travel, and the
                    # checksum must be of the bytes sent (a page changed after the copy is
                    # dirty again and goes in a later round). One buffer, reused: a fresh
                    # one per frame costs a page fault per 4 KiB.
                    data[:] = view
                finally:
                    view.release()
                self.stream.send(b"P", PAGES.pack(at, n), data)
                data.release()

    def run(self) -> MigrationFigures:
        domain = self.domain
        started = time.monotonic()
        was_paused = domain._paused
        paused_here = False
        sent_done = False
        # A peer that stops reading or answering for this long has failed (socket.timeout is an OSError).
        self.stream.sock.settimeout(STALL_TIMEOUT_S)
        try:
            self._answer("ready")
            self.stream.send_json(b"L", {"slots": [slot.size for slot in domain.memory.slots]})
            domain.memory.start_dirty_log()
            # Round 0: everything that holds data, while the guest runs; then what it dirtied meanwhile.
            runs = domain.memory.backed_runs()
            sending = sum(count for _, count in runs)
            rounds = 0
            while True:
                rounds += 1
                round_start = time.monotonic()
                self._report("copying", rounds, sending)
                self._send_runs(runs)
                elapsed = max(time.monotonic() - round_start, 1e-6)
                if sending:
                    self.rate_bytes_s = sending * layout.PAGE_SIZE / elapsed
                pending = [f for f in domain.memory.take_dirty() if not self._released(f)]
                expected = self._expected_downtime(len(pending))
                self._report("copying", rounds, len(pending), len(pending) / elapsed, expected)
                converging = len(pending) < sending * 0.9 or rounds == 1
                small_enough = expected + STOP_COST_S <= self.downtime_s
                if small_enough or rounds >= self.max_rounds or not converging or was_paused:
                    break
                runs, sending = frames_to_runs(pending), len(pending)
            if self.cancelled():
                raise MigrationCancelled()
            # Stop and copy: the guest is paused from here until the target runs it.
            pause_at = time.monotonic()
            paused_at_ns = time.monotonic_ns()
            if not was_paused:
                domain.pause()
                paused_here = True
            final = sorted(set(pending) | set(domain.memory.take_dirty()) | set(self._shared_frames()))
            final = [f for f in final if not self._released(f)]
            self._report("stopped", rounds, len(final))
            self._send_runs(frames_to_runs(final))
            vcpus, engine, xen = capture(domain, was_paused)
            self.stream.send_json(b"S", {"vcpus": vcpus, "engine": engine, "xen": xen})
            self._answer("loaded")
            if self.cancelled():
                raise MigrationCancelled()
            sent_done = True
            self.stream.send(b"D")
            self._answer("running")
            downtime = time.monotonic() - pause_at
            self._report("done", rounds, 0)
            return MigrationFigures(
                rounds, time.monotonic() - started, downtime, self.stream.sent_bytes, len(final), paused_at_ns
            )
        except (OSError, ConnectionError, ValueError, MigrationError) as exc:
            if domain.memory.dirty_logging:
                domain.memory.stop_dirty_log()
            if sent_done:
                raise MigrationError(
                    "Migration outcome unknown",
                    f"The stream broke after the target was told to run the domain ({exc}). The domain stays "
                    "paused here: check the target (pvtui list there); unpause it here only if it does not run there.",
                    in_doubt=True,
                ) from None
            if paused_here:
                domain.unpause()
            if isinstance(exc, MigrationError):
                raise
            raise MigrationError("Migration failed", f"{exc}. The domain keeps running here, unchanged.") from None
        finally:
            if domain.memory.dirty_logging:
                domain.memory.stop_dirty_log()

    def _released(self, frame: int) -> bool:
        return self.domain.memory.is_released(frame)

    def _shared_frames(self) -> list[int]:
        """Pages the engine writes through views (shared info): always part of the final copy."""
        if self.domain.xen is not None:
            return []  # the Xen private area travels in the state
        return [layout.SHARED_INFO_ADDR >> layout.PAGE_SHIFT]

    def _expected_downtime(self, pages: int) -> float:
        if self.rate_bytes_s <= 0:
            return float("inf")
        return pages * layout.PAGE_SIZE / self.rate_bytes_s

    def _report(
        self, stage: str, round_: int, pages_left: int, dirty_rate: float = 0.0, expected_s: float | None = None
    ) -> None:
        if expected_s is None:
            expected_s = self._expected_downtime(pages_left)
        self.progress(
            {
                "stage": stage,
                "round": round_,
                "pages_left": pages_left,
                "dirty_pages_per_s": round(dirty_rate, 1),
                "expected_downtime_ms": None if expected_s == float("inf") else round(expected_s * 1000, 2),
                "sent_bytes": self.stream.sent_bytes,
                "total_bytes": self.domain.memory.held_pages * layout.PAGE_SIZE,
            }
        )


# --- the target ---------------------------------------------------------------------------
class Receiver:
    """Receives one domain into ``domain`` (built, not started) and runs it on ``D``."""

    def __init__(self, domain: Domain, sock: socket.socket) -> None:
        self.domain = domain
        self.stream = FrameStream(sock)
        self._buffer = bytearray(PAGES_PER_FRAME * layout.PAGE_SIZE)

    def run(self, paused: bool = False) -> set[int]:
        domain = self.domain
        stream = self.stream
        stream.sock.settimeout(STALL_TIMEOUT_S)  # a source gone quiet is a source gone
        try:
            stream.send_json(b"A", {"stage": "ready"})
            started: set[int] | None = None
            while True:
                kind, crc, length = stream.recv_header()
                if kind == b"P":
                    self._pages(crc, length)
                elif kind == b"L":
                    state.apply_memory_layout(domain, json.loads(stream.recv_body(crc, length)))
                elif kind == b"S":
                    saved = json.loads(stream.recv_body(crc, length))
                    started = load_state(domain, saved["vcpus"], saved["engine"], saved["xen"])
                    paused = paused or bool(saved["engine"].get("paused"))
                    stream.send_json(b"A", {"stage": "loaded"})
                elif kind == b"D" and started is not None:
                    stream.recv_body(crc, length)
                    domain.resume_restored(started, paused)
                    stream.send_json(b"A", {"stage": "running"})
                    return started
                else:
                    raise ConnectionError(f"unexpected {kind!r} frame in a migration stream")
        except PvtuiError as exc:
            with_error = {"error": exc.title, "message": exc.message}
            with contextlib.suppress(OSError):
                stream.send_json(b"A", with_error)
            raise

    def _pages(self, crc: int, length: int) -> None:
        head = bytearray(PAGES.size)
        self.stream._read_exactly(memoryview(head))
        first, count = PAGES.unpack(head)
        if length != PAGES.size + count * layout.PAGE_SIZE:
            raise ConnectionError("a page frame's length does not match its page count")
        try:
            view = self.domain.memory.frame_view(first, count)
        except ValueError as exc:
            raise ConnectionError(f"pages outside the domain's memory: {exc}") from None
        # Through a reused buffer, checked before a byte reaches the domain (and, on PVM, a
        # copy in user space beats the kernel writing into guest pages, as for a save).
        if len(self._buffer) < len(view):
            self._buffer = bytearray(len(view))
        data = memoryview(self._buffer)[: len(view)]
        try:
            self.stream._read_exactly(data)
            if zlib.crc32(data, zlib.crc32(head)) != crc:
                raise ConnectionError("a page frame failed its checksum")
            view[:] = data
        finally:
            data.release()
            view.release()


__all__ = ["MigrationCancelled", "MigrationError", "MigrationFigures", "Receiver", "Sender", "frames_to_runs"]
