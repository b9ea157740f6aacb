"""Xen ELF notes: how a kernel says it is a Xen PV guest (pure parsing, no KVM)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_NHDR = struct.Struct("<III")
_PT_NOTE = 4
_SHT_NOTE = 7

# XEN_ELFNOTE_* (xen/include/public/elfnote.h)
ENTRY = 1
HYPERCALL_PAGE = 2
VIRT_BASE = 3
PADDR_OFFSET = 4
XEN_VERSION = 5
GUEST_OS = 6
GUEST_VERSION = 7
LOADER = 8
PAE_MODE = 9
FEATURES = 10
BSD_SYMTAB = 11
HV_START_LOW = 12
L1_MFN_VALID = 13
SUSPEND_CANCEL = 14
INIT_P2M = 15
MOD_START_PFN = 16
SUPPORTED_FEATURES = 17
PHYS32_ENTRY = 18

_NUMERIC = {ENTRY, HYPERCALL_PAGE, VIRT_BASE, PADDR_OFFSET, HV_START_LOW, SUSPEND_CANCEL, INIT_P2M, MOD_START_PFN}


@dataclass(frozen=True)
class XenNotes:
    """What a Xen PV kernel declared about itself."""

    hypercall_page: int
    entry: int | None = None
    virt_base: int = 0
    guest_os: str = ""
    xen_version: str = ""
    loader: str = ""
    features: str = ""

    def feature_set(self) -> set[str]:
        """``FEATURES`` as a set; a leading ``!`` marks a feature the kernel requires."""
        return {f for f in self.features.split("|") if f}


def _note_blobs(blob: bytes) -> list[bytes]:
    """The raw note areas of an ELF64 file: PT_NOTE segments, else SHT_NOTE sections."""
    if len(blob) < _EHDR.size or blob[:4] != b"\x7fELF" or blob[4] != 2:
        return []
    fields = _EHDR.unpack_from(blob)
    phoff, shoff = fields[5], fields[6]
    phentsize, phnum, shentsize, shnum = fields[9], fields[10], fields[11], fields[12]
    areas: list[bytes] = []
    if phentsize == _PHDR.size:
        for i in range(phnum):
            at = phoff + i * phentsize
            if at + _PHDR.size > len(blob):
                break
            p_type, _, offset, _, _, filesz, _, _ = _PHDR.unpack_from(blob, at)
            if p_type == _PT_NOTE and offset + filesz <= len(blob):
                areas.append(blob[offset : offset + filesz])
    if not areas and shentsize == _SHDR.size:
        for i in range(shnum):
            at = shoff + i * shentsize
            if at + _SHDR.size > len(blob):
                break
            _, sh_type, _, _, offset, size, *_ = _SHDR.unpack_from(blob, at)
            if sh_type == _SHT_NOTE and offset + size <= len(blob):
                areas.append(blob[offset : offset + size])
    return areas


def parse_notes(area: bytes) -> dict[int, bytes]:
    """Every ``Xen`` note of one note area, by type (malformed tails are ignored)."""
    notes: dict[int, bytes] = {}
    at = 0
    while at + _NHDR.size <= len(area):
        namesz, descsz, kind = _NHDR.unpack_from(area, at)
        name_at = at + _NHDR.size
        desc_at = name_at + ((namesz + 3) & ~3)
        end = desc_at + ((descsz + 3) & ~3)
        if desc_at + descsz > len(area):
            break
        if area[name_at : name_at + namesz].rstrip(b"\0") == b"Xen":
            notes[kind] = area[desc_at : desc_at + descsz]
        at = end
    return notes


def _value(desc: bytes) -> int:
    return int.from_bytes(desc[:8], "little") if len(desc) >= 8 else int.from_bytes(desc, "little")


def _text(desc: bytes) -> str:
    return desc.split(b"\0", 1)[0].decode("ascii", "replace")


def read_xen_notes(blob: bytes) -> XenNotes | None:
    """The kernel's Xen notes, or None if it is not a Xen PV kernel (no hypercall-page note)."""
    notes: dict[int, bytes] = {}
    for area in _note_blobs(blob):
        notes.update(parse_notes(area))
    if HYPERCALL_PAGE not in notes:
        return None
    return XenNotes(
        hypercall_page=_value(notes[HYPERCALL_PAGE]),
        entry=_value(notes[ENTRY]) if ENTRY in notes else None,
        virt_base=_value(notes[VIRT_BASE]) if VIRT_BASE in notes else 0,
        guest_os=_text(notes.get(GUEST_OS, b"")),
        xen_version=_text(notes.get(XEN_VERSION, b"")),
        loader=_text(notes.get(LOADER, b"")),
        features=_text(notes.get(FEATURES, b"")),
    )


def kernel_xen_notes(path: str, image: bytes | None = None) -> XenNotes | None:
    """``read_xen_notes`` of a file, or of its bytes read earlier (None if unreadable: the loader then says why)."""
    if image is not None:
        return read_xen_notes(image)
    try:
        with open(path, "rb") as f:
            return read_xen_notes(f.read())
    except OSError:
        return None
