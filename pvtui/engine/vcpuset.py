"""A domain's vCPUs as one object: its runners, which are wanted online, and what is asked of them.

``Domain`` and the hypercall handlers go through this object (up, down,
initialise, pause, events, pinning, figures) instead of reaching into each
runner; the runners themselves (one thread each) are ``pvtui.engine.vcpu``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pvtui.domain.limits import host_cpus
from pvtui.engine.threadtimes import thread_schedstat
from pvtui.engine.vcpu import VcpuRunner, VcpuState

if TYPE_CHECKING:
    from pvtui.engine.domain import Domain


class VcpuSet:
    """The vCPUs of one domain. ``build`` makes the KVM vCPU and runner for an id (personality-specific)."""

    def __init__(self, domain: Domain, online_at_boot: int, build: Callable[[int], VcpuRunner]) -> None:
        self.domain = domain
        self.max = domain.max_vcpus
        self.runners: dict[int, VcpuRunner] = {}
        #: Bit n set: vCPU n is wanted online (the guest brings it up, or takes it down).
        self.wanted_mask = (1 << online_at_boot) - 1
        self._build = build
        self._lock = threading.RLock()

    # --- membership -------------------------------------------------------------
    def get_or_create(self, vcpu_id: int) -> VcpuRunner:
        with self._lock:
            runner = self.runners.get(vcpu_id)
            if runner is None:
                runner = self.runners[vcpu_id] = self._build(vcpu_id)
            return runner

    def all(self) -> list[VcpuRunner]:
        return list(self.runners.values())

    def is_up(self, vcpu_id: int) -> bool:
        runner = self.runners.get(vcpu_id)
        return runner is not None and runner.is_up

    def wanted(self, vcpu_id: int) -> bool:
        return bool(self.wanted_mask >> vcpu_id & 1)

    @property
    def online(self) -> int:
        return sum(1 for r in self.all() if r.is_up)

    def all_blocked(self) -> bool:
        up = [r for r in self.all() if r.is_up]
        return bool(up) and all(r.state is VcpuState.BLOCKED for r in up)

    # --- requests -------------------------------------------------------------------
    def up(self, vcpu_id: int) -> None:
        self.get_or_create(vcpu_id).bring_up()

    def down(self, vcpu_id: int) -> None:
        runner = self.runners.get(vcpu_id)
        if runner is not None and runner.is_up:
            runner.take_down()

    def initialise(self, vcpu_id: int, rip: int, rsp: int, rdi: int) -> None:
        self.get_or_create(vcpu_id).set_context(rip, rsp, rdi)

    def want(self, count: int) -> list[VcpuRunner]:
        """Want ``count`` vCPUs online; returns the up ones that must leave."""
        self.wanted_mask = (1 << count) - 1
        return [r for vcpu_id, r in list(self.runners.items()) if vcpu_id >= count and r.is_up]

    def settle(self, count: int, leaving: list[VcpuRunner], timeout: float, finished: Callable[[], bool]) -> None:
        """Give the guest ``timeout`` seconds to take the leaving vCPUs down (then force it) and bring new ones up."""
        deadline = time.monotonic() + timeout
        for runner in leaving:
            while runner.is_up and time.monotonic() < deadline:
                time.sleep(0.002)
            if runner.is_up and not self.wanted(runner.id):
                runner.take_down()
        while self.online < count and time.monotonic() < deadline and not finished():
            time.sleep(0.001)

    def pause(self) -> None:
        runners = self.all()
        for runner in runners:
            runner.pause()
        for runner in runners:
            runner.wait_parked(2.0)

    def unpause(self) -> None:
        for runner in self.all():
            runner.unpause()

    def stop(self) -> list[VcpuRunner]:
        runners = self.all()
        for runner in runners:
            runner.stop()
        return runners

    def wake(self, vcpu_id: int) -> None:
        runner = self.runners.get(vcpu_id)
        if runner is not None:
            runner.wake()

    def pin(self, vcpu_id: int, cpus: set[int] | None) -> None:
        runner = self.get_or_create(vcpu_id)
        runner.affinity = set(cpus) if cpus else None
        if runner.native_id is not None and runner.state is not VcpuState.STOPPED:
            os.sched_setaffinity(runner.native_id, cpus or host_cpus())

    # --- figures ------------------------------------------------------------------------
    def schedstats(self) -> dict[int, tuple[float, float]]:
        """(seconds run, seconds waited runnable for a host CPU) of each vCPU thread, one read each.

        Run time is to the nanosecond, guest time included (see threadtimes).
        The wait is Xen's *runnable* time: what the domain wanted and did not
        get. Used plus waited is its measured demand, which is how a
        rebalancer tells a starved domain from an idle one.
        """
        figures = {}
        for vcpu_id, runner in list(self.runners.items()):
            if runner.final_cpu_time_s is not None:
                figures[vcpu_id] = (runner.final_cpu_time_s, runner.final_wait_time_s)
            else:
                figures[vcpu_id] = thread_schedstat(runner.native_id) if runner.native_id else (0.0, 0.0)
        return figures

    def cpu_times(self) -> dict[int, float]:
        """Host CPU seconds of each vCPU thread (:meth:`schedstats`' first figure)."""
        return {vcpu_id: run for vcpu_id, (run, _wait) in self.schedstats().items()}

    def host_cpus(self) -> dict[int, int | None]:
        """The host CPU each vCPU thread last ran on (xl vcpu-list's CPU column)."""
        result: dict[int, int | None] = {}
        for vcpu_id, runner in list(self.runners.items()):
            result[vcpu_id] = None
            if runner.native_id and runner.state is not VcpuState.STOPPED:
                try:
                    with open(f"/proc/self/task/{runner.native_id}/stat") as f:
                        result[vcpu_id] = int(f.read().rsplit(")", 1)[1].split()[36])
                except (OSError, ValueError, IndexError):
                    pass
        return result
