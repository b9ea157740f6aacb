"""Compiling the bundled guest kernel with the system C compiler.

The package build (``setup.py``) calls :func:`build_kernel` so an installed
pvtui carries a ready kernel. Running from a source checkout, the kernel is
built on first use into a cache keyed by the sources' hash, so an edit to
the C code is never run stale.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pvtui.errors import PvtuiError

SOURCE_DIR = Path(__file__).parent / "src"
KERNEL_NAME = "pvkernel.elf"
C_SOURCES = ("kernel.c", "lib.c", "control.c", "workloads.c", "selftest.c", "bench.c", "verify.c")
ASM_SOURCES = ("start.S",)
CFLAGS = (
    "-O2",
    "-std=gnu11",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-mno-red-zone",
    "-fno-asynchronous-unwind-tables",
    "-fno-tree-loop-distribute-patterns",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Werror",
)


class CompilerMissing(PvtuiError):
    """No C compiler to build the bundled guest kernel."""


def find_compiler() -> str:
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        raise CompilerMissing(
            "No C compiler found",
            "pvtui builds its guest kernel from C. Install gcc "
            "(sudo apt-get install -y gcc) or set CC to a C compiler for x86-64.",
        )
    return compiler


def build_kernel(output: Path, source_dir: Path = SOURCE_DIR) -> Path:
    """Compile and link the guest kernel to ``output`` (written atomically)."""
    compiler = find_compiler()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pvkernel-") as tmp:
        objects = []
        for name in C_SOURCES + ASM_SOURCES:
            obj = Path(tmp) / (name + ".o")
            _run([compiler, "-c", *CFLAGS, f"-I{source_dir}", "-o", str(obj), str(source_dir / name)])
            objects.append(str(obj))
        linked = Path(tmp) / KERNEL_NAME
        _run(
            [
                compiler,
                "-nostdlib",
                "-static",
                "-no-pie",
                f"-Wl,-T,{source_dir / 'kernel.ld'}",
                "-Wl,--build-id=none",
                "-o",
                str(linked),
                *objects,
            ]
        )
        staged = output.with_name(f".{output.name}.tmp{os.getpid()}")
        shutil.copyfile(linked, staged)
        os.replace(staged, output)
    return output


def build_single_kernel(source: Path, output: Path) -> Path:
    """Compile one freestanding C file against pv.h into a guest kernel linked like ours.

    For the small purpose-built guests of the tests and benchmarks (a fuzzer,
    a console flood, a hypercall storm): no libc, no library of the bundled
    kernel, only the ABI header and its linker script.
    """
    _run(
        [
            find_compiler(),
            "-O2",
            "-ffreestanding",
            "-fno-pic",
            "-fno-pie",
            "-fno-stack-protector",
            "-nostdlib",
            "-static",
            "-no-pie",
            f"-Wl,-T,{SOURCE_DIR / 'kernel.ld'}",
            "-Wl,--build-id=none",
            f"-I{SOURCE_DIR}",
            "-o",
            str(output),
            str(source),
        ]
    )
    return output


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise PvtuiError(
            "Building the guest kernel failed",
            f"{' '.join(cmd)}\n{result.stderr.strip()}\nCheck that gcc can build x86-64 code.",
        )


def sources_digest(source_dir: Path = SOURCE_DIR) -> str:
    """A hash of the guest sources and flags: it names the kernel built from them.

    pvd asks on every create; the files are read and hashed again only when
    one of them changed (name, size or modification time), not each time.
    """
    paths = sorted(source_dir.iterdir())
    signature = tuple((path.name, stat.st_size, stat.st_mtime_ns) for path in paths for stat in [path.stat()])
    known = _digests.get(source_dir)
    if known is not None and known[0] == signature:
        return known[1]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(" ".join(CFLAGS).encode())
    _digests[source_dir] = (signature, digest.hexdigest()[:16])
    return _digests[source_dir][1]


#: The last digest worked out per source directory, with the files' signature it holds for.
_digests: dict[Path, tuple[tuple[tuple[str, int, int], ...], str]] = {}


def bundled_kernel() -> Path:
    """Path of the bundled kernel: the packaged build, else a cached build of the sources."""
    packaged = Path(__file__).parent / KERNEL_NAME
    stamp = Path(__file__).parent / (KERNEL_NAME + ".digest")
    if packaged.exists() and (not SOURCE_DIR.exists() or _read(stamp) == sources_digest()):
        return packaged
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cached = cache_home / "pvtui" / f"pvkernel-{sources_digest()}.elf"
    if not cached.exists():
        build_kernel(cached)
    return cached


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
