"""The snapshot file: a header, a table of checksummed sections, the sections (docs/snapshot.md).

Layout (little-endian)::

    0     header   magic "PVTUISNP", format version u32, section count u32,
                   CRC-32 of the table u32, reserved u32            (24 bytes)
    24    table    per section: name 8s, offset u64, length u64,
                   CRC-32 u32, reserved u32                         (32 bytes each)
    ...   sections, each starting on a 4 KiB boundary

A reader checks the magic, the version, the table's checksum, that every
section lies inside the file (a truncated file), and each section's
checksum before it uses a byte of it. The memory section is checked while
it is copied into the new domain, before any vCPU runs.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pvtui.errors import PvtuiError

MAGIC = b"PVTUISNP"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIII")
SECTION = struct.Struct("<8sQQII")
ALIGN = 4096
#: The sections of a version-1 file, in file order ("xen" only for a Xen PV guest).
SECTIONS = ("meta", "kernel", "vcpus", "engine", "xen", "memory")
#: A run of frames in the memory section's index: first frame, frame count.
RUN = struct.Struct("<QQ")
#: The memory section's own header: the number of runs.
RUN_COUNT = struct.Struct("<Q")
#: Bytes copied (and checksummed) per step while saving or restoring memory.
CHUNK = 32 << 20


class SnapshotError(PvtuiError):
    """A snapshot that cannot be used: truncated, corrupt, of an unknown version, or unreadable."""

    code = "invalid"


def _align(value: int) -> int:
    return -(-value // ALIGN) * ALIGN


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


@dataclass
class Section:
    name: str
    offset: int
    length: int
    crc: int


class SnapshotWriter:
    """Writes a snapshot to an open file descriptor, section by section; :meth:`finish` writes the table."""

    def __init__(self, fd: int, names: list[str]) -> None:
        self.fd = fd
        self.names = names
        self.sections: list[Section] = []
        self.position = _align(HEADER.size + SECTION.size * len(names))
        os.ftruncate(fd, 0)

    def add(self, name: str, data: bytes) -> None:
        self._check_next(name)
        _write_all(self.fd, data, self.position)
        self._close_section(name, self.position, len(data), zlib.crc32(data))

    def add_json(self, name: str, value: Any) -> None:
        self.add(name, json.dumps(value, separators=(",", ":")).encode())

    def add_memory(self, runs: list[tuple[int, int]], view_of: Any, page_size: int) -> int:
        """The memory section: the run index, then each run's pages; ``view_of(first, count)`` gives their bytes."""
        self._check_next("memory")
        start = self.position
        index = RUN_COUNT.pack(len(runs)) + b"".join(RUN.pack(first, count) for first, count in runs)
        index += bytes(_align(len(index)) - len(index))
        _write_all(self.fd, index, start)
        crc = zlib.crc32(index)
        at = start + len(index)
        step = max(1, CHUNK // page_size)
        # Pages go through one reused buffer: on PVM hosts the kernel's first read of
        # guest pages (a write(2) straight from guest memory) runs at a quarter of the
        # speed of a copy in user space followed by a write from a buffer it knows.
        # The checksum of each chunk is worked out in a second thread while the chunk
        # is written (both release the GIL).
        buffers = [bytearray(step * page_size), bytearray(step * page_size)]
        with ThreadPoolExecutor(1) as checksummer:
            for first, count in runs:
                for turn, chunk_first in enumerate(range(first, first + count, step)):
                    view = view_of(chunk_first, min(step, first + count - chunk_first))
                    chunk = memoryview(buffers[turn % 2])[: len(view)]
                    chunk[:] = view
                    view.release()
                    pending = checksummer.submit(zlib.crc32, chunk, crc)
                    _write_all(self.fd, chunk, at)
                    crc = pending.result()
                    at += len(chunk)
                    chunk.release()
        self._close_section("memory", start, at - start, crc)
        return at - start - len(index)

    def finish(self) -> None:
        if [s.name for s in self.sections] != self.names:
            raise ValueError(f"snapshot sections {self.names} not all written")
        table = b"".join(SECTION.pack(s.name.encode(), s.offset, s.length, s.crc, 0) for s in self.sections)
        _write_all(self.fd, HEADER.pack(MAGIC, FORMAT_VERSION, len(self.sections), zlib.crc32(table), 0) + table, 0)

    def _check_next(self, name: str) -> None:
        expected = self.names[len(self.sections)] if len(self.sections) < len(self.names) else None
        if name != expected:
            raise ValueError(f"snapshot section {name} written out of order (expected {expected})")

    def _close_section(self, name: str, offset: int, length: int, crc: int) -> None:
        self.sections.append(Section(name, offset, length, crc))
        self.position = _align(offset + length)


class SnapshotReader:
    """An open snapshot whose header, table and small sections have been checked."""

    def __init__(self, fd: int, where: str) -> None:
        self.fd = fd
        self.where = where
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER.size, 0)
        if len(head) < HEADER.size:
            raise self._error("is truncated", f"It has {size} bytes, less than a snapshot header.")
        magic, version, count, table_crc, _ = HEADER.unpack(head)
        if magic != MAGIC:
            raise self._error(
                "is not a pvtui snapshot", "Its first bytes are not PVTUISNP; pass a file pvtui save wrote."
            )
        if version != FORMAT_VERSION:
            raise self._error(
                f"has snapshot format version {version}",
                f"This pvtui reads version {FORMAT_VERSION} only; restore it with the pvtui that saved it.",
            )
        if count > 64:
            raise self._error("is corrupt", f"Its header claims {count} sections.")
        table = os.pread(fd, SECTION.size * count, HEADER.size)
        if len(table) < SECTION.size * count:
            raise self._error("is truncated", "Its section table is cut short.")
        if zlib.crc32(table) != table_crc:
            raise self._error("is corrupt", "Its section table fails its checksum.")
        self.sections: dict[str, Section] = {}
        for name_raw, offset, length, crc, _ in SECTION.iter_unpack(table):
            name = name_raw.rstrip(b"\0").decode("ascii", errors="replace")
            if offset + length > size:
                raise self._error(
                    "is truncated",
                    f"Its {name} section ends at byte {offset + length}, but the file has {size} bytes.",
                )
            self.sections[name] = Section(name, offset, length, crc)
        missing = [n for n in SECTIONS if n != "xen" and n not in self.sections]
        if missing:
            raise self._error("is corrupt", f"It lacks the {', '.join(missing)} section(s).")
        self.meta: dict[str, Any] = self._json("meta")
        self.kernel = self.read("kernel")
        self.vcpus: list[dict[str, Any]] = self._json("vcpus")
        self.engine: dict[str, Any] = self._json("engine")
        self.xen: dict[str, Any] | None = self._json("xen") if "xen" in self.sections else None

    def _error(self, what: str, message: str) -> SnapshotError:
        return SnapshotError(f"Snapshot {self.where} {what}", message)

    def read(self, name: str) -> bytes:
        section = self.sections[name]
        data = os.pread(self.fd, section.length, section.offset)
        if len(data) != section.length:
            raise self._error("is truncated", f"Its {name} section is cut short.")
        if zlib.crc32(data) != section.crc:
            raise self._error("is corrupt", f"Its {name} section fails its checksum.")
        return data

    def _json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._error("is corrupt", f"Its {name} section is not valid JSON ({exc}).") from None

    def memory_runs(self) -> tuple[list[tuple[int, int]], int]:
        """The run index and where the page data starts (checked against the section's length)."""
        section = self.sections["memory"]
        head = os.pread(self.fd, RUN_COUNT.size, section.offset)
        (count,) = RUN_COUNT.unpack(head)
        index_len = _align(RUN_COUNT.size + RUN.size * count)
        if index_len > section.length:
            raise self._error("is corrupt", f"Its memory index claims {count} runs.")
        raw = os.pread(self.fd, RUN.size * count, section.offset + RUN_COUNT.size)
        runs = [(first, n) for first, n in RUN.iter_unpack(raw)]
        return runs, index_len

    def load_memory(self, view_of: Any, page_size: int, frames: int) -> int:
        """Copy the saved pages into a new domain's memory, checking the section's checksum.

        ``view_of(first, count)`` is the writable memory of frames; nothing of
        the domain runs yet, so a bad checksum discards it before it starts.
        """
        section = self.sections["memory"]
        runs, index_len = self.memory_runs()
        total = sum(n for _, n in runs) * page_size
        if index_len + total != section.length:
            raise self._error("is corrupt", "Its memory index and its page data disagree in size.")
        last_end = 0
        for first, count in runs:
            if first < last_end or first + count > frames:
                raise self._error("is corrupt", f"Its memory run at frame {first} lies outside the domain's memory.")
            last_end = first + count
        crc = zlib.crc32(os.pread(self.fd, index_len, section.offset))
        at = section.offset + index_len
        step = max(1, CHUNK // page_size)
        for first, count in runs:
            for chunk_first in range(first, first + count, step):
                try:
                    view = view_of(chunk_first, min(step, first + count - chunk_first))
                except ValueError as exc:
                    raise self._error("is corrupt", f"Its memory run at frame {first}: {exc}.") from None
                got = os.preadv(self.fd, [view], at)
                if got != len(view):
                    raise self._error("is truncated", "Its memory section is cut short.")
                crc = zlib.crc32(view, crc)
                at += got
                view.release()
        if crc != section.crc:
            raise self._error("is corrupt", "Its memory section fails its checksum; nothing was started.")
        return total


def read_snapshot_meta(path: str) -> dict[str, Any]:
    """The ``meta`` section of a snapshot file (checked), for pvd's admission before anything starts."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SnapshotError(f"Cannot open snapshot {path}", f"{exc.strerror}; check the path.") from None
    try:
        return SnapshotReader(fd, path).meta
    finally:
        os.close(fd)


__all__ = ["FORMAT_VERSION", "SnapshotError", "SnapshotReader", "SnapshotWriter", "read_snapshot_meta"]
