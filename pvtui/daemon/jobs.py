"""Monitor jobs that need a file descriptor from pvd: save to a file, send or receive a migration.

A monitor that has given up root cannot open pvd's files or connect to
another pvd, so pvd opens them and hands the descriptor over
(``SCM_RIGHTS``) on a second abstract socket of the monitor's
(:func:`jobs_address`). One job per connection: pvd sends one JSON line
with the descriptor, the monitor runs the job in a thread (the event loop
keeps serving) and answers one JSON line, ``{"ok": result}`` or
``{"error": {"code", "title", "message"}}``, when it is done. Both ends
check the other's credentials, as on the monitor's main socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from pvtui.daemon import paths
from pvtui.daemon.privileges import peer_credentials
from pvtui.errors import PvtuiError

log = logging.getLogger("monitor")

MAX_JOB_BYTES = 1 << 20
JobHandler = Callable[[dict[str, Any], int], Any]


def jobs_address(name: str) -> str:
    return paths.monitor_address(name) + "#jobs"


class JobServer:
    """The monitor's side: accepts jobs from pvd's uid and runs each in its own thread."""

    def __init__(self, name: str, owner_uid: int, handlers: dict[str, JobHandler]) -> None:
        self.owner_uid = owner_uid
        self.handlers = handlers
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.bind(jobs_address(name))
        self.sock.listen(4)
        threading.Thread(target=self._accept, name="jobs", daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), name="job", daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        fds: list[int] = []
        with conn:
            try:
                _, uid, _ = peer_credentials(conn)
                if uid != self.owner_uid:
                    return
                message, fds, _, _ = socket.recv_fds(conn, MAX_JOB_BYTES, 1)
                job = json.loads(message)
                handler = self.handlers.get(job.get("job"))
                if handler is None or len(fds) != 1:
                    raise PvtuiError("Bad monitor job", f"Unknown job {job.get('job')!r} or no descriptor.")
                reply: dict[str, Any] = {"ok": handler(job, fds[0])}
            except PvtuiError as exc:
                code = getattr(exc, "code", "refused")
                reply = {"error": {"code": code, "title": exc.title, "message": exc.message}}
            except Exception as exc:
                log.exception("job failed")
                reply = {"error": {"code": "internal", "title": "Monitor job failed", "message": repr(exc)}}
            finally:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")


def _run_job(name: str, pid: int | None, job: dict[str, Any], fd: int) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(jobs_address(name))
        peer, _, _ = peer_credentials(sock)
        if pid is not None and peer != pid:
            raise PvtuiError(f"{name}'s job socket is held by pid {peer}", "Not its monitor; see pvtui list.")
        socket.send_fds(sock, [json.dumps(job).encode()], [fd])
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise PvtuiError(f"{name}'s monitor died during the job", "See pvtui list and its log.")
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


async def run_job(name: str, pid: int | None, job: dict[str, Any], fd: int) -> Any:
    """pvd's side: hand ``fd`` to the monitor with ``job`` and wait for its answer (``fd`` is closed here)."""
    try:
        reply = await asyncio.get_running_loop().run_in_executor(None, _run_job, name, pid, job, fd)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    if "error" in reply:
        error = reply["error"]
        exc = PvtuiError(error.get("title", "Monitor job failed"), error.get("message", ""))
        exc.code = error.get("code", "refused")  # type: ignore[attr-defined]
        raise exc
    return reply["ok"]
