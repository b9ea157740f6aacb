"""Enforcing Xen credit-scheduler weight and cap on the host.

Each monitor process goes into its own cgroup under ``pvtui/``:

- cgroup v2 (``cpu`` controller enabled): ``cpu.weight`` = weight * 100 / 256
  (Xen's default 256 maps to the kernel's default 100), ``cpu.max`` = cap.
- cgroup v1 (``cpu`` hierarchy): ``cpu.shares`` = weight * 4 (256 -> 1024, the
  default), ``cpu.cfs_quota_us`` = cap % of a 100 ms period.
- Neither writable: weight becomes the monitor threads' nice value (CFS
  weights step by ~1.25x per nice level); a cap cannot be enforced and is
  refused with the reason.

Cap is a percentage of one host CPU (0 = none), as in ``xl sched-credit``.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

from pvtui.errors import PvtuiError

CFS_PERIOD_US = 100_000
DEFAULT_WEIGHT = 256


class CpuControlError(PvtuiError):
    """Weight or cap cannot be enforced here."""


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


class CpuControl:
    def __init__(self, instance: str = "default", root: Path = Path("/sys/fs/cgroup")) -> None:
        """``instance`` keeps the groups of different pvd instances (runtime dirs) apart."""
        self.backend = "nice"
        self.base: Path | None = None
        v2_controllers = root / "cgroup.controllers"
        if v2_controllers.exists() and "cpu" in v2_controllers.read_text().split() and _writable(root):
            self.backend, self.base = "cgroup2", root / "pvtui" / instance
        elif _writable(root / "cpu"):
            self.backend, self.base = "cgroup1", root / "cpu" / "pvtui" / instance
        if self.base is not None:
            try:
                if self.backend == "cgroup2":
                    self.base.parent.mkdir(exist_ok=True)
                    (self.base.parent / "cgroup.subtree_control").write_text("+cpu")
                self.base.mkdir(parents=True, exist_ok=True)
                if self.backend == "cgroup2":
                    (self.base / "cgroup.subtree_control").write_text("+cpu")
            except OSError:
                self.backend, self.base = "nice", None

    @property
    def can_cap(self) -> bool:
        return self.base is not None

    def _group(self, name: str) -> Path:
        assert self.base is not None
        return self.base / name

    def attach(self, name: str, pid: int, weight: int, cap: int) -> None:
        """Put a monitor in its group and apply weight and cap."""
        if self.base is not None:
            group = self._group(name)
            group.mkdir(exist_ok=True)
            (group / "cgroup.procs").write_text(str(pid))
        self.apply(name, pid, weight, cap)

    def apply(self, name: str, pid: int, weight: int, cap: int) -> None:
        if not 1 <= weight <= 65535:
            raise CpuControlError("Weight out of range", "Use a weight from 1 to 65535 (default 256).")
        if cap < 0:
            raise CpuControlError("Cap out of range", "Use a cap in percent of one CPU, 0 for none.")
        if self.base is None:
            if cap:
                raise CpuControlError(
                    "CPU caps need a cgroup cpu controller",
                    "No writable cgroup cpu controller on this host (mount one, or run pvd as root); weight still works.",
                )
            self._apply_nice(pid, weight)
            return
        group = self._group(name)
        if self.backend == "cgroup2":
            (group / "cpu.weight").write_text(str(max(1, min(10000, round(weight * 100 / DEFAULT_WEIGHT)))))
            quota = "max" if cap == 0 else str(cap * CFS_PERIOD_US // 100)
            (group / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
        else:
            (group / "cpu.shares").write_text(str(max(2, weight * 4)))
            (group / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text("-1" if cap == 0 else str(cap * CFS_PERIOD_US // 100))

    @staticmethod
    def _apply_nice(pid: int, weight: int) -> None:
        nice = max(-20, min(19, round(-math.log(weight / DEFAULT_WEIGHT, 1.25))))
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, int(tid), nice)

    def detach(self, name: str) -> None:
        if self.base is not None:
            with contextlib.suppress(OSError):
                self._group(name).rmdir()
