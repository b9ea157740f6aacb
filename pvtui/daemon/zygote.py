"""The zygote: a clean, single-threaded process that forks domain monitors.

pvd forks it at startup, before it opens any socket or starts its event
loop, with the engine already imported and ``gc.freeze()``-d. Forking a
monitor from it costs about a millisecond and no interpreter start, and the
monitor inherits nothing of pvd's (no listening socket, no event loop, no
lock). Each monitor reports through a pipe when it is serving, or why its
domain could not be built; several monitors may be starting at once, each
answer tagged with its request's tag.

Monitors start their own session, so they outlive pvd and the zygote; the
zygote ignores SIGCHLD so the kernel reaps monitors that exit.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from pvtui.daemon import paths
from pvtui.daemon.monitor import MonitorSpec, run_monitor
from pvtui.daemon.privileges import no_new_privileges
from pvtui.daemon.rehearsal import rehearse

READY_TIMEOUT_S = 30.0


@dataclass
class Zygote:
    pid: int
    sock: socket.socket


def start_zygote() -> Zygote:
    """Fork the zygote; call before any thread, socket or event loop exists in pvd."""
    pvd_end, zygote_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        pvd_end.close()
        code = 1
        try:
            code = _zygote_main(zygote_end)
        finally:
            os._exit(code)
    zygote_end.close()
    return Zygote(pid, pvd_end)


@dataclass
class _Starting:
    """A monitor forked but not yet reporting (its readiness pipe still open)."""

    tag: int
    pid: int
    #: Signals the monitor itself, never a later process given its pid (the kernel reaps monitors).
    pidfd: int
    deadline: float
    data: bytearray = field(default_factory=bytearray)


def _zygote_main(sock: socket.socket) -> int:
    """Fork a monitor per request and answer each as its monitor reports, several starting at once.

    Requests are lines of pvd's ``tag`` (a number), a space and the spec as JSON; an answer carries the
    tag back, so answers may come in any order: a monitor's start (building
    its domain, ~20 ms) no longer holds up the next fork.
    """
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.setproctitle("pvtui-zygote")
    rehearse()  # warm, before the first fork: what it leaves is shared by every monitor
    gc.freeze()  # keep the collector from touching (and so copying) inherited objects
    buffer = b""
    starting: dict[int, _Starting] = {}
    while True:
        timeout = None
        if starting:
            timeout = max(0.0, min(s.deadline for s in starting.values()) - time.monotonic())
        readable, _, _ = select.select([sock.fileno(), *starting], [], [], timeout)
        if sock.fileno() in readable:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return 0  # pvd is gone
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                tag, _, spec = line.partition(b" ")  # the spec is read in the child (see _fork_monitor)
                read_fd, pid = _fork_monitor(spec, sock, starting)
                try:
                    pidfd = os.pidfd_open(pid)
                except ProcessLookupError:  # died at once (and the kernel reaped it): nothing to signal
                    pidfd = -1
                starting[read_fd] = _Starting(int(tag), pid, pidfd, time.monotonic() + READY_TIMEOUT_S)
        for fd in [fd for fd in readable if fd != sock.fileno()]:
            chunk = os.read(fd, 4096)
            if chunk:
                starting[fd].data += chunk
                continue
            _answer(sock, starting.pop(fd), fd)
        now = time.monotonic()
        for fd in [fd for fd, s in starting.items() if s.deadline <= now]:
            _answer(sock, starting.pop(fd), fd, _NO_ANSWER)


_NO_ANSWER = {"ok": False, "title": "Monitor did not start", "message": "No answer within 30 s; see its log."}
_GARBLED = {"ok": False, "title": "Monitor did not start", "message": "It sent a garbled report; see its log."}
_DIED_STARTING = {"ok": False, "title": "Monitor died while starting", "message": "See the domain's monitor log."}


def _fork_monitor(spec: bytes, sock: socket.socket, starting: dict[int, _Starting]) -> tuple[int, int]:
    """Fork a monitor for ``spec`` (a MonitorSpec as JSON), which the child reads, not the zygote.

    Every page the zygote writes after a fork is a page it shares with the
    new monitor, so the write copies it: the less the zygote does per
    request, the fewer pages each create copies (decoding the spec here made
    it ~200 page copies per fork instead of ~170). A spec the child cannot
    read is that child's failure, reported like any other.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        sock.close()
        theirs = [*starting, *(s.pidfd for s in starting.values() if s.pidfd >= 0)]  # other monitors' fds
        for fd in [read_fd, *theirs]:
            os.close(fd)
        try:
            monitor_spec = MonitorSpec.from_dict(json.loads(spec))
        except (ValueError, TypeError, KeyError) as exc:
            message = f"pvd sent a domain spec its zygote cannot read ({exc!r}): a pvtui bug; please report it."
            os.write(write_fd, json.dumps({"ok": False, "title": "Bad monitor spec", "message": message}).encode())
            os._exit(1)
        os._exit(_monitor_child(monitor_spec, write_fd))
    os.close(write_fd)
    return read_fd, pid


def _answer(sock: socket.socket, started: _Starting, fd: int, status: dict[str, Any] | None = None) -> None:
    """Tell pvd how ``started`` went: ``status``, else what its monitor wrote to its readiness pipe."""
    os.close(fd)
    if status is None:
        status = _read_status(bytes(started.data))
    if started.pidfd >= 0:
        if status is _GARBLED or status is _NO_ANSWER:  # pvd hears it did not start: so it must not run on
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(started.pidfd, signal.SIGKILL)
        os.close(started.pidfd)
    sock.sendall(json.dumps({"tag": started.tag, "pid": started.pid, **status}).encode() + b"\n")


def _read_status(data: bytes) -> dict[str, Any]:
    """What a monitor wrote to its readiness pipe; anything but a JSON object is a monitor that failed.

    The zygote answers every later create too: a monitor's garbage must not stop it.
    """
    if not data:
        return _DIED_STARTING
    try:
        status = json.loads(data)
    except ValueError:
        status = None
    if not isinstance(status, dict) or not isinstance(status.get("ok"), bool):
        return _GARBLED
    return status


def _monitor_child(spec: MonitorSpec, ready_fd: int) -> int:
    os.setsid()
    # Before any vCPU thread exists, so every thread has it (it is per thread, inherited).
    no_new_privileges()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.setproctitle(f"pvtui-monitor -name {spec.name} -domid {spec.domid}")
    paths.rotate_if_large(paths.monitor_log(spec.name))
    log_fd = os.open(paths.monitor_log(spec.name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(null_fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)

    def ready(status: dict[str, Any]) -> None:
        nonlocal ready_fd
        if ready_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(ready_fd, json.dumps(status).encode())
            os.close(ready_fd)
            ready_fd = -1

    try:
        return run_monitor(spec, ready)
    finally:
        ready({"ok": False, "title": f"Monitor for {spec.name} exited", "message": "See its log."})
