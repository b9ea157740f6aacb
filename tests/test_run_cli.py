"""``pvtui run`` as a real process: on_* actions, Ctrl-C, exit codes and messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import REPO, run_pvtui, tiny_kernel


def domain_file(tmp_path, body: str) -> str:
    path = tmp_path / "dom.yaml"
    path.write_text(body)
    return str(path)


def start_pvtui(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "pvtui", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_for_output(proc: subprocess.Popen[str], needle: str, timeout: float = 10) -> str:
    """Read stdout lines until one contains needle."""
    deadline = time.monotonic() + timeout
    seen = ""
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        if needle in line:
            return seen
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"{needle!r} never appeared; got {seen!r}")


@pytest.mark.usefixtures("kvm_available")
class TestRun:
    def test_poweroff_destroy_exits_zero_with_summary(self, tmp_path):
        kernel = tiny_kernel(tmp_path, "pv_hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, SHUTDOWN_poweroff)")
        result = run_pvtui("run", domain_file(tmp_path, f"name: p\nkernel: {kernel}\n"))
        assert result.returncode == 0, result.stderr
        assert result.stdout == "hello from tiny\n"
        assert "p shut down (poweroff)" in result.stderr
        assert "console_io" in result.stderr and "sched_op" in result.stderr and "vcpu0" in result.stderr

    def test_reboot_restart_restarts_until_the_crash_loop_guard(self, tmp_path):
        kernel = tiny_kernel(tmp_path, "pv_hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, SHUTDOWN_reboot)")
        result = run_pvtui("run", "--no-summary", domain_file(tmp_path, f"name: r\nkernel: {kernel}\n"))
        assert result.returncode == 1
        assert result.stdout.count("hello from tiny") == 5
        assert result.stderr.count("restarting r") == 4
        assert "restarted 5 times" in result.stderr

    def test_reboot_destroy_exits_zero(self, tmp_path):
        kernel = tiny_kernel(tmp_path, "pv_hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, SHUTDOWN_reboot)")
        result = run_pvtui("run", domain_file(tmp_path, f"name: r\non_reboot: destroy\nkernel: {kernel}\n"))
        assert result.returncode == 0 and result.stdout.count("hello") == 1

    def test_suspend_is_destroyed(self, tmp_path):
        kernel = tiny_kernel(tmp_path, "pv_hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, SHUTDOWN_suspend)")
        result = run_pvtui("run", domain_file(tmp_path, f"name: s\nkernel: {kernel}\n"))
        assert result.returncode == 0 and "s shut down (suspend)" in result.stderr

    def test_crash_destroy_exits_non_zero_and_says_why(self, tmp_path):
        kernel = tiny_kernel(tmp_path, '__asm__ volatile("hlt")')
        result = run_pvtui("run", domain_file(tmp_path, f"name: c\nkernel: {kernel}\n"))
        assert result.returncode == 1
        assert "c crashed: vCPU 0: privileged instruction or unhandled fault" in result.stderr

    def test_crash_restart(self, tmp_path):
        kernel = tiny_kernel(tmp_path, "pv_hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, SHUTDOWN_crash)")
        result = run_pvtui(
            "run", "--no-summary", domain_file(tmp_path, f"name: c\non_crash: restart\nkernel: {kernel}\n")
        )
        assert result.returncode == 1 and result.stderr.count("restarting c") == 4

    def test_crash_preserve_keeps_domain_until_ctrl_c(self, tmp_path):
        kernel = tiny_kernel(tmp_path, "pv_hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, SHUTDOWN_crash)")
        proc = start_pvtui("run", domain_file(tmp_path, f"name: keep\non_crash: preserve\nkernel: {kernel}\n"))
        assert proc.stderr is not None
        deadline = time.monotonic() + 10
        err = ""
        while "preserved" not in err and time.monotonic() < deadline:
            err += proc.stderr.readline()
        assert "keep preserved in state crashed" in err
        time.sleep(0.3)
        assert proc.poll() is None, "a preserved domain stays until Ctrl-C"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 1

    def test_ctrl_c_shuts_the_guest_down_and_exits_zero(self, tmp_path):
        proc = start_pvtui("run", domain_file(tmp_path, "name: idle\nvcpus: 2\n"))
        wait_for_output(proc, "workload idle")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "shutdown requested by the engine" in out
        assert "asking idle to shut down" in err and "idle shut down (poweroff)" in err
        assert "vcpu1" in err

    def test_guest_ignoring_shutdown_is_destroyed_after_timeout(self, tmp_path):
        kernel = tiny_kernel(tmp_path, "for (;;) ;")
        proc = start_pvtui("run", "--timeout", "1", domain_file(tmp_path, f"name: deaf\nkernel: {kernel}\n"))
        wait_for_output(proc, "hello from tiny")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "destroying deaf" in err
        assert time.monotonic() - started < 4


def test_invalid_file_exits_two_with_position(tmp_path):
    result = run_pvtui("run", domain_file(tmp_path, "name: x\nvcpus: 0\n"))
    assert result.returncode == 2
    assert "dom.yaml:2:8: vcpus: 0 is out of range; it must be at least 1" in result.stderr


def test_missing_kvm_says_what_to_do(tmp_path):
    result = run_pvtui("run", domain_file(tmp_path, "name: x\n"), env={"PVTUI_KVM_DEVICE": "/nonexistent/kvm"})
    assert result.returncode == 3
    assert "KVM is not available" in result.stderr
    assert "/nonexistent/kvm does not exist" in result.stderr and "modprobe" in result.stderr


def test_output_read_by_nobody_ends_quietly():
    """``pvtui schema | head -0``: the reader is gone before pvtui writes; no traceback, SIGPIPE's status."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "pvtui", "schema"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=60,
    )
    os.close(write_end)
    assert result.returncode == 141 and result.stderr == ""
