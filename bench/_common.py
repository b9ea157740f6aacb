"""Shared helpers for the benchmarks: building the C helpers, percentiles, output."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BUILD = BENCH_DIR / "build"
sys.path.insert(0, str(REPO))

from pvtui.guest.build import CFLAGS, SOURCE_DIR, build_single_kernel, find_compiler  # noqa: E402


def build_c(name: str, *extra: str) -> Path:
    """Compile bench/NAME.c with the guest kernel's optimisation flags."""
    BUILD.mkdir(exist_ok=True)
    out = BUILD / name
    source = BENCH_DIR / f"{name}.c"
    flags = [f for f in CFLAGS if f not in ("-Werror", "-ffreestanding", "-fno-builtin", "-mno-red-zone")]
    subprocess.run(
        [find_compiler(), *flags, "-no-pie", f"-I{SOURCE_DIR}", "-o", str(out), str(source), *extra], check=True
    )
    return out


def build_guest(name: str) -> Path:
    """Compile bench/NAME.c as a guest kernel against pv.h (linked like the bundled kernel)."""
    BUILD.mkdir(exist_ok=True)
    return build_single_kernel(BENCH_DIR / f"{name}.c", BUILD / f"{name}.elf")


#: A benchmark's rows: (key, value, unit, goal); None: not measurable here.
Rows = Sequence[tuple[str, float | None, str, str]]


def parse_fields(line: str) -> dict[str, int]:
    """'bench x a=1 b=2' -> {'a': 1, 'b': 2} (hex for checksum is kept as text-free int)."""
    fields = {}
    for word in line.split():
        key, sep, value = word.partition("=")
        if sep and value.isdigit():
            fields[key] = int(value)
    return fields


def p50(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def bench_arguments(doc: str | None) -> argparse.Namespace:
    """``--json`` and ``--quick``, the options every benchmark takes."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke test)")
    return parser.parse_args()


def run_async_bench(doc: str | None, title: str, main_async: Callable[[argparse.Namespace], Awaitable[Rows]]) -> None:
    """Parse the common options, run the benchmark's coroutine, print its table (or JSON)."""
    args = bench_arguments(doc)
    report(title, asyncio.run(main_async(args)), args.json)


def report(title: str, rows: Rows, as_json: bool) -> None:
    """rows: (key, value, unit, goal: "" for a figure with none); a value of None was not measurable here (null in JSON, n/a in the table)."""
    if as_json:
        print(json.dumps({key: None if value is None else round(value, 4) for key, value, _, _ in rows}))
        return
    print(title)
    width = max(len(key) for key, *_ in rows)
    for key, value, unit, goal in rows:
        shown = f"{'n/a':>12}" if value is None else f"{value:>12.3f}"
        print(f"  {key:<{width}}  {shown} {unit:<6} " + (f"goal {goal}" if goal else "(no goal)"))


def cpu_seconds(pid: int) -> float:
    """All threads of a process, from the scheduler's nanosecond clock (``/proc/PID/task/*/schedstat``)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9
