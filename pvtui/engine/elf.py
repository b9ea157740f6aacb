"""Loading an ELF64 x86-64 kernel image per the ABI's boot rules."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pvtui.errors import PvtuiError

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_PT_LOAD = 1
_EM_X86_64 = 62
_ET_EXEC = 2


class KernelImageError(PvtuiError):
    """The kernel file is not a loadable pvtui guest."""


@dataclass(frozen=True)
class Segment:
    paddr: int
    data: bytes
    memsz: int


@dataclass(frozen=True)
class KernelImage:
    path: str
    entry: int
    segments: tuple[Segment, ...]

    @property
    def end(self) -> int:
        """First guest-physical byte after the image (bss included)."""
        return max(s.paddr + s.memsz for s in self.segments)


def read_kernel(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def load_kernel(path: str, min_paddr: int, image: bytes | None = None) -> KernelImage:
    """Parse ``path`` (or ``image``, its bytes read earlier); refuse anything the engine could not boot, saying why."""

    def refuse(why: str) -> KernelImageError:
        return KernelImageError(
            f"Cannot boot kernel {path}",
            f"{why}. A pvtui kernel is an ELF64 x86-64 executable linked at or above {min_paddr:#x} (see docs/abi.md).",
        )

    try:
        blob = image if image is not None else read_kernel(path)
    except OSError as exc:
        raise KernelImageError(f"Cannot read kernel {path}", f"{exc.strerror}. Check the kernel: path.") from None
    if len(blob) < _EHDR.size or blob[:4] != b"\x7fELF":
        raise refuse("it is not an ELF file")
    ident, e_type, machine, _, entry, phoff, _, _, _, phentsize, phnum, *_ = _EHDR.unpack_from(blob)
    if ident[4] != 2 or ident[5] != 1:
        raise refuse("it is not a 64-bit little-endian ELF file")
    if machine != _EM_X86_64:
        raise refuse(f"it is built for machine {machine}, not x86-64")
    if e_type != _ET_EXEC:
        raise refuse("it is not a static executable (ET_EXEC)")
    if phentsize != _PHDR.size or phoff + phnum * phentsize > len(blob):
        raise refuse("its program headers are malformed")
    segments = []
    for i in range(phnum):
        p_type, _, offset, _, paddr, filesz, memsz, _ = _PHDR.unpack_from(blob, phoff + i * phentsize)
        if p_type != _PT_LOAD or memsz == 0:
            continue
        if filesz > memsz or offset + filesz > len(blob):
            raise refuse(f"segment {i} is malformed")
        if paddr < min_paddr:
            raise refuse(f"segment {i} loads at {paddr:#x}, below {min_paddr:#x}")
        segments.append(Segment(paddr, blob[offset : offset + filesz], memsz))
    if not segments:
        raise refuse("it has no loadable segment")
    if not any(s.paddr <= entry < s.paddr + s.memsz for s in segments):
        raise refuse(f"its entry point {entry:#x} is outside its segments")
    return KernelImage(path, entry, tuple(segments))
