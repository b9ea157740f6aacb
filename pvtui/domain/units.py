"""Human sizes (``512M``, ``2G``) as used in domain files; bare numbers are MiB, as in xl.cfg."""

from __future__ import annotations

import re

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
_UNITS = {"": MIB, "B": 1, "K": KIB, "M": MIB, "G": GIB, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:i?B)?|(B))?\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """Bytes in ``value``: an int (MiB) or a string like ``64M``, ``1.5G``, ``512KiB``, ``4096B``."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 512M or 2G, not true/false")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value << 20
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            number, unit, plain_bytes = match.groups()
            return int(float(number) * _UNITS[(unit or plain_bytes or "").upper()])
    raise ValueError(f"expected a size like 512M or 2G (K, M, G, T; a bare number is MiB), got {value!r}")


def format_size(num_bytes: int) -> str:
    """The shortest exact human form: 64M, 1536M, 2G, 4K."""
    for unit in ("T", "G", "M", "K"):
        scale = _UNITS[unit]
        if num_bytes and num_bytes % scale == 0:
            return f"{num_bytes // scale}{unit}"
    return f"{num_bytes}B" if num_bytes % 1024 else f"{num_bytes // 1024}K"
