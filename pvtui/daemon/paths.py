"""Where pvd keeps its socket, lock and per-domain monitor files.

``$PVTUI_RUNTIME_DIR`` overrides everything (tests use it); otherwise
``$XDG_RUNTIME_DIR/pvtui`` for users and ``/run/pvtui`` for root. The
directory is 0700 and owned by the user: the socket inside is 0600.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from pvtui.errors import PvtuiError


def runtime_dir() -> Path:
    override = os.environ.get("PVTUI_RUNTIME_DIR")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return Path("/run/pvtui")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "pvtui"
    return Path(f"/tmp/pvtui-{os.geteuid()}")


def socket_path() -> Path:
    return runtime_dir() / "pvd.sock"


def lock_path() -> Path:
    return runtime_dir() / "pvd.lock"


def instance_lock_path() -> Path:
    """The lock that makes pvd one per runtime directory, kept *outside* it.

    A runtime directory can vanish under a running pvd (``$XDG_RUNTIME_DIR``
    goes at logout); a lock inside it would vanish too and let a second pvd
    start beside the first, both claiming the same domains. This one is keyed
    by the runtime-directory path, in a directory only this user can write
    (``/run/pvtui-locks`` for root, ``$XDG_STATE_HOME/pvtui/locks`` for a
    user): not in the world-writable ``/run/lock``, where another user could
    take the lock first and keep pvd from starting.
    """
    key = hashlib.sha1(os.path.abspath(runtime_dir()).encode()).hexdigest()[:16]
    if os.geteuid() == 0:
        folder = Path("/run/pvtui-locks")
    else:
        folder = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "pvtui" / "locks"
    ensure_private_dir(folder)
    return folder / f"pvd-{key}.lock"


#: pvd's log and each monitor's log rotate at this size, keeping LOG_KEEP old files (.1, .2, ...).
LOG_MAX_BYTES = 8 * 1024 * 1024
LOG_KEEP = 2


def rotate_if_large(path: Path, max_bytes: int = LOG_MAX_BYTES, keep: int = LOG_KEEP) -> None:
    """Shift ``path`` to ``path.1`` (and older ones on) when it has reached ``max_bytes``.

    For logs written through a plain file descriptor (a monitor's stdout and
    stderr), checked when the file is opened: a restarted domain never
    appends to an unbounded file.
    """
    try:
        if path.stat().st_size < max_bytes:
            return
    except FileNotFoundError:
        return
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))


def log_path() -> Path:
    return runtime_dir() / "pvd.log"


def domains_dir() -> Path:
    return runtime_dir() / "domains"


def monitor_address(name: str) -> str:
    """A monitor's socket: a name in the abstract unix namespace, keyed by runtime directory.

    Not a file: a monitor that has given up root (docs/security.md) could not
    create one in pvd's private directory again, and a vanished runtime
    directory takes no abstract name with it. Files' permissions do not guard
    it, so both ends check the other's credentials (SO_PEERCRED): the monitor
    serves only pvd's uid, pvd talks only to the pid it expects.
    """
    key = hashlib.sha1(os.path.abspath(runtime_dir()).encode()).hexdigest()[:16]
    return f"\0pvtui-{key}/{name}"


def monitor_state(name: str) -> Path:
    return domains_dir() / f"{name}.json"


def monitor_log(name: str) -> Path:
    return domains_dir() / f"{name}.log"


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` 0700, or refuse one that others could reach into."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise PvtuiError(
            f"{path} belongs to another user",
            "pvd keeps its socket there. Remove it or set PVTUI_RUNTIME_DIR to a directory you own.",
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def write_atomic(path: Path, data: str, durable: bool = True) -> None:
    """Write a file so readers see the old or the new contents, never a torn one.

    ``durable=False`` skips the fsync: right for runtime state, which does not
    outlive a reboot anyway.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temp, "w", encoding="utf-8") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.chmod(temp, 0o600)
    os.replace(temp, path)
