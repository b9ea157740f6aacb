"""What the tests share besides fixtures: paths, the real CLI, tiny kernels, a private pvd.

pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in pyproject.toml), so
a test says ``from helpers import ...`` under ``pytest`` and
``python -m pytest`` alike.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from pvtui.guest.build import build_single_kernel

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIR = REPO / "pvtui" / "guest" / "src"


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something true (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def run_pvtui(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``pvtui`` CLI (as ``python -m pvtui``) from the checkout."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pvtui", *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO
    )


def build_custom_kernel(tmp_path: Path, c_source: str) -> Path:
    """Compile a tiny guest kernel against pv.h, linked at 1 MiB."""
    src = tmp_path / "tiny.c"
    src.write_text(c_source)
    return build_single_kernel(src, tmp_path / "tiny.elf")


class Engine:
    """A private pvd for tests: its own runtime and domains directories."""

    def __init__(self, runtime: Path, domains: Path) -> None:
        self.runtime = runtime
        self.domains = domains
        self.env = {"PVTUI_RUNTIME_DIR": str(runtime), "PVTUI_DOMAINS_DIR": str(domains)}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run_pvtui(*args, timeout=timeout, env=self.env)

    def ok(self, *args: str) -> str:
        result = self.cli(*args)
        assert result.returncode == 0, f"pvtui {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    def define(self, name: str, body: str) -> str:
        path = self.domains / f"{name}.yaml"
        path.write_text(f"name: {name}\n{body}")
        return str(path)

    def json(self, *args: str) -> object:
        import json

        return json.loads(self.ok(*args, "--json"))

    def monitor_pids(self) -> dict[str, int]:
        import json

        pids = {}
        for state in (self.runtime / "domains").glob("*.json"):
            data = json.loads(state.read_text())
            pids[data["name"]] = data["pid"]
        return pids

    def pvd_pid(self) -> int | None:
        try:
            return int((self.runtime / "pvd.lock").read_text().strip())
        except (OSError, ValueError):
            return None

    def cleanup(self) -> None:
        import signal

        self.cli("engine", "stop", "--destroy-domains")
        for pid in self.monitor_pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


TINY = r"""
#include "pv.h"
__attribute__((force_align_arg_pointer, noreturn))
void _start(struct pv_start_info *si, unsigned long vcpu)
{
    static const char hello[] = "hello from tiny\n";
    pv_hypercall3(__HYPERVISOR_console_io, CONSOLEIO_write, sizeof hello - 1, (pv_u64)hello);
    ACTION;
    for (;;)
        ;
}
"""


def tiny_kernel(tmp_path, action: str) -> str:
    return str(build_custom_kernel(tmp_path, TINY.replace("ACTION", action)))
