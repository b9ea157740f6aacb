"""Least privilege for monitors: who may talk to whom, and the uid a monitor ends up with.

A monitor is the process a guest escape would land in. When pvd runs as
root, each monitor gives up root once its domain is built (as the
Firecracker jailer does for a VM): it keeps the fds it opened (``/dev/kvm``,
the VM, its listening socket, its log) and becomes a uid and gid of its own
(:func:`monitor_id`), with no supplementary groups and ``no_new_privs``. Two
monitors never share a uid, so one cannot signal, ptrace or read the memory
of another, and none can write pvd's runtime directory. See docs/security.md.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

#: prctl(2) option: execve never grants privileges (setuid bits, file capabilities) again.
PR_SET_NO_NEW_PRIVS = 38

#: Monitors' uids and gids: this plus the monitor's pid (pids stay below 2**22),
#: so no two live monitors share one. No passwd entry is needed (ps shows the number).
MONITOR_ID_BASE = 0x7E00_0000
_PID_LIMIT = 1 << 22


#: prctl(2), looked up once (in the zygote), rather than a libc handle and a ctypes function
#: type made again at every call; typed, so its result can be checked. 0 on success.
prctl = ctypes.CDLL(None, use_errno=True).prctl
prctl.restype = ctypes.c_int
prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def no_new_privileges() -> None:
    """execve never grants this process (and threads made after this) privileges again.

    Raises OSError if the kernel refuses: a monitor must not run a guest without it.
    """
    if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(errno)}")


#: Modules a monitor may import after giving up root, loaded before: the new uid
#: may not read the interpreter's files (a Python under /root, as pyenv puts it).
PRELOAD_PACKAGES = ("pvtui.engine", "pvtui.domain")
PRELOAD_MODULES = (
    "concurrent.futures.thread",  # run_in_executor's pool
    "pvtui.daemon.monitor",
    "pvtui.daemon.protocol",
    "pvtui.daemon.serve",
    "encodings.idna",
    "json.decoder",
    "json.encoder",
    "traceback",
    "linecache",
)


def preload_modules() -> None:
    """Import everything a monitor can reach lazily, while it can still read the files."""
    import importlib
    import pkgutil

    for package_name in PRELOAD_PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            importlib.import_module(module.name)
    for name in PRELOAD_MODULES:
        importlib.import_module(name)


def monitor_id(pid: int) -> int:
    """The uid (and gid) of the monitor with this pid when pvd runs as root."""
    return MONITOR_ID_BASE + pid % _PID_LIMIT


def drop_to_own_id() -> int:
    """Become :func:`monitor_id` of this process: every thread, real, effective and saved ids.

    glibc applies set*id calls to every thread of the process, so vCPU
    threads already running drop too. Returns the new uid; raises OSError if
    the kernel refused (the caller then stops: a monitor meant to drop never
    runs a guest as root by accident). Modules it may import later were loaded
    by pvd before forking the zygote (:func:`preload_modules`).
    """
    new_id = monitor_id(os.getpid())
    os.setgroups([])
    os.setresgid(new_id, new_id, new_id)
    os.setresuid(new_id, new_id, new_id)
    if os.getresuid() != (new_id, new_id, new_id) or os.getresgid() != (new_id, new_id, new_id):
        raise OSError(f"still uid {os.getresuid()} after dropping to {new_id}")
    return new_id


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid
