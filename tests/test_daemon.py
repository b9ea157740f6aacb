"""pvd with real monitor processes: every verb, refusals, recovery and the protocol's edges."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import REPO, Engine, wait_until

MIB = 1 << 20


def domain(engine: Engine, name: str) -> dict | None:
    return next((d for d in engine.json("list") if d["name"] == name), None)


def vcpu_times(engine: Engine, name: str) -> list[float]:
    return [v["cpu_time_s"] for v in engine.json("vcpu-list", name)[name]]


def test_create_list_console_log_and_destroy(engine: Engine):
    path = engine.define("chat", "vcpus: 2\nworkload: {type: chatty, lines_per_sec: 20}\n")
    assert "created chat" in engine.ok("create", path)
    pid = engine.monitor_pids()["chat"]
    cmdline = " ".join(psutil.Process(pid).cmdline())
    assert "pvtui-monitor -name chat" in cmdline, cmdline  # ps shows which process runs which domain
    assert wait_until(lambda: "chatty: line 5" in engine.ok("console", "chat", "--no-follow"))
    listed = domain(engine, "chat")
    assert listed["state"] in ("running", "blocked") and listed["vcpus_online"] == 2
    assert "chat" in engine.ok("list")
    records = [json.loads(line) for line in engine.ok("log", "chat", "--json", "--op", "console_io").splitlines()]
    assert records and {r["op"] for r in records} == {"console_io"}
    stats = engine.json("log", "chat", "--stats")
    assert stats["console_io"]["count"] >= 5 and stats["multicall"]["per_s_uptime"] > 0
    assert "destroyed" in engine.ok("destroy", "chat")
    assert domain(engine, "chat") is None
    assert wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)


def test_pause_unpause_reboot_and_shutdown(engine: Engine):
    engine.ok("create", engine.define("life", "workload: {type: cpu, duty: 100}\n"))
    assert wait_until(lambda: vcpu_times(engine, "life")[0] > 0.1)
    engine.ok("pause", "life")
    assert domain(engine, "life")["state"] == "paused"
    before = vcpu_times(engine, "life")[0]
    time.sleep(0.5)
    assert vcpu_times(engine, "life")[0] - before < 0.03
    engine.ok("unpause", "life")
    assert wait_until(lambda: vcpu_times(engine, "life")[0] - before > 0.2)
    engine.ok("reboot", "life")  # on_reboot: restart (default)
    assert wait_until(lambda: (domain(engine, "life") or {}).get("restarts") == 1)
    assert "life: destroyed" in engine.ok("shutdown", "life", "--wait")
    assert domain(engine, "life") is None


def test_shutdown_of_a_deaf_guest_destroys_after_timeout(engine: Engine, tmp_path):
    from helpers import tiny_kernel

    kernel = tiny_kernel(tmp_path, "for (;;) ;")
    engine.ok("create", engine.define("deaf", f"kernel: {kernel}\n"))
    started = time.monotonic()
    assert "deaf: destroyed" in engine.ok("shutdown", "deaf", "--wait", "--timeout", "1")
    assert time.monotonic() - started < 6


def test_vcpu_hotplug_seen_by_the_guest(engine: Engine):
    engine.ok("create", engine.define("hot", "vcpus: 1\nmaxvcpus: 4\nworkload: {type: cpu, duty: 20}\n"))
    engine.ok("vcpu-set", "hot", "4")
    assert wait_until(lambda: all(f"vcpu {i} up" in engine.ok("console", "hot", "-n") for i in (1, 2, 3)))
    vcpus = engine.json("vcpu-list", "hot")["hot"]
    assert [v["online"] for v in vcpus] == [True] * 4
    assert wait_until(lambda: all(t > 0.01 for t in vcpu_times(engine, "hot")))  # guest code runs on them
    engine.ok("vcpu-set", "hot", "2")
    vcpus = engine.json("vcpu-list", "hot")["hot"]
    assert [v["online"] for v in vcpus] == [True, True, False, False]
    refused = engine.cli("vcpu-set", "hot", "5")
    assert refused.returncode == 3 and "between 1 and maxvcpus (4)" in refused.stderr
    assert domain(engine, "hot")["vcpus_online"] == 2
    engine.ok("destroy", "hot")


def test_pinning_moves_the_vcpu_thread(engine: Engine):
    engine.ok("create", engine.define("pin", "vcpus: 2\nworkload: {type: cpu, duty: 100}\n"))
    engine.ok("vcpu-pin", "pin", "1", "1")
    engine.ok("vcpu-pin", "pin", "0", "0")
    time.sleep(0.3)
    vcpus = engine.json("vcpu-list", "pin")["pin"]
    assert [v["affinity"] for v in vcpus] == [[0], [1]]
    assert [v["host_cpu"] for v in vcpus] == [0, 1]
    refused = engine.cli("vcpu-pin", "pin", "0", "64")
    assert refused.returncode == 3 and "CPU 64 does not exist" in refused.stderr
    assert engine.json("vcpu-list", "pin")["pin"][0]["affinity"] == [0]
    engine.ok("destroy", "pin")


def test_cap_limits_measured_cpu(engine: Engine):
    engine.ok("create", engine.define("capped", "workload: {type: cpu, duty: 100}\n"))
    engine.ok("sched-credit", "capped", "-c", "50")
    time.sleep(0.3)

    def sample() -> tuple[float, float]:
        """The vCPU's CPU time and when it was read (the middle of the CLI call: a busy host slows the CLI)."""
        before = time.monotonic()
        cpu = vcpu_times(engine, "capped")[0]
        return cpu, (before + time.monotonic()) / 2

    start, started = sample()
    time.sleep(2.0)
    end, ended = sample()
    share = (end - start) / (ended - started)
    assert 0.35 <= share <= 0.65, f"capped at 50% it used {end - start:.2f}s in {ended - started:.2f}s"
    assert engine.json("sched-credit", "capped")["cap"] == 50
    engine.ok("destroy", "capped")


def test_weight_divides_a_contended_cpu(engine: Engine):
    for name in ("heavy", "light"):
        engine.ok("create", engine.define(name, "cpus: '0'\nworkload: {type: cpu, duty: 100}\n"))
    engine.ok("sched-credit", "heavy", "-w", "768")
    engine.ok("sched-credit", "light", "-w", "256")
    time.sleep(0.3)
    start = {n: vcpu_times(engine, n)[0] for n in ("heavy", "light")}
    time.sleep(3.0)
    used = {n: vcpu_times(engine, n)[0] - start[n] for n in ("heavy", "light")}
    ratio = used["heavy"] / max(used["light"], 1e-3)
    assert 2.0 <= ratio <= 4.5, f"weights 768:256 gave {used}"
    for name in ("heavy", "light"):
        engine.ok("destroy", name)


def test_memory_balloon_and_growth(engine: Engine):
    engine.ok(
        "create",
        engine.define("mem", "memory: 256M\nmaxmem: 512M\nworkload: {type: memory, wss: 480M, touch_rate: 0}\n"),
    )
    assert wait_until(lambda: domain(engine, "mem")["memory"]["rss_bytes"] > 240 * MIB)
    engine.ok("mem-set", "mem", "96M")
    assert wait_until(lambda: domain(engine, "mem")["memory"]["rss_bytes"] <= 100 * MIB)
    shrunk = domain(engine, "mem")
    assert shrunk["memory"]["held_bytes"] == 96 * MIB, shrunk
    refused = engine.cli("mem-set", "mem", "400M")
    assert refused.returncode == 3 and "mem-max grows it" in refused.stderr
    engine.ok("mem-max", "mem", "512M")
    engine.ok("mem-set", "mem", "512M")
    # The guest takes the hot-added frames and its working set grows into them.
    assert wait_until(lambda: domain(engine, "mem")["memory"]["guest_used_bytes"] > 400 * MIB, timeout=15)
    memory = domain(engine, "mem")["memory"]
    assert memory["present_bytes"] == memory["held_bytes"] == 512 * MIB
    refused = engine.cli("mem-max", "mem", "1G")
    assert refused.returncode == 3 and "may grow to 512 MiB at most" in refused.stderr
    engine.ok("destroy", "mem")


def test_refusals_change_nothing(engine: Engine):
    engine.ok("create", engine.define("steady", "memory: 64M\nmaxmem: 64G\n"))
    before = domain(engine, "steady")
    huge = engine.cli("mem-max", "steady", "60G")
    assert huge.returncode == 3 and "Not enough host memory" in huge.stderr
    dup = engine.cli("create", engine.define("steady", "memory: 64M\n"))
    assert dup.returncode == 3 and "A domain named steady exists" in dup.stderr
    too_big = engine.cli("create", engine.define("giant", "memory: 100G\nmaxmem: 100G\n"))
    assert too_big.returncode == 3 and "Not enough host memory" in too_big.stderr
    assert domain(engine, "giant") is None
    bad = engine.cli("create", engine.define("typo", "vcpu: 2\n"))
    assert bad.returncode == 2 and "typo.yaml:2:1: unknown key 'vcpu'; did you mean 'vcpus'?" in bad.stderr
    after = domain(engine, "steady")
    assert after["memory"] == {
        **before["memory"],
        "rss_bytes": after["memory"]["rss_bytes"],
        "guest_used_bytes": after["memory"]["guest_used_bytes"],
    }
    assert after["pid"] == before["pid"]
    engine.ok("destroy", "steady")


def test_kill_9_of_a_monitor_touches_no_other_domain(engine: Engine):
    engine.ok("create", engine.define("victim", "on_crash: preserve\n"))
    engine.ok("create", engine.define("phoenix", "on_crash: restart\n"))
    engine.ok("create", engine.define("bystander", "workload: {type: chatty, lines_per_sec: 20}\n"))
    pids = engine.monitor_pids()
    os.kill(pids["victim"], signal.SIGKILL)
    os.kill(pids["phoenix"], signal.SIGKILL)
    assert wait_until(lambda: (domain(engine, "victim") or {}).get("state") == "crashed")
    assert "monitor process" in domain(engine, "victim")["crash_reason"]
    assert wait_until(lambda: (domain(engine, "phoenix") or {}).get("pid") not in (None, pids["phoenix"]))
    lines = engine.ok("console", "bystander", "-n").count("chatty")
    assert wait_until(lambda: engine.ok("console", "bystander", "-n").count("chatty") > lines + 3)
    assert domain(engine, "bystander")["pid"] == pids["bystander"]
    for name in ("victim", "phoenix", "bystander"):
        engine.ok("destroy", name)
    assert domain(engine, "victim") is None


def test_kill_9_of_pvd_then_restart_reattaches_with_counters(engine: Engine):
    engine.ok("create", engine.define("survivor", "workload: {type: chatty, lines_per_sec: 20}\n"))
    assert wait_until(lambda: domain(engine, "survivor")["hypercalls_total"] > 20)
    before = domain(engine, "survivor")
    pvd = psutil.Process(engine.pvd_pid())
    os.kill(pvd.pid, signal.SIGKILL)
    pvd.wait(10)  # gone (reaped by its parent or init), not merely signalled
    assert psutil.pid_exists(before["pid"]), "the domain outlives pvd"
    assert engine.cli("list").returncode == 3, "a read-only verb must not start pvd"
    engine.ok("engine", "start")
    after = domain(engine, "survivor")
    assert after["pid"] == before["pid"] and after["domid"] == before["domid"]
    assert after["hypercalls_total"] >= before["hypercalls_total"]
    assert "pvd" in engine.ok("engine", "status")
    engine.ok("destroy", "survivor")


def test_second_pvd_refuses_to_start(engine: Engine):
    engine.ok("engine", "status")
    env = {**os.environ, **engine.env, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "pvtui.daemon"], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 1 and "already running" in result.stderr


def raw_exchange(engine: Engine, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(engine.runtime / "pvd.sock"))
        with contextlib.suppress(
            BrokenPipeError, ConnectionResetError
        ):  # pvd answers an oversized request, then hangs up
            sock.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"this is not json\n", "malformed"),
        (b"[1, 2]\n", "malformed"),
        (b'{"v": 99, "id": 1, "op": "list"}\n', "version"),
        (b'{"v": 1, "id": 1, "op": "format_disk"}\n', "unknown_op"),
        (b'{"v": 1, "id": 1, "op": "vcpu_set", "args": {"name": "x", "count": "two"}}\n', "bad_args"),
        (b'{"v": 1, "id": 1, "op": "list", "args": {"all": true}}\n', "bad_args"),
        (b'{"v": 1, "id": 1, "op": "destroy", "args": {}}\n', "bad_args"),
        (b'{"v": 1, "op": "list"}\n', "malformed"),
        (b'{"v": 1, "id": 1, "op": "create", "args": {"path": "' + b"x" * (2 << 20) + b'"}}\n', "too_large"),
    ],
    ids=[
        "not-json",
        "not-object",
        "version",
        "unknown-op",
        "bad-type",
        "unknown-arg",
        "missing-arg",
        "no-id",
        "oversized",
    ],
)
def test_bad_requests_get_errors_and_change_nothing(engine: Engine, payload: bytes, code: str):
    engine.ok("create", engine.define("steady", "vcpus: 2\nmaxvcpus: 3\nmemory: 64M\n"))
    try:
        # The guest brings its second vCPU up itself after boot: compare once it has.
        assert wait_until(lambda: domain(engine, "steady")["vcpus_online"] == 2)
        before = _configuration(engine)
        reply = raw_exchange(engine, payload)
        assert reply["ok"] is False and reply["error"]["code"] == code, reply
        assert reply["error"]["message"]
        assert _configuration(engine) == before, "a refused request changed nothing"
    finally:
        engine.ok("destroy", "steady")


def _replies(sock: socket.socket, count: int) -> list[dict]:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(1 << 20)
        assert chunk, f"pvd hung up after {len(data.splitlines())} of {count} replies"
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_requests_on_one_connection_run_side_by_side(engine: Engine):
    """A quick request is not held up by a slow one sent before it on the same connection,
    and every pipelined request gets its own reply, matched by id."""
    path = engine.define("sidebyside", "memory: 32M\n")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(engine.runtime / "pvd.sock"))
        create = {"v": 1, "id": 1, "op": "create", "args": {"path": path}}
        hello = {"v": 1, "id": 2, "op": "hello", "args": {}}
        sock.sendall(json.dumps(create).encode() + b"\n" + json.dumps(hello).encode() + b"\n")
        first, second = _replies(sock, 2)
        assert first["id"] == 2 and first["ok"], "hello answered while the domain was still starting"
        assert second["id"] == 1 and second["ok"] and second["result"]["name"] == "sidebyside"

        # A flood of pipelined requests: each answered once (pvd reads ahead a bounded number).
        flood = b"".join(
            json.dumps({"v": 1, "id": 100 + i, "op": "list", "args": {}}).encode() + b"\n" for i in range(300)
        )
        sock.sendall(flood)
        replies = _replies(sock, 300)
        assert sorted(r["id"] for r in replies) == list(range(100, 400))
        assert all(r["ok"] and [d["name"] for d in r["result"]] == ["sidebyside"] for r in replies)
    engine.ok("destroy", "sidebyside")


def _configuration(engine: Engine) -> list[tuple]:
    """What a request could change: each domain's identity, vCPUs, memory and scheduling.

    Not its counters, nor running/blocked, which a guest flips by itself many times a second.
    """
    return [
        (
            d["name"],
            d["domid"],
            d["pid"],
            d["vcpus_online"],
            d["vcpus_max"],
            d["weight"],
            d["cap"],
            d["memory"]["target_bytes"],
            d["memory"]["present_bytes"],
            d["memory"]["max_bytes"],
        )
        for d in engine.json("list")
    ]


NOBODY = 65534


def as_nobody(action) -> bytes:
    """Run ``action()`` in a forked child that became uid/gid nobody; its bytes come back."""
    return as_user(NOBODY, action)


def as_user(uid: int, action) -> bytes:
    """Run ``action()`` in a forked child holding only ``uid`` (and gid ``uid``); what it returns, or repr(exc)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            result = action()
        except Exception as exc:
            result = repr(exc).encode()
        os.write(write_fd, result if isinstance(result, bytes) else str(result).encode())
        os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    data = os.read(read_fd, 65536)
    os.close(read_fd)
    return data


def ask_pvd(sock_path: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(sock_path)
        sock.sendall(b'{"v": 1, "id": 1, "op": "list"}\n')
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data


def test_connection_from_another_uid_is_refused(engine: Engine):
    sock_path = str(engine.runtime / "pvd.sock")
    outcome = as_nobody(lambda: ask_pvd(sock_path))
    assert outcome == b"PermissionError(13, 'Permission denied')", "the 0700 runtime directory keeps other users out"

    # Even if the directory is opened up by mistake, pvd checks the peer's uid.
    opened = [p for p in [engine.runtime, *engine.runtime.parents] if p != p.parent]
    modes = {p: p.stat().st_mode & 0o777 for p in opened}
    for path in opened:
        path.chmod(modes[path] | 0o011)
    (engine.runtime / "pvd.sock").chmod(0o666)
    try:
        raw = as_nobody(lambda: ask_pvd(sock_path))
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
        (engine.runtime / "pvd.sock").chmod(0o600)
    assert raw.startswith(b"{"), raw
    reply = json.loads(raw)
    assert reply["ok"] is False and reply["error"]["code"] == "permission"
    assert "Run pvtui as that user" in reply["error"]["message"]


def test_top_batch_and_engine_status(engine: Engine):
    engine.ok("create", engine.define("topped", "workload: {type: cpu, duty: 50}\n"))
    # At once, before pvd has two samples of its own: top measures over its own delay.
    frames = [json.loads(line) for line in engine.ok("top", "-b", "-i", "2", "-d", "0.6", "--json").splitlines()]
    assert len(frames) == 2
    for frame in frames:
        row = next(d for d in frame["domains"] if d["name"] == "topped")
        assert 30 <= row["cpu_percent"] <= 70, row
        assert row["hypercalls_per_s"] is not None
    out = engine.ok("top", "-b", "-i", "2", "-d", "0.5")
    assert out.count("NAME") == 2 and "CPU(sec)" in out and "HCALLS/s" in out and "topped" in out
    assert "(rates over 0.5s)" in out
    status = engine.json("engine", "status")
    assert status["domains"] >= 1 and status["runtime_dir"] == str(engine.runtime)
    engine.ok("destroy", "topped")


def test_monitors_can_never_gain_privileges_by_exec(engine: Engine):
    engine.ok("create", engine.define("nnp", "memory: 32M\n"))
    pid = engine.monitor_pids()["nnp"]
    status = Path(f"/proc/{pid}/status").read_text()
    assert "NoNewPrivs:\t1" in status
    for task in Path(f"/proc/{pid}/task").iterdir():  # the vCPU threads too
        assert "NoNewPrivs:\t1" in (task / "status").read_text()
    engine.ok("destroy", "nnp")


def test_monitors_of_a_root_pvd_run_as_their_own_unprivileged_uids(engine: Engine):
    if os.geteuid() != 0:
        pytest.skip("monitors give up root only when pvd runs as root")
    from pvtui.daemon.paths import monitor_address
    from pvtui.daemon.privileges import monitor_id

    engine.ok("create", engine.define("jail-a", "memory: 32M\n"))
    engine.ok("create", engine.define("jail-b", "memory: 32M\n"))
    pids = engine.monitor_pids()
    a, b = pids["jail-a"], pids["jail-b"]
    for pid in (a, b):
        uids = psutil.Process(pid).uids()
        assert uids.real == uids.effective == uids.saved == monitor_id(pid) != 0
        assert psutil.Process(pid).gids().effective == monitor_id(pid)
        for task in Path(f"/proc/{pid}/task").iterdir():  # the vCPU threads dropped too
            status = (task / "status").read_text()
            if "Name:\tkvm-" not in status:  # KVM's own kernel worker (nx huge-page recovery) stays the kernel's
                assert f"Uid:\t{monitor_id(pid)}" in status

    def as_monitor_a(action) -> str:
        """What a compromised monitor A could do: ``action`` run with A's uid."""
        return as_user(monitor_id(a), action).decode()

    assert as_monitor_a(lambda: os.kill(b, signal.SIGKILL)).startswith("PermissionError")
    assert as_monitor_a(lambda: Path(f"/proc/{b}/mem").read_bytes()).startswith("PermissionError")
    assert as_monitor_a(lambda: os.listdir(engine.runtime)).startswith("PermissionError")

    def talk_to_b() -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(monitor_address("jail-b"))
            sock.sendall(b'{"v": 1, "id": 1, "op": "stats"}\n')
            return repr(sock.recv(100))

    # Closed unanswered (or reset: it closes with the request unread; or closed before the request
    # could even be sent, a broken pipe): a monitor serves pvd's uid only.
    answer = as_monitor_a(talk_to_b)
    assert answer == "b''" or answer.startswith(("ConnectionResetError", "BrokenPipeError")), answer
    assert psutil.pid_exists(b)
    engine.ok("pause", "jail-b")  # pvd still reaches it
    engine.ok("destroy", "jail-a")
    engine.ok("destroy", "jail-b")


def test_a_destroy_during_an_on_crash_restart_wins(engine: Engine):
    """Kill a monitor, destroy its domain at once: destroyed, and it does not come back."""
    import asyncio

    from pvtui.client import Client

    engine.ok("create", engine.define("phoenix2", "memory: 32M\non_crash: restart\n"))

    async def kill_then_destroy() -> None:
        async with await Client.connect(start=False) as client:
            os.kill(engine.monitor_pids()["phoenix2"], signal.SIGKILL)
            for _ in range(100):  # until pvd has noticed (the restart window) or the domain is gone
                try:
                    await client.destroy("phoenix2")
                    return
                except Exception as exc:  # the old monitor still dying: try again
                    assert "No domain named" not in str(exc), exc
                    await asyncio.sleep(0.005)

    asyncio.run(kill_then_destroy())
    time.sleep(1.0)
    assert domain(engine, "phoenix2") is None
