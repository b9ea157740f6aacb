"""The engine on real KVM: boots, hypercalls and their error paths, shutdown, balloon, idle cost."""

from __future__ import annotations

import time

import psutil
import pytest
from helpers import tiny_kernel

from pvtui.engine.abi import Errno, ShutdownReason
from pvtui.engine.domain import DomainError
from pvtui.engine.states import DomainState

MIB = 1 << 20
BAD_ADDR = 0x7FFF00000000


def wait_for(predicate, timeout=5.0, interval=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_one_vcpu_boots_prints_and_powers_off_on_request(boot):
    domain = boot("name: one\n")
    assert wait_for(lambda: "workload idle" in domain.console.text())
    assert "1/1 vCPUs, 64 MiB" in domain.console.text()
    assert wait_for(lambda: domain.state is DomainState.BLOCKED)
    domain.request_shutdown()
    assert domain.wait(5)
    assert domain.state is DomainState.SHUTDOWN and domain.shutdown_reason is ShutdownReason.poweroff
    assert "shutdown requested by the engine" in domain.console.text()


def test_several_vcpus_all_run_guest_code(boot):
    domain = boot("name: four\nvcpus: 4\nworkload: {type: cpu, duty: 100}\n")
    assert wait_for(lambda: all(f"vcpu {i} up" in domain.console.text() for i in (1, 2, 3)))
    time.sleep(0.5)
    stats = domain.stats()
    assert [v.online for v in stats.vcpus] == [True] * 4
    assert all(v.cpu_time_s > 0.05 for v in stats.vcpus), stats.vcpus
    assert stats.state is DomainState.RUNNING


def test_selftest_every_hypercall_and_error_path(boot):
    domain = boot("name: selftest\nvcpus: 2\nmaxvcpus: 3\nworkload: selftest\n")
    assert domain.wait(10)
    console = domain.console.text()
    assert "selftest done: 52 passed, 0 failed" in console, console
    # The engine survived every bad call and the guest chose to power off.
    assert domain.shutdown_reason is ShutdownReason.poweroff and domain.state is DomainState.SHUTDOWN
    records = domain.accounting.records()

    def results(op: str, **where: int) -> set[int]:
        picked = [r for r in records if r.op_name == op]
        for index, value in where.items():
            picked = [r for r in picked if r.args[int(index[1:])] == value]
        return {r.result for r in picked}

    assert results("xen_version", a0=0) == {0x10000}
    assert -Errno.EINVAL in results("xen_version", a0=99)
    assert results("console_io", a2=BAD_ADDR) == {-Errno.EFAULT}
    assert -Errno.EINVAL in results("console_io", a1=65537)
    assert results("unknown_99") == {-Errno.ENOSYS}
    assert results("unknown_4294967295") == {-Errno.ENOSYS}
    assert {-Errno.EFAULT, -Errno.EINVAL, -Errno.EPERM, 1} <= results("memory_op", a0=1)
    assert results("memory_op", a0=42) == {-Errno.EINVAL}
    assert {0, -Errno.EFAULT, -Errno.EINVAL} <= results("multicall")
    in_multicall = [r for r in records if r.in_multicall and r.op_name in ("xen_version", "unknown_99", "console_io")]
    assert {r.result for r in in_multicall} >= {0x10000, -Errno.ENOSYS, -Errno.EFAULT}
    assert results("vcpu_op", a0=3, a1=3) == {-Errno.ENOENT}
    assert results("vcpu_op", a0=50) == {-Errno.EINVAL}
    assert results("vcpu_op", a0=2, a1=0) == {-Errno.EPERM}
    assert -Errno.EFAULT in results("vcpu_op", a0=0, a1=2, a2=BAD_ADDR)
    assert results("event_channel_op", a1=999) == {-Errno.EINVAL}
    assert results("sched_op", a0=77) == {-Errno.EINVAL}
    assert -Errno.EINVAL in results("sched_op", a0=2, a1=9)
    block = [r for r in records if r.op_name == "sched_op" and r.args[0] == 1]
    assert any(r.latency_ns >= 1_500_000 for r in block), "the timer block slept until its deadline"
    per_op = domain.accounting.per_op()
    assert per_op["console_io"] >= 55 and sum(domain.accounting.per_vcpu().values()) == sum(per_op.values())


@pytest.mark.parametrize("reason", list(ShutdownReason))
def test_custom_kernel_each_shutdown_reason(boot, tmp_path, reason):
    kernel = tiny_kernel(tmp_path, f"pv_hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, {reason.value})")
    domain = boot(f"name: tiny\nkernel: {kernel}\n")
    assert domain.wait(5)
    assert domain.console.text() == "hello from tiny\n"
    assert domain.shutdown_reason is reason
    expected = DomainState.CRASHED if reason is ShutdownReason.crash else DomainState.SHUTDOWN
    assert domain.state is expected


@pytest.mark.parametrize(
    ("action", "needle", "extra"),
    [
        ('__asm__ volatile("hlt")', "privileged instruction", ""),
        ('__asm__ volatile("mov %%cr3, %%rax" ::: "rax")', "privileged instruction", ""),
        ("*(volatile long *)(si->nr_pages * 4096 + 8192) = 1", "unmapped guest-physical address", "maxmem: 128M\n"),
        ('__asm__ volatile("outb %%al, $0x80" :: "a"(0))', "I/O port 0x80", ""),
    ],
)
def test_misbehaving_guest_crashes_alone(boot, tmp_path, action, needle, extra):
    healthy = boot("name: healthy\nworkload: {type: chatty, lines_per_sec: 50}\n")
    domain = boot(f"name: bad\n{extra}kernel: {tiny_kernel(tmp_path, action)}\n")
    assert domain.wait(5)
    assert domain.state is DomainState.CRASHED
    assert needle in (domain.crash_reason or "")
    lines = healthy.console.text().count("chatty")
    assert wait_for(lambda: healthy.console.text().count("chatty") > lines + 2)
    assert healthy.state in (DomainState.RUNNING, DomainState.BLOCKED)


def test_balloon_really_moves_host_rss(boot):
    domain = boot("name: balloon\nmemory: 512M\nworkload: {type: memory, wss: 448M, touch_rate: 0}\n")
    process = psutil.Process()
    assert wait_for(lambda: domain.memory.resident_bytes() > 440 * MIB, timeout=10)
    rss_full = process.memory_info().rss
    domain.set_balloon_target(128 * MIB)
    assert wait_for(lambda: domain.stats().memory.held_bytes == 128 * MIB)
    rss_low = process.memory_info().rss
    assert rss_full - rss_low > 300 * MIB, (rss_full, rss_low)
    assert domain.stats().memory.rss_bytes <= 130 * MIB
    assert wait_for(lambda: domain.stats().memory.guest_used_bytes <= 128 * MIB)  # the guest says so after the call
    domain.set_balloon_target(512 * MIB)
    assert wait_for(lambda: domain.stats().memory.held_bytes == 512 * MIB, timeout=10)
    assert process.memory_info().rss - rss_low > 300 * MIB


def test_balloon_target_out_of_range_is_refused_unchanged(boot):
    domain = boot("name: refuse\nmemory: 64M\n")
    for bad in (1 * MIB, 128 * MIB):
        with pytest.raises(DomainError, match="Choose between"):
            domain.set_balloon_target(bad)
    assert domain.balloon_target_bytes == 64 * MIB


def test_idle_domain_costs_no_host_cpu(boot):
    domain = boot("name: idle\nvcpus: 2\n")
    assert wait_for(lambda: domain.online_vcpus == 2 and domain.state is DomainState.BLOCKED)
    before = sum(domain.vcpus.cpu_times().values())
    time.sleep(2.0)
    used = sum(domain.vcpus.cpu_times().values()) - before
    assert used < 0.01, f"idle 2-vCPU domain used {used:.4f}s of CPU in 2s"


def test_vcpu_hotplug_and_unplug(boot):
    domain = boot("name: hot\nvcpus: 1\nmaxvcpus: 4\nworkload: {type: cpu, duty: 30}\n")
    assert wait_for(lambda: domain.online_vcpus == 1 and "workload cpu" in domain.console.text())
    domain.set_online_vcpus(4)
    assert wait_for(lambda: domain.online_vcpus == 4)
    assert wait_for(lambda: all(f"vcpu {i} up" in domain.console.text() for i in (1, 2, 3)))
    domain.set_online_vcpus(2)
    assert domain.online_vcpus == 2
    assert "vcpu 3 going offline" in domain.console.text()
    with pytest.raises(DomainError, match="between 1 and maxvcpus"):
        domain.set_online_vcpus(5)
    assert domain.online_vcpus == 2


def test_pause_stops_vcpus_promptly_and_unpause_resumes(boot):
    domain = boot("name: pause\nvcpus: 2\nworkload: {type: cpu, duty: 100}\n")
    assert wait_for(lambda: domain.online_vcpus == 2)
    domain.pause()
    assert domain.state is DomainState.PAUSED
    before = domain.vcpus.cpu_times()
    time.sleep(0.3)
    after = domain.vcpus.cpu_times()
    assert all(after[i] - before[i] < 0.02 for i in before)
    domain.unpause()
    time.sleep(0.3)
    assert all(domain.vcpus.cpu_times()[i] - after[i] > 0.1 for i in after)
