"""Xen's CPU list syntax for ``cpus:``: ``"all"``, ``"0-3,^1"``, ``"2"``, or a per-vCPU list."""

from __future__ import annotations


def parse_cpu_list(spec: str | int) -> frozenset[int]:
    """CPUs named by one Xen cpu-list string; ``^N`` / ``^N-M`` remove CPUs.

    ``"all"`` is returned as the empty set, meaning "no pinning".
    """
    if isinstance(spec, bool):
        raise ValueError('expected a CPU list like "0-3,^1"')
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError("CPU numbers cannot be negative")
        return frozenset({spec})
    text = spec.strip()
    if text == "all":
        return frozenset()
    cpus: set[int] = set()
    removed: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        target = removed if part.startswith("^") else cpus
        part = part.lstrip("^")
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f'{spec!r} is not a CPU list; write e.g. "0-3,^1", "2" or "all"')
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"range {part!r} runs backwards")
        target.update(range(first, last + 1))
    result = cpus - removed
    if not result:
        raise ValueError(f"{spec!r} leaves no CPU")
    return frozenset(result)


def format_cpu_list(cpus: frozenset[int] | set[int] | list[int]) -> str:
    """Compact form: {0,1,2,5} -> "0-2,5"."""
    ordered = sorted(cpus)
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)
