"""Committed memory: pvd admits what the host can back, not what happens to be free now.

Real pvd, real monitors: the domains here are large but never touch their
memory, which is exactly what let the old check (free memory now) admit more
than the host has.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil
import pytest
from helpers import Engine, wait_until

from pvtui.daemon.admission import HOST_RESERVE_BYTES, MemoryLedger, parse_overcommit
from pvtui.errors import PvtuiError

MIB = 1 << 20
GIB = 1 << 30


def _host(engine: Engine) -> dict:
    return engine.json("top", "-b")["host"]


def _more_than_half_the_limit() -> int:
    """A size two domains of which pass the commit limit, though one fits with room to spare."""
    limit = psutil.virtual_memory().total - HOST_RESERVE_BYTES
    return (limit // 2 + GIB) // MIB * MIB


def test_the_ledger_counts_commitments_and_names_the_numbers():
    ledger = MemoryLedger(total_bytes=8 * GIB, overcommit=1.0, reserve_bytes=GIB)
    ledger.check(6 * GIB, GIB, "fits exactly")
    with pytest.raises(PvtuiError) as refused:
        ledger.check(6 * GIB, GIB + MIB, "domain big")
    assert "domain big" in refused.value.title
    assert "6144 MiB committed of the 7168 MiB" in refused.value.message
    assert "1024 MiB are left" in refused.value.message
    doubled = MemoryLedger(total_bytes=8 * GIB, overcommit=2.0, reserve_bytes=GIB)
    doubled.check(7 * GIB, 7 * GIB, "overcommitted")
    assert doubled.overcommitted_percent(14 * GIB) == 100.0
    assert ledger.overcommitted_percent(5 * GIB) == 0.0
    assert parse_overcommit(None) == 1.0 and parse_overcommit("1.5") == 1.5
    for bad in ("0.5", "abc", "11"):
        with pytest.raises(PvtuiError, match="Bad overcommit ratio"):
            parse_overcommit(bad)


def test_untouched_domains_still_commit_their_memory(engine: Engine):
    size = _more_than_half_the_limit()
    engine.ok("create", engine.define("first", f"memory: {size // MIB}M\n"))
    host = _host(engine)
    assert host["memory_committed"] >= size
    # The first domain touched almost nothing: the host still has far more than
    # `size` free, and the old check (free memory now) would have admitted it.
    assert psutil.virtual_memory().available > size
    refused = engine.cli("create", engine.define("second", f"memory: {size // MIB}M\n"))
    assert refused.returncode == 3, refused.stdout
    assert "Not enough host memory for domain second" in refused.stderr
    assert "MiB committed of the" in refused.stderr and "--overcommit" in refused.stderr
    assert "second" not in engine.ok("list")
    # Growing a domain commits too: mem-max past the limit is refused and changes nothing.
    engine.ok("create", engine.define("small", f"memory: 64M\nmaxmem: {size // MIB}M\n"))
    grow = engine.cli("mem-max", "small", f"{size // MIB}M")
    assert grow.returncode == 3 and "Not enough host memory for growing small" in grow.stderr
    assert engine.json("list")[-1]["memory"]["present_bytes"] == 64 * MIB
    engine.ok("destroy", "first")
    engine.ok("mem-max", "small", f"{size // MIB}M")  # room again once the first one is gone
    assert _host(engine)["memory_committed"] >= size
    engine.ok("destroy", "small")


def test_overcommit_is_an_explicit_pvd_setting(tmp_path: Path, kvm_available: None):
    eng = Engine(tmp_path / "run", tmp_path / "domains")
    eng.domains.mkdir()
    try:
        started = eng.cli("engine", "start", "--overcommit", "2")
        assert started.returncode == 0, started.stderr
        assert "overcommit x2" in started.stdout
        size = _more_than_half_the_limit()
        eng.ok("create", eng.define("first", f"memory: {size // MIB}M\n"))
        eng.ok("create", eng.define("second", f"memory: {size // MIB}M\n"))
        host = _host(eng)
        assert host["overcommit"] == 2.0 and host["overcommitted_percent"] > 0
        again = eng.cli("engine", "start", "--overcommit", "3")
        assert again.returncode == 2 and "already running with overcommit x2" in again.stderr
        bad = eng.cli("engine", "start", "--overcommit", "0.5")
        assert bad.returncode != 0 and "Bad overcommit ratio" in bad.stderr
    finally:
        eng.cleanup()


def _memory_cgroup() -> Path:
    root = Path("/sys/fs/cgroup/memory")
    if not (root / "cgroup.procs").exists() or os.geteuid() != 0:
        pytest.skip("needs root and the cgroup-v1 memory controller to make the OOM killer act in a small cgroup")
    return root / f"pvtui-test-oom-{os.getpid()}"


def test_a_monitor_the_oom_killer_takes_is_a_crash_with_the_reason(engine: Engine):
    group = _memory_cgroup()
    engine.ok(
        "create",
        engine.define("hog", "memory: 256M\non_crash: preserve\nworkload: {type: memory, wss: 200M, touch_rate: 0}\n"),
    )
    rss = lambda: engine.json("list")[-1]["memory"]["rss_bytes"]  # noqa: E731
    assert wait_until(lambda: rss() > 190 * MIB)
    engine.ok("mem-set", "hog", "32M")
    assert wait_until(lambda: rss() < 80 * MIB)
    pid = engine.monitor_pids()["hog"]
    group.mkdir()
    try:
        # Pages charged before the move stay where they were: the guest taking
        # its memory back charges the new group, which holds far less.
        (group / "memory.limit_in_bytes").write_text(str(64 * MIB))
        (group / "cgroup.procs").write_text(str(pid))
        engine.cli("mem-set", "hog", "256M")  # may be answered, or the monitor may die answering
        assert wait_until(lambda: not psutil.pid_exists(pid), timeout=20)
        assert wait_until(lambda: engine.json("list")[-1]["state"] == "crashed")
        listed = engine.ok("list")
        assert "killed by the kernel's OOM killer" in listed, listed
        assert "killed by the kernel's OOM killer" in (engine.runtime / "pvd.log").read_text()
    finally:
        with contextlib.suppress(OSError):
            engine.ok("destroy", "hog")
        wait_until(lambda: not (group / "cgroup.procs").read_text().strip(), timeout=5)
        with contextlib.suppress(OSError):
            group.rmdir()
