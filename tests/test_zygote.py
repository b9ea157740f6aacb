"""The zygote: what a starting monitor reports, and the rehearsal every monitor inherits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import REPO

from pvtui.daemon import zygote


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (b"", zygote._DIED_STARTING),
        (b"\xff\x00not json", zygote._GARBLED),
        (b"[1, 2]", zygote._GARBLED),
        (b'{"title": "no ok"}', zygote._GARBLED),
        (b'{"ok": "yes"}', zygote._GARBLED),
        (b'{"ok": true}', {"ok": True}),
        (b'{"ok": false, "title": "T", "message": "M"}', {"ok": False, "title": "T", "message": "M"}),
    ],
)
def test_a_monitors_start_report_is_read_or_refused(report: bytes, expected: dict[str, object]):
    assert zygote._read_status(report) == expected


def _child_that_sleeps() -> int:
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    return pid


@pytest.mark.parametrize("garbled", [True, False])
def test_a_monitor_that_garbles_its_report_is_killed_and_pvd_told(garbled: bool):
    """pvd hears "did not start": a monitor that garbled its report must not run on, unknown to it."""
    pid = _child_that_sleeps()
    ours, theirs = socket.socketpair()
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    started = zygote._Starting("tag-7", pid, os.pidfd_open(pid), time.monotonic() + 30)
    started.data += b"garbage{" if garbled else b'{"ok": true}'
    zygote._answer(theirs, started, read_fd)
    answer = ours.recv(4096)
    try:
        if garbled:
            assert b'"ok": false' in answer and b"garbled" in answer and b'"tag": "tag-7"' in answer
            _, status = os.waitpid(pid, 0)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        else:
            assert b'"ok": true' in answer
            assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # a monitor that started runs on
    finally:
        if not garbled:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        ours.close()
        theirs.close()


REHEARSAL_CHECK = """
import gc, os, sys, threading
from pvtui.daemon import paths
from pvtui.daemon.rehearsal import rehearse
ok = rehearse()
names = open("/proc/net/unix").read()
print(ok, threading.active_count(), len(os.listdir(paths.runtime_dir())), "zygote-rehearsal" in names)
"""


def test_the_rehearsal_boots_a_domain_and_leaves_nothing_behind(kvm_available: None, tmp_path):
    """One thread, no socket name, no file: the zygote forks safely after it."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = {**os.environ, "PVTUI_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", REHEARSAL_CHECK], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "1", "0", "False"], done.stdout + done.stderr
    assert done.stderr == ""


def test_without_kvm_the_rehearsal_is_skipped_with_a_reason(tmp_path):
    env = {**os.environ, "PVTUI_RUNTIME_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    env["PVTUI_KVM_DEVICE"] = str(tmp_path / "no-such-kvm")
    done = subprocess.run([sys.executable, "-c", REHEARSAL_CHECK], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["False", "1"]
    assert "no rehearsal" in done.stderr and "KVM is not available" in done.stderr


ZYGOTE_ASKED_NONSENSE = """
import json
from pvtui.daemon.zygote import start_zygote
zygote = start_zygote()
reader = zygote.sock.makefile("rb")
for line in (b"7 {not json\\n", b"8 {}\\n", b"9 [1, 2]\\n"):
    zygote.sock.sendall(line)
    print(reader.readline().decode().strip())
zygote.sock.close()
"""


def test_the_zygote_answers_a_spec_it_cannot_read_and_goes_on(tmp_path):
    """The spec is read in the forked child (the zygote touches as few pages as it can per fork): a bad
    one is that child's failure, told to pvd under its tag, and the zygote serves the next."""
    env = {**os.environ, "PVTUI_RUNTIME_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    env["PVTUI_KVM_DEVICE"] = str(tmp_path / "no-kvm-needed-here")
    done = subprocess.run(
        [sys.executable, "-c", ZYGOTE_ASKED_NONSENSE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["tag"] for a in answers] == [7, 8, 9]
    assert all(a["ok"] is False and a["title"] == "Bad monitor spec" for a in answers), answers
