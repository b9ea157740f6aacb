"""Guest RAM: anonymous mappings registered with KVM as memory slots.

Every guest-supplied address goes through :meth:`GuestMemory.check` (or the
read/write helpers built on it) before the engine touches it, so a bad
pointer becomes ``-EFAULT`` and never an exception in a vCPU thread.

The balloon is real: released frames are ``madvise(MADV_DONTNEED)``-ed, so
the host RSS falls, and repopulated frames are pre-faulted with
``MADV_POPULATE_WRITE`` so it rises again.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import re
import threading
from dataclasses import dataclass

from pvtui.engine.kvm import Vm
from pvtui.engine.kvm.ioctl import KVM_MEM_LOG_DIRTY_PAGES
from pvtui.engine.layout import PAGE_SHIFT, PAGE_SIZE

MADV_POPULATE_WRITE = 23
#: The low guest memory kept on small pages (see :meth:`GuestMemory.add_slot`).
BOOT_AREA_BYTES = 2 << 20
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
#: mincore's byte per page: bit 0 is "resident"; the rest are reserved.
_LOW_BIT = bytes(i & 1 for i in range(256))


@dataclass
class Slot:
    index: int
    gpa: int
    size: int
    mapping: mmap.mmap
    host_addr: int
    view: memoryview

    @property
    def end(self) -> int:
        return self.gpa + self.size


class GuestMemory:
    """The domain's guest-physical RAM and its balloon bookkeeping."""

    def __init__(self, vm: Vm, boot_bytes: int) -> None:
        self.vm = vm
        self.slots: list[Slot] = []
        self._lock = threading.Lock()
        # One byte per frame: 1 = released to the host by the balloon.
        self._released = bytearray()
        self._released_count = 0
        #: Frames the engine itself wrote while dirty logging is on (KVM logs only the guest's writes).
        self._engine_dirty: set[int] | None = None
        self.add_slot(boot_bytes, populated=True)

    # --- layout -----------------------------------------------------------
    @property
    def size(self) -> int:
        """Bytes of guest-physical RAM present now (boot size plus hot-added)."""
        return self.slots[-1].end if self.slots else 0

    @property
    def pages(self) -> int:
        return self.size >> PAGE_SHIFT

    def add_slot(self, size: int, populated: bool) -> Slot:
        """Append ``size`` bytes of RAM after the current end (a new KVM slot)."""
        mapping = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0))
        # 2 MiB backing lets the (shadow) MMU map large pages: first touch is
        # several times faster and balloon releases free whole huge pages. Not
        # the first 2 MiB, where the kernel, its page tables and stacks live: an
        # idle guest touches a few dozen pages there, and a huge page would cost
        # it 2 MiB of zeroed memory (512 fresh pages) per domain.
        boot_area = BOOT_AREA_BYTES if not self.slots and size > BOOT_AREA_BYTES else 0
        mapping.madvise(mmap.MADV_HUGEPAGE, boot_area, size - boot_area)
        view = memoryview(mapping)
        host_addr = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
        slot = Slot(len(self.slots), self.size, size, mapping, host_addr, view)
        self.vm.set_memory_region(slot.index, slot.gpa, size, host_addr)
        with self._lock:
            self.slots.append(slot)
            frames = size >> PAGE_SHIFT
            self._released.extend((b"\0" if populated else b"\1") * frames)
            if not populated:
                self._released_count += frames
        return slot

    # --- bounds-checked access -------------------------------------------
    def _slot_for(self, gpa: int, length: int) -> Slot | None:
        if gpa < 0 or length < 0:
            return None
        for slot in self.slots:
            if slot.gpa <= gpa and gpa + length <= slot.end:
                return slot
        return None

    def check(self, gpa: int, length: int) -> bool:
        return self._slot_for(gpa, length) is not None

    def read(self, gpa: int, length: int) -> bytes | None:
        """Bytes at ``gpa``, or None if any part lies outside guest RAM."""
        slot = self._slot_for(gpa, length)
        if slot is None:
            return None
        offset = gpa - slot.gpa
        return slot.view[offset : offset + length].tobytes()

    def write(self, gpa: int, data: bytes) -> bool:
        slot = self._slot_for(gpa, len(data))
        if slot is None:
            return False
        offset = gpa - slot.gpa
        slot.view[offset : offset + len(data)] = data
        if self._engine_dirty is not None:
            self.note_written(gpa, len(data))
        return True

    def note_written(self, gpa: int, length: int) -> None:
        """The engine wrote guest memory behind KVM's back (a view): resend it in a migration."""
        dirty = self._engine_dirty
        if dirty is not None and length > 0:
            dirty.update(range(gpa >> PAGE_SHIFT, ((gpa + length - 1) >> PAGE_SHIFT) + 1))

    def view(self, gpa: int, length: int) -> memoryview:
        """A writable view for engine-owned structures (start-info, shared-info)."""
        slot = self._slot_for(gpa, length)
        if slot is None:
            raise ValueError(f"{gpa:#x}+{length:#x} is outside guest memory")
        offset = gpa - slot.gpa
        return slot.view[offset : offset + length]

    # --- balloon ---------------------------------------------------------
    def frames_valid(self, first_frames: list[int], order: int) -> bool:
        """True when every extent is aligned to its order and inside guest RAM."""
        span = 1 << order
        pages = self.pages
        return all(f % span == 0 and f >= 0 and f + span <= pages for f in first_frames)

    def release(self, first_frames: list[int], order: int) -> None:
        """Give extents back to the host (validated by :meth:`frames_valid` first).

        The frames are dropped before they are counted, so a figure that says
        the guest holds less is never ahead of the host's RSS.
        """
        for start, count in self._runs(first_frames, order):
            self._madvise_frames(start, count, mmap.MADV_DONTNEED)
            with self._lock:
                self._released_count += count - self._released[start : start + count].count(1)
                self._released[start : start + count] = b"\1" * count

    def populate(self, first_frames: list[int], order: int) -> None:
        """Back extents with host memory again (pre-faulted, so RSS really rises)."""
        for start, count in self._runs(first_frames, order):
            self._madvise_frames(start, count, MADV_POPULATE_WRITE)
            with self._lock:
                self._released_count -= self._released[start : start + count].count(1)
                self._released[start : start + count] = b"\0" * count

    @staticmethod
    def _runs(first_frames: list[int], order: int) -> list[tuple[int, int]]:
        """Coalesce extents into (first frame, frame count) runs: one madvise each."""
        span = 1 << order
        runs: list[tuple[int, int]] = []
        for frame in sorted(first_frames):
            if runs and runs[-1][0] + runs[-1][1] == frame:
                runs[-1] = (runs[-1][0], runs[-1][1] + span)
            elif runs and runs[-1][0] <= frame < runs[-1][0] + runs[-1][1]:
                continue
            else:
                runs.append((frame, span))
        return runs

    def _madvise_frames(self, first_frame: int, count: int, advice: int) -> None:
        if self._engine_dirty is not None:  # released or repopulated: the copy elsewhere is stale
            self._engine_dirty.update(range(first_frame, first_frame + count))
        start = first_frame << PAGE_SHIFT
        end = start + (count << PAGE_SHIFT)
        for slot in self.slots:
            lo, hi = max(start, slot.gpa), min(end, slot.end)
            if lo < hi:
                try:
                    slot.mapping.madvise(advice, lo - slot.gpa, hi - lo)
                except OSError:
                    # MADV_POPULATE_WRITE needs Linux 5.14; without it the
                    # frames are backed on the guest's first touch instead.
                    if advice != MADV_POPULATE_WRITE:
                        raise

    @property
    def held_pages(self) -> int:
        """Frames the guest holds: present RAM minus what the balloon released."""
        return self.pages - self._released_count

    # --- snapshots and migration ------------------------------------------------
    @property
    def released_map(self) -> bytes:
        """One byte per frame, 1 = given back by the balloon (not backed, never saved)."""
        with self._lock:
            return bytes(self._released)

    def is_released(self, frame: int) -> bool:
        return 0 <= frame < len(self._released) and self._released[frame] == 1

    def set_released_map(self, released: bytes) -> None:
        """Take a saved domain's balloon state: its released frames are dropped here too."""
        if len(released) != self.pages:
            raise ValueError(f"released map has {len(released)} frames, memory has {self.pages}")
        with self._lock:
            self._released[:] = released
            self._released_count = released.count(1)
        for first, count in runs_of_ones(released):
            self._madvise_frames(first, count, mmap.MADV_DONTNEED)

    def backed_runs(self) -> list[tuple[int, int]]:
        """(first frame, count) runs of frames holding data: resident on the host and not released.

        A frame never touched reads as zero and a released one is the
        balloon's: neither is worth writing down.
        """
        resident = bytearray()
        for slot in self.slots:
            pages = slot.size // PAGE_SIZE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(slot.host_addr, slot.size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            resident += bytes(vec).translate(_LOW_BIT)
        released = self.released_map
        backed = int.from_bytes(resident, "little") & ~int.from_bytes(released, "little")
        return runs_of_ones(backed.to_bytes(len(resident), "little"))

    def frame_view(self, first_frame: int, count: int) -> memoryview:
        """The bytes of ``count`` frames from ``first_frame`` (one slot's; split runs with :meth:`split_runs`)."""
        return self.view(first_frame << PAGE_SHIFT, count << PAGE_SHIFT)

    def split_runs(self, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The runs cut at slot boundaries, so each lies in one mapping."""
        bounds = [slot.end >> PAGE_SHIFT for slot in self.slots]
        out = []
        for first, count in runs:
            end = first + count
            for bound in bounds:
                if first < bound < end:
                    out.append((first, bound - first))
                    first = bound
            out.append((first, end - first))
        return out

    def start_dirty_log(self) -> None:
        """Log the guest's writes (KVM, per slot) and the engine's (here) from now on."""
        with self._lock:
            self._engine_dirty = set()
        for slot in self.slots:
            self.vm.set_memory_region(slot.index, slot.gpa, slot.size, slot.host_addr, KVM_MEM_LOG_DIRTY_PAGES)

    def stop_dirty_log(self) -> None:
        for slot in self.slots:
            self.vm.set_memory_region(slot.index, slot.gpa, slot.size, slot.host_addr)
        with self._lock:
            self._engine_dirty = None

    @property
    def dirty_logging(self) -> bool:
        return self._engine_dirty is not None

    def take_dirty(self) -> list[int]:
        """Frames written since the last call (or since logging started), sorted; clears the log."""
        frames: set[int] = set()
        for slot in self.slots:
            bitmap = self.vm.get_dirty_log(slot.index, slot.size // PAGE_SIZE)
            base = slot.gpa >> PAGE_SHIFT
            for match in re.finditer(b"[^\x00]+", bitmap):
                for byte_index in range(match.start(), match.end()):
                    byte = bitmap[byte_index]
                    while byte:
                        low = byte & -byte
                        frames.add(base + byte_index * 8 + low.bit_length() - 1)
                        byte ^= low
        with self._lock:
            if self._engine_dirty is not None:
                frames |= self._engine_dirty
                self._engine_dirty = set()
        return sorted(frames)

    # --- measurement ------------------------------------------------------
    def resident_bytes(self) -> int:
        """Host RSS of guest RAM, measured page by page with mincore(2)."""
        total = 0
        for slot in self.slots:
            pages = slot.size // PAGE_SIZE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(slot.host_addr, slot.size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            total += pages - bytes(vec).count(0)
        return total * PAGE_SIZE

    def close(self) -> None:
        for slot in self.slots:
            slot.view.release()
        # The ctypes address probes keep buffer exports alive until collected;
        # dropping the last references lets the mappings close.
        slots, self.slots = self.slots, []
        for slot in slots:
            with contextlib.suppress(BufferError):
                slot.mapping.close()


def runs_of_ones(flags: bytes) -> list[tuple[int, int]]:
    """(start, length) of each run of 1 bytes in a 0/1 byte map; ``find`` skips the zeros at memchr speed."""
    runs = []
    at = flags.find(1)
    while at >= 0:
        end = flags.find(0, at)
        if end < 0:
            end = len(flags)
        runs.append((at, end - at))
        at = flags.find(1, end)
    return runs


__all__ = ["GuestMemory", "Slot", "runs_of_ones"]
