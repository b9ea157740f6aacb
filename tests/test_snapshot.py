"""Save and restore of real domains on /dev/kvm, in process: the bundled `verify` workload proves
nothing was lost (a wrong page, a clock going back or a hypercall count reset crashes it)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from helpers import wait_until

from pvtui.domain.units import MIB
from pvtui.engine.snapshot.fileformat import HEADER, SnapshotError, SnapshotReader
from pvtui.engine.snapshot.image import build_for_restore, restore_domain, save_domain
from pvtui.engine.snapshot.migration import MigrationError, Receiver, Sender
from pvtui.engine.states import DomainState

VERIFY = "memory: 64M\nvcpus: {vcpus}\nmaxvcpus: 2\nmaxmem: 128M\nworkload: {{type: verify, wss: 8M}}\n"


def verify_reports(domain) -> int:
    return domain.console.text().count("verify: ok")


def assert_healthy(domain) -> None:
    text = domain.console.text()
    assert "MISMATCH" not in text, text[-2000:]
    assert domain.state not in (DomainState.CRASHED, DomainState.SHUTDOWN), text[-2000:]


def save_to(domain, path: Path) -> None:
    domain.pause()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        save_domain(domain, fd, None)
    finally:
        os.close(fd)


def restore_from(path: Path, config, paused: bool = False):
    fd = os.open(path, os.O_RDONLY)
    try:
        return restore_domain(SnapshotReader(fd, str(path)), config, None, 0, paused)
    finally:
        os.close(fd)


@pytest.mark.parametrize("vcpus", [1, 2])
def test_save_restore_under_verify_loses_nothing(boot, tmp_path: Path, vcpus: int) -> None:
    domain = boot(VERIFY.format(vcpus=vcpus) + "name: keep\n")
    assert wait_until(lambda: "verify: 2048 pages" in domain.console.text(), 10)
    wait_until(lambda: domain.online_vcpus == vcpus, 5)
    time.sleep(0.5)
    save_to(domain, tmp_path / "keep.snap")
    calls_before = domain.accounting.total()
    console_before = domain.console.total_bytes
    reports_before = verify_reports(domain)
    domain.destroy()

    restored = restore_from(tmp_path / "keep.snap", domain.config)
    try:
        assert restored.online_vcpus == vcpus
        # The guest continues: its console and hypercall counters go on from where they were.
        assert restored.console.total_bytes == console_before
        assert restored.accounting.total() >= calls_before
        assert wait_until(lambda: verify_reports(restored) >= reports_before + 1, 12), restored.console.text()[-500:]
        assert restored.accounting.total() > calls_before
        assert_healthy(restored)
    finally:
        restored.destroy()


def test_hot_added_and_ballooned_memory_come_back_as_they_were(boot, tmp_path: Path) -> None:
    domain = boot(VERIFY.format(vcpus=1) + "name: mem\n")
    assert wait_until(lambda: "verify: 2048 pages" in domain.console.text(), 10)
    domain.grow_memory(96 * MIB)
    domain.set_balloon_target(40 * MIB)
    assert wait_until(lambda: domain.memory.held_pages * 4096 <= 40 * MIB, 10)
    save_to(domain, tmp_path / "mem.snap")
    present, held = domain.memory.size, domain.memory.held_pages
    target = domain.balloon_target_bytes
    domain.destroy()

    restored = restore_from(tmp_path / "mem.snap", domain.config)
    try:
        assert restored.memory.size == present == 96 * MIB
        assert restored.memory.held_pages == held  # the frames the guest gave back stay unbacked
        assert restored.balloon_target_bytes == target
        # ...and are not backed on the host either: the restored RSS is what the guest holds, at most.
        assert restored.memory.resident_bytes() <= held * 4096
        time.sleep(5.5)
        assert verify_reports(restored) >= 1
        assert_healthy(restored)
    finally:
        restored.destroy()


def test_restore_paused_keeps_it_paused(boot, tmp_path: Path) -> None:
    domain = boot(VERIFY.format(vcpus=1) + "name: still\n")
    time.sleep(0.5)
    save_to(domain, tmp_path / "still.snap")
    calls = domain.accounting.total()
    domain.destroy()
    restored = restore_from(tmp_path / "still.snap", domain.config, paused=True)
    try:
        time.sleep(0.3)
        assert restored.state is DomainState.PAUSED
        assert restored.accounting.total() == calls
        restored.unpause()
        assert wait_until(lambda: restored.accounting.total() > calls, 5)
    finally:
        restored.destroy()


@pytest.fixture
def saved(boot, tmp_path: Path):
    domain = boot(VERIFY.format(vcpus=1) + "name: bad\n")
    time.sleep(0.3)
    path = tmp_path / "bad.snap"
    save_to(domain, path)
    domain.destroy()
    return path, domain.config


def reader_error(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(SnapshotError) as caught:
            SnapshotReader(fd, str(path))
        return f"{caught.value.title}: {caught.value.message}"
    finally:
        os.close(fd)


def test_truncated_snapshot_is_refused(saved) -> None:
    path, _ = saved
    os.truncate(path, path.stat().st_size // 2)
    assert "truncated" in reader_error(path)


def test_wrong_format_version_is_refused(saved) -> None:
    path, _ = saved
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", 99))
    assert "format version 99" in reader_error(path)


def test_not_a_snapshot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"x" * HEADER.size * 4)
    assert "not a pvtui snapshot" in reader_error(path)


def test_corrupt_memory_is_refused_before_anything_runs(saved) -> None:
    path, config = saved
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size - 4096 * 3 + 17)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(SnapshotError, match="checksum"):
        restore_from(path, config)


def test_corrupt_state_section_is_refused(saved) -> None:
    path, _ = saved
    fd = os.open(path, os.O_RDONLY)
    engine = SnapshotReader(fd, str(path)).sections["engine"]
    os.close(fd)
    with open(path, "r+b") as f:
        f.seek(engine.offset + 5)
        f.write(b"#")
    assert "checksum" in reader_error(path)


# --- live migration in process (two domains, one socketpair) ------------------------------
def test_live_migration_under_load_loses_nothing(boot) -> None:
    source = boot(VERIFY.format(vcpus=2) + "name: mover\n")
    assert wait_until(lambda: "verify: 2048 pages" in source.console.text(), 10)
    ours, theirs = socket.socketpair()
    target = build_for_restore(source.config, source.kernel_path, source.kernel_image, None, 0)
    outcome: dict[str, object] = {}

    def receive() -> None:
        try:
            outcome["started"] = Receiver(target, theirs).run()
        except Exception as exc:  # reported below
            outcome["error"] = exc

    thread = threading.Thread(target=receive)
    thread.start()
    reports: list[dict[str, object]] = []
    figures = Sender(source, ours, progress=reports.append).run()
    thread.join(10)
    try:
        assert "error" not in outcome, outcome
        assert figures.rounds >= 1 and reports and reports[-1]["stage"] == "done"
        assert source.state is DomainState.PAUSED  # the source stops for good; its pvd destroys it
        reports_before = verify_reports(target)
        assert wait_until(lambda: verify_reports(target) > reports_before, 12), target.console.text()[-500:]
        assert target.online_vcpus == 2
        assert_healthy(target)
    finally:
        target.destroy()


def test_migration_stream_closed_midway_leaves_the_source_running(boot) -> None:
    source = boot("memory: 256M\nname: stay\nworkload: {type: verify, wss: 200M}\n")
    assert wait_until(lambda: "verify: 51200 pages" in source.console.text(), 20), source.console.text()
    ours, theirs = socket.socketpair()
    calls = source.accounting.total()

    def break_it() -> None:
        from pvtui.engine.snapshot.migration import FrameStream

        stream = FrameStream(theirs)
        stream.send_json(b"A", {"stage": "ready"})
        for _ in range(5):  # take a few frames, then hang up mid-copy
            _, crc, length = stream.recv_header()
            stream.recv_body(crc, length)
        theirs.close()

    thread = threading.Thread(target=break_it)
    thread.start()
    with pytest.raises(MigrationError, match="keeps running here"):
        Sender(source, ours).run()
    thread.join(5)
    assert not source.memory.dirty_logging
    assert source.state in (DomainState.RUNNING, DomainState.BLOCKED)
    assert wait_until(lambda: source.accounting.total() > calls + 10, 5)
    assert_healthy(source)


def test_a_vcpu_blocked_in_a_multicall_stays_blocked_and_wakes_on_an_event(boot, tmp_path: Path) -> None:
    """The idle guest sleeps in a multicall (set_timer_op + block) with no deadline: restored, it
    stays asleep (no spurious return) and the next event finishes that multicall."""
    domain = boot("memory: 64M\nname: sleeper\nmaxmem: 64M\n")
    assert wait_until(lambda: domain.state is DomainState.BLOCKED, 5)
    save_to(domain, tmp_path / "sleeper.snap")
    calls = domain.accounting.total()
    domain.destroy()
    restored = restore_from(tmp_path / "sleeper.snap", domain.config)
    try:
        time.sleep(0.5)
        assert restored.state is DomainState.BLOCKED
        assert restored.accounting.total() == calls, "nothing woke it"
        restored.set_balloon_target(48 * MIB)  # an event on the control port
        assert wait_until(lambda: restored.memory.held_pages * 4096 <= 48 * MIB, 5)
        assert restored.accounting.total() > calls
        assert_healthy(restored)
    finally:
        restored.destroy()


def test_xen_pv_guest_save_restore_keeps_its_block(boot, tmp_path: Path) -> None:
    """A Xen PV kernel blocked with nothing to wake it must still be blocked after a restore
    (waking it would run into its ud2 and crash it)."""
    from test_xen import build_xen_kernel

    kernel = str(build_xen_kernel(tmp_path, block=True))
    domain = boot("memory: 32M\nname: xsleeper\n", kernel=kernel)
    assert domain.personality == "xen"
    assert wait_until(lambda: "ENOSYS" in domain.console.text() and domain.state is DomainState.BLOCKED, 5)
    save_to(domain, tmp_path / "x.snap")
    domain.destroy()
    restored = restore_from(tmp_path / "x.snap", domain.config)
    try:
        assert restored.personality == "xen"
        time.sleep(0.5)
        assert restored.state is DomainState.BLOCKED, restored.crash_reason
        assert "ENOSYS" in restored.console.text()
    finally:
        restored.destroy()
