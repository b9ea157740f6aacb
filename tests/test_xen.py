"""The Xen PV personality: Xen's own test kernels (XTF) on real KVM, a hostile Xen guest, pure parts.

XTF is built from a copy of ``../shared/xtf`` (or ``$PVTUI_XTF_DIR``); without
it these tests skip, except under ``PVTUI_REQUIRE_KVM=1`` (CI), where its
absence is a failure.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, Engine, run_pvtui

from pvtui.cli.xtf import EXIT_CODES, xtf_result
from pvtui.engine.xen import abi as x
from pvtui.engine.xen import machine as m
from pvtui.engine.xen.decode import decode
from pvtui.engine.xen.frames import bounce_frame
from pvtui.engine.xen.notes import read_xen_notes

#: The XTF kernels that must pass, with their variations (the kernel command line).
REQUIRED = [
    ("example", None),
    ("selftest", None),
    ("cpuid", None),
    ("msr", None),
    ("rtm-check", None),
    ("pv-iopl", "hypercall"),
    ("pv-iopl", "vmassist"),
    ("xsa-122", None),
    ("xsa-188", None),
    ("xsa-213", None),
]


def _xtf_script():
    spec = importlib.util.spec_from_file_location("pvtui_xtf_script", REPO / "scripts" / "xtf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def xtf(kvm_available: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built copy of XTF with the required tests (the source tree itself may be read-only)."""
    script = _xtf_script()
    source = script.default_source()
    if not (source / "Makefile").is_file():
        reason = f"the Xen Test Framework is not at {source} (set PVTUI_XTF_DIR)"
        if os.environ.get("PVTUI_REQUIRE_KVM") == "1":
            pytest.fail(f"PVTUI_REQUIRE_KVM=1 but {reason}")
        pytest.skip(reason)
    build = tmp_path_factory.mktemp("xtf") / "xtf"
    return script.build_suite(source, build, sorted({name for name, _ in REQUIRED}))


def kernel(xtf: Path, name: str) -> Path:
    return xtf / "tests" / name / f"test-pv64-{name}"


@pytest.mark.parametrize(("name", "variation"), REQUIRED, ids=[f"{n}~{v}" if v else n for n, v in REQUIRED])
def test_xtf_kernel_succeeds_through_pvtui_run(xtf: Path, tmp_path: Path, name: str, variation: str | None):
    definition = tmp_path / "xtf.yaml"
    body = f"name: xtf-{name}\nmemory: 64M\nkernel: {kernel(xtf, name)}\n"
    if variation:
        body += f"cmdline: {variation}\n"
    definition.write_text(body)
    result = run_pvtui("run", str(definition))
    assert "Test result: SUCCESS" in result.stdout, result.stdout + result.stderr
    assert result.returncode == EXIT_CODES["SUCCESS"], result.stderr


def test_pvtui_run_takes_a_kernel_elf_and_says_the_xtf_result(xtf: Path):
    """``pvtui run test-pv64-pv-iopl`` (no variation) is an XTF ERROR, exit code 4, as xtf-runner says."""
    result = run_pvtui("run", str(kernel(xtf, "pv-iopl")), "--no-summary")
    assert "Test result: ERROR" in result.stdout
    assert result.returncode == EXIT_CODES["ERROR"] == 4
    ok = run_pvtui("run", str(kernel(xtf, "pv-iopl")), "--cmdline", "vmassist", "--no-summary")
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_xtf_example_under_pvd(xtf: Path, engine: Engine):
    """Created through pvd: its console, its Xen-named hypercall log with a bounced trap, its personality."""
    from pvtui.client import Client

    engine.ok("create", engine.define("xtfex", f"kernel: {kernel(xtf, 'example')}\non_poweroff: preserve\n"))

    async def check() -> None:
        async with await Client.connect(start=False) as client:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                listed = {d.name: d for d in await client.list_domains()}
                if listed["xtfex"].state == "shutdown":
                    break
                await asyncio.sleep(0.1)
            summary = listed["xtfex"]
            assert summary.state == "shutdown" and summary.personality == "xen"
            text, _ = await client.console("xtfex")
            assert "Hello World" in text and "Test result: SUCCESS" in text
            records = await client.hypercalls("xtfex", limit=200)
            ops = [r.op for r in records]
            for op in ("set_trap_table", "callback_op", "update_va_mapping", "mmuext_op", "console_io", "sched_op"):
                assert op in ops, ops
            trap = next(r for r in records if r.op == "trap_UD")  # the forced-emulation probe, bounced
            assert trap.args[0] == x.X86_EXC_UD and trap.args[2] > 0 and trap.latency_ns > 0
            # The handler's iret stays in kernel mode: it returns natively (no exit, no record),
            # and the guest goes on to print its result.
            assert max(i for i, op in enumerate(ops) if op == "console_io") > ops.index("trap_UD")
            info = await client.info("xtfex")
            assert info.stats is not None and "trap_UD" in info.stats.hypercalls_per_op

    asyncio.run(check())
    engine.ok("destroy", "xtfex")


XEN_KERNEL = r"""
    .section .note.Xen, "a", @note
    .align 4
    .long 4, 8, 2                       # XEN_ELFNOTE_HYPERCALL_PAGE
    .asciz "Xen"
    .quad hypercall_page
    .text
    .globl _start
_start:
    lea stack_top(%rip), %rsp
    call hypercall_page + 60 * 32       # a hypercall Xen has no number for
    cmp $-38, %rax                      # -ENOSYS
    jne 1f
    mov $0, %edi                        # CONSOLEIO_write
    mov $(msg_end - msg), %esi
    lea msg(%rip), %rdx
    call hypercall_page + 18 * 32
    mov %rsp, %rbx
    mov $1, %edi                        # SCHEDOP_block, with nothing to wake it
    mov $MODE, %eax
    test %eax, %eax
    jz 1f
    call hypercall_page + 29 * 32
1:  ud2                                 # no trap table: Xen crashes the domain
msg: .ascii "unknown hypercall: ENOSYS\n"
msg_end:
    .balign 4096
hypercall_page:
    .fill 4096, 1, 0xc3
    .fill 8192, 1, 0
stack_top:
"""


def build_xen_kernel(tmp_path: Path, block: bool) -> Path:
    source = tmp_path / "xen.S"
    source.write_text(XEN_KERNEL.replace("$MODE", "$1" if block else "$0"))
    out = tmp_path / "xen.elf"
    subprocess.run(
        ["gcc", "-nostdlib", "-static", "-no-pie", "-Wl,-Ttext-segment=0x100000", "-Wl,--build-id=none",
         "-o", str(out), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def test_unknown_hypercall_is_enosys_and_an_unhandled_fault_crashes_the_domain(kvm_available: None, tmp_path: Path):
    result = run_pvtui("run", str(build_xen_kernel(tmp_path, block=False)))
    assert "unknown hypercall: ENOSYS" in result.stdout
    assert result.returncode == 1, "the guest crashed, not the engine"
    assert "#UD" in result.stderr and "no handler" in result.stderr
    assert "unknown_60" in result.stderr  # it is in the hypercall summary, by number


def test_xen_guest_lifecycle_under_pvd(kvm_available: None, tmp_path: Path, engine: Engine):
    """Pause, refusals with a reason, destroy; and on_crash applies to a Xen guest as to any."""
    path = build_xen_kernel(tmp_path, block=True)
    engine.ok("create", engine.define("xblock", f"kernel: {path}\n"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "ENOSYS" not in engine.ok("console", "xblock", "-n"):
        time.sleep(0.1)
    engine.ok("pause", "xblock")
    engine.ok("unpause", "xblock")
    for verb in (("vcpu-set", "xblock", "1"), ("mem-set", "xblock", "32M"), ("shutdown", "xblock")):
        refused = engine.cli(*verb)
        assert refused.returncode != 0 and "Xen PV guest" in refused.stderr, refused.stderr
    engine.ok("destroy", "xblock")
    engine.ok("create", engine.define("xcrash", f"kernel: {build_xen_kernel(tmp_path, block=False)}\n"))
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline and engine.json("list") and any(d["name"] == "xcrash" for d in engine.json("list"))
    ):
        time.sleep(0.1)
    assert not any(d["name"] == "xcrash" for d in engine.json("list")), "on_crash: destroy applied"


# --- pure parts: no KVM ----------------------------------------------------------------------------------


def _elf_with_notes(notes: bytes) -> bytes:
    """A minimal ELF64 header plus one PT_NOTE program header over ``notes``."""
    ehdr = struct.Struct("<16sHHIQQQIHHHHHH")
    phdr = struct.Struct("<IIQQQQQQ")
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    offset = ehdr.size + phdr.size
    header = ehdr.pack(ident, 2, 62, 1, 0x100000, ehdr.size, 0, 0, ehdr.size, phdr.size, 1, 64, 0, 0)
    return header + phdr.pack(4, 4, offset, 0, 0, len(notes), len(notes), 4) + notes


def _note(name: bytes, kind: int, desc: bytes) -> bytes:
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name) + 1, len(desc), kind) + pad(name + b"\0") + pad(desc)


def test_xen_notes_are_read_and_only_a_hypercall_page_makes_a_xen_kernel():
    notes = _note(b"GNU", 3, b"abcd") + _note(b"Xen", 2, struct.pack("<Q", 0x105000))
    notes += _note(b"Xen", 6, b"XTF\0") + _note(b"Xen", 10, b"!writable_page_tables|pae_pgdir_above_4gb\0")
    found = read_xen_notes(_elf_with_notes(notes))
    assert found is not None and found.hypercall_page == 0x105000 and found.guest_os == "XTF"
    assert "!writable_page_tables" in found.feature_set()
    assert read_xen_notes(_elf_with_notes(_note(b"Xen", 6, b"XTF\0"))) is None
    assert read_xen_notes(_elf_with_notes(notes[:-3])) is not None  # a torn last note is ignored
    assert read_xen_notes(b"not an elf") is None


@pytest.mark.parametrize(
    ("code", "kind", "length", "extra"),
    [
        (b"\x0f\x0bxen\x0f\xa2", "cpuid", 7, {"forced": True}),
        (b"\xcd\x20", "int", 2, {"vector": 0x20}),
        (b"\xcc", "int3", 1, {"vector": 3}),
        (b"\x0f\x20\xd8", "mov_from_cr", 3, {"cr": 3, "gpr": 0}),
        (b"\x41\x0f\x22\xd9", "mov_to_cr", 4, {"cr": 3, "gpr": 9}),
        (b"\x0f\x23\xc4", "mov_to_dr", 3, {"cr": 0, "gpr": 4}),
        (b"\x0f\x32", "rdmsr", 2, {}),
        (b"\xfa", "cli", 1, {}),
        (b"\xe6\x80", "out", 2, {"port": 0x80, "size": 1}),
        (b"\x66\xed", "in", 2, {"port": None, "size": 2}),
    ],
)
def test_decoder_names_the_instructions_xen_emulates(code: bytes, kind: str, length: int, extra: dict):
    insn = decode(code + b"\x90" * 8)
    assert insn is not None and insn.kind == kind and insn.length == length
    for key, value in extra.items():
        assert getattr(insn, key) == value


def test_decoder_leaves_everything_else_alone():
    for code in (b"\x0f\x0b", b"\x90", b"\x48\x89\xe5", b"\x0f\x0bxyz\x0f\xa2", b""):
        assert decode(code) is None


def test_bounce_frame_is_xens_layout():
    at, blob = bounce_frame(True, 0x7008, 0x11, 0x22, 0xD, 0x1234, 0x246, 0x7008, 0xE02B, 0, None)
    words = struct.unpack("<8Q", blob)
    assert at == 0x7000 - 64 and at % 16 == 0
    assert words == (0x11, 0x22, 0xD, 0x1234, 0xE030, 0x246, 0x7008, 0xE02B), "kernel mode shows CS RPL 0"
    at, blob = bounce_frame(False, 0x9000, 1, 2, None, 0x400000, 0x202, 0x5000, 0xE02B, 1, 2)
    _rcx, _r11, _rip, cs, rflags, _rsp, _ss = struct.unpack("<7Q", blob)
    assert at == 0x9000 - 56 and cs == 0xE033 | (1 << 32), "user mode: RPL 3, saved mask in bits 32+"
    assert not rflags & x.RFLAGS_IF and (rflags >> 12) & 3 == 2, "IF shows the mask, IOPL the virtual IOPL"


def test_hypercall_page_and_tss_bitmap():
    page = m.hypercall_page()
    slot = page[17 * 32 : 18 * 32]
    assert slot[:5] == b"\xb8" + struct.pack("<I", 17) and slot[5:8] == bytes([0xE7, m.HYPERCALL_PORT, 0xC3])
    iret = page[23 * 32 : 24 * 32]
    assert iret[:4] == b"\x51\x41\x53\x50", "push rcx; push r11; push rax, as Xen's iret slot"
    assert iret[4:6] == b"\x48\xb8" and struct.unpack_from("<Q", iret, 6)[0] == m.PRIVATE_VA + m.P_FAST_IRET * 4096
    fast = m.fast_iret_code()
    assert fast.endswith(b"\xb8" + struct.pack("<I", 23) + bytes([0xE7, m.HYPERCALL_PORT]) + b"\x0f\x0b"), (
        "every case the fast path does not take makes the real iret hypercall"
    )
    assert b"\x48\xcf" in fast  # iretq
    tss = m.tss_bytes(0x1000)
    bitmap = tss[m.TSS_IOMAP_OFFSET : m.TSS_IOMAP_OFFSET + 32]
    allowed = [port for port in range(256) if not bitmap[port // 8] >> (port % 8) & 1]
    assert allowed == [m.HYPERCALL_PORT + i for i in range(4)]


def test_xtf_results_as_xtf_runner_reads_them():
    assert xtf_result("--- Xen Test Framework ---\nTest result: SKIP\n", crashed=False) == "SKIP"
    assert xtf_result("Test result: SUCCESS\n", crashed=True) == "CRASH"
    assert xtf_result("PANIC\n", crashed=False) == "CRASH"
    assert [EXIT_CODES[r] for r in ("SUCCESS", "SKIP", "ERROR", "FAILURE", "CRASH")] == [0, 3, 4, 5, 6]
