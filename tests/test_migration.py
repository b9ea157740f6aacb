"""save / restore / suspend / resume / migrate through real pvds and the real CLI.

Two pvds with their own runtime directories stand for two hosts. The
bundled `verify` workload runs in every domain that moves: a lost page, a
clock going backwards or a reset hypercall count crashes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import REPO, Engine, wait_until

VERIFY = "memory: 64M\nvcpus: 2\nworkload: {type: verify, wss: 8M}\n"


def start_engine(tmp_path_factory: pytest.TempPathFactory, label: str, *extra: str) -> Engine:
    eng = Engine(tmp_path_factory.mktemp(f"run-{label}"), tmp_path_factory.mktemp(f"domains-{label}"))
    eng.ok("engine", "start", *extra)
    return eng


@pytest.fixture(scope="module")
def hosts(kvm_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Engine]]:
    source = start_engine(tmp_path_factory, "a")
    target = start_engine(tmp_path_factory, "b")
    try:
        yield source, target
    finally:
        source.cleanup()
        target.cleanup()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def domain(eng: Engine, name: str) -> dict | None:
    return next((d for d in eng.json("list") if d["name"] == name), None)


def console(eng: Engine, name: str) -> str:
    return eng.ok("console", "-n", name)


def healthy(eng: Engine, name: str) -> None:
    row = domain(eng, name)
    assert row is not None and row["state"] in ("running", "blocked"), row
    assert "MISMATCH" not in console(eng, name)


def verify_reports_grow(eng: Engine, name: str, timeout: float = 12) -> None:
    before = console(eng, name).count("verify: ok")
    assert wait_until(lambda: console(eng, name).count("verify: ok") > before, timeout, 0.5), console(eng, name)


def test_save_then_restore_under_another_name(hosts, tmp_path: Path) -> None:
    source, _ = hosts
    source.ok("create", source.define("saver", VERIFY))
    time.sleep(1)
    snap = tmp_path / "saver.snap"
    out = source.ok("save", "saver", str(snap))
    assert "saved and destroyed" in out and snap.exists()
    assert domain(source, "saver") is None
    assert not list(tmp_path.glob(".*partial")), "the temporary file was left behind"
    restored = source.json("restore", str(snap), "--name", "saver2")
    assert restored["name"] == "saver2"
    verify_reports_grow(source, "saver2")
    healthy(source, "saver2")
    assert domain(source, "saver2")["hypercalls_total"] > 0
    source.ok("destroy", "saver2")


def test_checkpoint_keeps_running_and_a_taken_name_is_refused(hosts, tmp_path: Path) -> None:
    source, _ = hosts
    source.ok("create", source.define("ckpt", VERIFY))
    time.sleep(0.5)
    snap = tmp_path / "ckpt.snap"
    assert "still running" in source.ok("save", "ckpt", str(snap), "--keep")
    healthy(source, "ckpt")
    refused = source.cli("restore", str(snap))
    assert refused.returncode != 0 and "exists" in refused.stderr and "--name" in refused.stderr
    source.ok("destroy", "ckpt")


def test_suspend_shows_in_list_and_resume_brings_it_back(hosts) -> None:
    source, _ = hosts
    source.ok("create", source.define("napper", VERIFY))
    time.sleep(0.5)
    source.ok("suspend", "napper")
    assert domain(source, "napper")["state"] == "suspended"
    assert "suspended" in source.ok("list")
    source.ok("resume", "napper")
    verify_reports_grow(source, "napper")
    healthy(source, "napper")
    assert not (source.runtime / "suspended" / "napper.snap").exists()
    source.ok("destroy", "napper")


def test_live_migration_between_two_pvds_under_load(hosts) -> None:
    source, target = hosts
    source.ok("create", source.define("traveller", VERIFY))
    time.sleep(1)
    result = source.json("migrate", "traveller", str(target.runtime))
    assert result["rounds"] >= 1 and result["downtime_ms"] > 0
    assert domain(source, "traveller") is None
    verify_reports_grow(target, "traveller")
    healthy(target, "traveller")
    # ...and back again: the domain that arrived can leave.
    target.json("migrate", "traveller", str(target.runtime.parent / source.runtime.name))
    verify_reports_grow(source, "traveller")
    healthy(source, "traveller")
    source.ok("destroy", "traveller")


def test_a_refusing_target_leaves_the_source_unchanged(hosts) -> None:
    source, target = hosts
    source.ok("create", source.define("twin", VERIFY))
    target.ok("create", target.define("twin", "memory: 32M\n"))
    failed = source.cli("migrate", "twin", str(target.runtime))
    assert failed.returncode != 0 and "refused" in failed.stderr and "exists" in failed.stderr
    healthy(source, "twin")
    nowhere = source.cli("migrate", "twin", "/nonexistent/pvd")
    assert nowhere.returncode != 0 and "No pvd at" in nowhere.stderr
    healthy(source, "twin")
    source.ok("destroy", "twin")
    target.ok("destroy", "twin")


def migrate_in_background(source: Engine, name: str, target: Engine) -> subprocess.Popen[str]:
    """``pvtui migrate NAME TARGET`` as its own process, so the test can act while it copies."""
    return subprocess.Popen(
        [sys.executable, "-m", "pvtui", "migrate", name, str(target.runtime)],
        env={**os.environ, "PYTHONPATH": str(REPO), **source.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_target_pvd_killed_mid_copy_leaves_the_source_running(hosts, tmp_path_factory) -> None:
    source, _ = hosts
    victim = start_engine(tmp_path_factory, "victim")
    source.ok("create", source.define("big", "memory: 512M\nworkload: {type: verify, wss: 400M, rate: 256M}\n"))
    assert wait_until(lambda: "pages, rewriting" in console(source, "big"), 30, 0.5)
    migrate = migrate_in_background(source, "big", victim)
    try:
        assert wait_until(lambda: (victim.runtime / "domains" / "big.json").exists(), 20, 0.01)
        os.kill(victim.pvd_pid() or 0, signal.SIGKILL)
        _, err = migrate.communicate(timeout=60)
        assert migrate.returncode != 0, "the migration should have failed"
        assert "keeps running here" in err or "failed" in err.lower(), err
        healthy(source, "big")
        verify_reports_grow(source, "big")
        # The arriving copy was discarded: no monitor of it is left on the killed host.
        arriving = victim.monitor_pids().get("big")
        assert arriving is None or wait_until(lambda: not alive(arriving), 10)
    finally:
        migrate.kill()
        victim.cleanup()
        source.ok("destroy", "big")


def test_a_cancelled_migration_leaves_the_domain_running_here(hosts) -> None:
    """``migrate --cancel`` mid-copy: the command says so, the domain runs on here, the target has none."""
    source, target = hosts
    source.ok("create", source.define("stayer", "memory: 512M\nworkload: {type: verify, wss: 400M, rate: 256M}\n"))
    assert wait_until(lambda: "pages, rewriting" in console(source, "stayer"), 30, 0.5)
    before = domain(source, "stayer")
    migrate = migrate_in_background(source, "stayer", target)
    try:
        assert wait_until(lambda: (domain(source, "stayer") or {}).get("migration") is not None, 20, 0.01)
        source.ok("migrate", "--cancel", "stayer")
        _, err = migrate.communicate(timeout=60)
        assert migrate.returncode != 0 and "cancelled" in err.lower() and "keeps running here" in err, err
        after = domain(source, "stayer")
        assert after is not None and after["migration"] is None
        assert (after["pid"], after["domid"]) == (before["pid"], before["domid"]), "the same domain, not a copy"
        healthy(source, "stayer")
        verify_reports_grow(source, "stayer")
        assert wait_until(lambda: domain(target, "stayer") is None and "stayer" not in target.monitor_pids(), 10)
    finally:
        migrate.kill()
        source.ok("destroy", "stayer")


def test_restore_refused_when_the_host_cannot_back_it(hosts, tmp_path_factory, tmp_path: Path) -> None:
    _, target = hosts
    roomy = start_engine(tmp_path_factory, "roomy", "--overcommit", "3")
    try:
        roomy.ok("create", roomy.define("huge", "memory: 20G\n"))
        snap = tmp_path / "huge.snap"
        roomy.ok("save", "huge", str(snap))
        target.ok("create", target.define("filler", "memory: 12G\n"))
        refused = target.cli("restore", str(snap))
        assert refused.returncode != 0
        assert "huge" in refused.stderr and "MiB" in refused.stderr, refused.stderr
        assert domain(target, "huge") is None
    finally:
        roomy.cleanup()
        target.cli("destroy", "filler")


def test_hostile_migrate_incoming_requests_change_nothing(hosts) -> None:
    """Garbage meta, a stream that is not one, and a kernel that is not an ELF: each refused, no domain left."""
    import json
    import socket
    import struct
    import zlib

    _, target = hosts
    before = {d["name"] for d in target.json("list")}

    def ask(meta: object, after: bytes = b"") -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(target.runtime / "pvd.sock"))
            sock.settimeout(20)
            request = {"v": 1, "id": 1, "op": "migrate_incoming", "args": {"meta": meta}}
            sock.sendall(json.dumps(request).encode() + b"\n" + after)
            data = b""
            while b"\n" not in data:  # the reply; a refusal keeps the connection open for more requests
                data += sock.recv(65536)
            if b'"ok":true' not in data.split(b"\n", 1)[0]:
                return data
            while chunk := sock.recv(65536):  # accepted: the stream's answer, then pvd hangs up
                data += chunk
            return data

    assert b"bad definition" in ask({"config": {"name": "x", "memory": "lots"}})
    assert b"corrupt" in ask({"config": {"name": "evil", "memory": "32M"}, "present_bytes": -5})
    not_a_kernel = b"\x7fELF but not really"
    frame = struct.pack("<BIQ", ord("K"), zlib.crc32(not_a_kernel), len(not_a_kernel)) + not_a_kernel
    answer = ask({"config": {"name": "evil", "memory": "32M"}, "present_bytes": 32 << 20}, frame)
    assert b'"ready"' in answer and b"error" in answer.split(b"\n", 1)[1], answer
    junk = ask({"config": {"name": "evil2", "memory": "32M"}}, b"\x00" * 13)
    assert b"error" in junk.split(b"\n", 1)[1], junk
    time.sleep(0.5)
    assert {d["name"] for d in target.json("list")} == before


def test_a_xen_pv_guest_migrates_and_keeps_its_block(hosts, tmp_path: Path) -> None:
    """A Xen PV kernel blocked with nothing to wake it arrives still blocked (waking would crash it)."""
    from test_xen import build_xen_kernel

    source, target = hosts
    kernel = build_xen_kernel(tmp_path, block=True)
    source.ok("create", source.define("xmover", f"kernel: {kernel}\nmemory: 32M\n"))
    assert wait_until(lambda: "ENOSYS" in console(source, "xmover"), 10)
    result = source.json("migrate", "xmover", str(target.runtime))
    assert result["rounds"] >= 1
    time.sleep(0.5)
    row = domain(target, "xmover")
    assert row is not None and row["state"] == "blocked" and row["personality"] == "xen", row
    assert "ENOSYS" in console(target, "xmover")
    kernel.unlink()  # the target keeps its own copy of the kernel: a reboot would not need this file
    target.ok("destroy", "xmover")


def test_bad_snapshot_files_are_refused_through_the_cli(hosts, tmp_path: Path) -> None:
    source, _ = hosts
    source.ok("create", source.define("spoiled", VERIFY))
    time.sleep(0.5)
    good = tmp_path / "good.snap"
    source.ok("save", "spoiled", str(good))
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "checksum": data[:-5000] + bytes([data[-5000] ^ 0xFF]) + data[-4999:],
        "format version 7": data[:8] + (7).to_bytes(4, "little") + data[12:],
    }
    for words, content in cases.items():
        bad = tmp_path / "bad.snap"
        bad.write_bytes(content)
        refused = source.cli("restore", str(bad))
        assert refused.returncode != 0 and words in refused.stderr, (words, refused.stderr)
        assert domain(source, "spoiled") is None, f"{words}: nothing may start"
    source.ok("restore", str(good))
    healthy(source, "spoiled")
    source.ok("destroy", "spoiled")


def test_a_full_disk_fails_the_save_and_the_domain_runs_on(hosts, tmp_path: Path) -> None:
    source, _ = hosts
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        source.ok("create", source.define("roomless", VERIFY))
        time.sleep(0.5)
        failed = source.cli("save", "roomless", str(small / "roomless.snap"))
        assert failed.returncode != 0 and "keeps running" in failed.stderr, failed.stderr
        assert list(small.iterdir()) == [], "no partial file is left behind"
        assert domain(source, "roomless")["state"] in ("running", "blocked")
        verify_reports_grow(source, "roomless")
        source.ok("destroy", "roomless")
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
