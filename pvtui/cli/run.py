"""``pvtui run FILE``: one domain in the foreground, like ``xl create -c`` without a daemon.

The console goes to stdout as the guest writes it. Ctrl-C (or SIGTERM)
asks the guest to power off through the shared-info page and destroys it
if it has not finished within the timeout; a second Ctrl-C destroys it at
once. ``on_poweroff`` / ``on_reboot`` / ``on_crash`` decide what happens
when the guest stops by itself. The summary goes to stderr.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from typing import BinaryIO

from pvtui.cli.exitcodes import ExitCode
from pvtui.cli.xtf import EXIT_CODES as XTF_EXIT_CODES
from pvtui.cli.xtf import is_xtf_console, xtf_result
from pvtui.domain.loader import DomainFileError, load_domain_file
from pvtui.domain.model import DomainStats
from pvtui.domain.schema import DomainConfig
from pvtui.engine.abi import ShutdownReason
from pvtui.engine.domain import Domain
from pvtui.engine.lifecycle import MAX_RESTARTS, RESTART_WINDOW_S, RestartGuard, action_for
from pvtui.errors import PvtuiError


def _say(message: str) -> None:
    print(f"pvtui: {message}", file=sys.stderr, flush=True)


class _Interrupts:
    """Counts SIGINT/SIGTERM; the main thread polls it between waits."""

    def __init__(self) -> None:
        self.count = 0
        self.first_at = 0.0
        self.event = threading.Event()

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count == 1:
            self.first_at = time.monotonic()
        self.event.set()


def run_foreground(path: str, shutdown_timeout: float = 10.0, summary: bool = True, cmdline: str | None = None) -> int:
    """Run a domain file, or a kernel ELF directly (1 vCPU, 64 MiB, ``cmdline`` as its command line).

    An XTF kernel's run exits with xtf-runner's code for its result
    (``pvtui.cli.xtf``): 0 SUCCESS, 3 SKIP, 4 ERROR, 5 FAILURE, 6 CRASH.
    """
    try:
        config = config_for_kernel(path, cmdline) if is_elf(path) else load_domain_file(path)
    except DomainFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return ExitCode.INVALID
    if cmdline is not None and not is_elf(path):
        config = config.model_copy(update={"cmdline": cmdline})
    from pvtui.guest.build import bundled_kernel

    kernel = config.kernel or str(bundled_kernel())
    interrupts = _Interrupts()
    previous = {sig: signal.signal(sig, interrupts) for sig in (signal.SIGINT, signal.SIGTERM)}
    guard = RestartGuard()
    out = sys.stdout.buffer
    try:
        while True:
            domain = Domain(config, kernel)
            domain.console.followers.append(lambda data: _echo(out, data))
            domain.listeners.append(lambda event: interrupts.event.set() if event.kind == "shutdown" else None)
            domain.start()
            outcome = _supervise(domain, interrupts, shutdown_timeout)
            if outcome == "restart":
                if not guard.allow():
                    _say(f"{config.name} restarted {MAX_RESTARTS} times in {RESTART_WINDOW_S:.0f}s; giving up")
                    _finish(domain, summary)
                    return ExitCode.GUEST_CRASHED
                _finish(domain, summary)
                _say(f"restarting {config.name}")
                continue
            code: int = ExitCode.GUEST_CRASHED if outcome == "crashed" else ExitCode.OK
            console = domain.console.text()
            if domain.personality == "xen" and is_xtf_console(console):
                result = xtf_result(console, outcome == "crashed")
                code = XTF_EXIT_CODES[result]
                _say(f"XTF result: {result} (exit code {code})")
            _finish(domain, summary)
            return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _echo(out: BinaryIO, data: bytes) -> None:
    out.write(data)
    out.flush()


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def config_for_kernel(path: str, cmdline: str | None) -> DomainConfig:
    """A definition for a bare kernel, as ``xl create`` would make of a one-line config:
    named after the file, 1 vCPU, 64 MiB, the rest defaults."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", os.path.basename(path))[:64].lstrip("-_.") or "kernel"
    fields = {"name": name, "vcpus": 1, "memory": "64M", "kernel": os.path.abspath(path), "cmdline": cmdline}
    return DomainConfig.model_validate(fields)


def _supervise(domain: Domain, interrupts: _Interrupts, shutdown_timeout: float) -> str:
    """Wait for the domain to end; returns "done", "crashed" or "restart"."""
    config = domain.config
    asked = False
    preserved = False
    while True:
        interrupts.event.wait(0.5)
        interrupts.event.clear()
        if interrupts.count >= 2 or (asked and time.monotonic() - interrupts.first_at > shutdown_timeout):
            if not domain.finished:
                _say(f"destroying {config.name}")
            return "done"
        if interrupts.count == 1 and not asked:
            asked = True
            if preserved:
                return "crashed" if domain.shutdown_reason is ShutdownReason.crash else "done"
            if not domain.finished:
                _say(f"asking {config.name} to shut down (Ctrl-C again to destroy it now)")
                domain.request_shutdown(ShutdownReason.poweroff)
        if domain.finished and not preserved:
            reason = domain.shutdown_reason if domain.shutdown_reason is not None else ShutdownReason.crash
            crashed = reason is ShutdownReason.crash
            if crashed:
                _say(f"{config.name} crashed: {domain.crash_reason or 'the guest reported a crash'}")
            else:
                _say(f"{config.name} shut down ({reason.name})")
            if asked:
                return "crashed" if crashed else "done"
            action = action_for(config, reason)
            if action == "restart":
                return "restart"
            if action == "preserve":
                preserved = True
                _say(f"{config.name} preserved in state {domain.state.value}; Ctrl-C destroys it")
                continue
            return "crashed" if crashed else "done"


def _finish(domain: Domain, summary: bool) -> None:
    stats = domain.stats() if domain.state.value != "dead" else None
    domain.destroy()
    if summary and stats is not None:
        print(format_summary(stats), file=sys.stderr, flush=True)


def format_summary(stats: DomainStats) -> str:
    lines = [f"--- {stats.name}: {stats.state} after {stats.uptime_s:.2f}s ---", "hypercalls:"]
    width = max((len(op) for op in stats.hypercalls_per_op), default=8)
    for op, count in sorted(stats.hypercalls_per_op.items(), key=lambda item: -item[1]):
        rate = count / stats.uptime_s if stats.uptime_s else 0.0
        lines.append(f"  {op:<{width}}  {count:>10}  {rate:>10.1f}/s")
    lines.append(f"  {'total':<{width}}  {stats.hypercalls_total:>10}")
    lines.append("vCPU CPU time:")
    for vcpu in stats.vcpus:
        lines.append(f"  vcpu{vcpu.id:<3} {vcpu.cpu_time_s:>9.3f}s  ({vcpu.hypercalls} hypercalls)")
    return "\n".join(lines)


__all__ = ["PvtuiError", "format_summary", "run_foreground"]
