"""The zygote: a clean, single-threaded process that forks domain monitors.

pvd forks it at startup, before it opens any socket or starts its event
loop, with the engine already imported and ``gc.freeze()``-d. Forking a
monitor from it costs about a millisecond and no interpreter start, and the
monitor inherits nothing of pvd's (no listening socket, no event loop, no
lock). Each monitor reports through a pipe when it is serving, or why its
domain could not be built.

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
from dataclasses import dataclass
from typing import Any

from pvtui.daemon import paths
from pvtui.daemon.monitor import MonitorSpec, run_monitor
from pvtui.daemon.privileges import no_new_privileges

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


def _zygote_main(sock: socket.socket) -> int:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.setproctitle("pvtui-zygote")
    gc.freeze()  # keep the collector from touching (and so copying) inherited objects
    stream = sock.makefile("rwb")
    for line in stream:
        spec = MonitorSpec.from_dict(json.loads(line))
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            stream.close()
            sock.close()
            os.close(read_fd)
            os._exit(_monitor_child(spec, write_fd))
        os.close(write_fd)
        status = _wait_ready(read_fd)
        stream.write(json.dumps({"pid": pid, **status}).encode() + b"\n")
        stream.flush()
    return 0


def _wait_ready(read_fd: int) -> dict[str, Any]:
    data = b""
    try:
        while True:
            readable, _, _ = select.select([read_fd], [], [], READY_TIMEOUT_S)
            if not readable:
                return {"ok": False, "title": "Monitor did not start", "message": "No answer within 30 s; see its log."}
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_fd)
    if not data:
        return {"ok": False, "title": "Monitor died while starting", "message": "See the domain's monitor log."}
    return json.loads(data)


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
