"""Reaching a remote pvd through the user's own OpenSSH: one master connection per host, reused.

For ``ssh://host`` the first request starts an OpenSSH master connection
(``ControlMaster``, kept for :data:`PERSIST_S` after the last use) that
forwards a local unix socket to the remote pvd's socket (``-L``); every
later request, from this process or another, connects to the local socket
(~0.3 ms a round trip) without starting ssh again. A forwarding that
stopped answering (the master died, the network went) is started again
once; a host that still cannot be reached is an error naming the host, what
ssh said and what to try, and no pvd is started anywhere else.

The user's ``~/.ssh/config``, keys and ``known_hosts`` apply;
``$PVTUI_SSH_CONFIG`` names another config file (``ssh -F``), as the tests do.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import subprocess
from pathlib import Path

from pvtui.client.hosts import HostUri
from pvtui.errors import PvtuiError

PERSIST_S = 600
CONNECT_TIMEOUT_S = 10


class HostUnreachable(PvtuiError):
    code = "unreachable"


def _state_dir() -> Path:
    """Short paths (a unix socket's path is limited to 107 bytes), private to the user."""
    folder = Path(f"/tmp/pvtui-ssh-{os.geteuid()}")
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.geteuid() or folder.stat().st_mode & 0o077:
        raise PvtuiError(f"{folder} is not private", "Remove it (it must be yours alone) and retry.")
    return folder


def _key(uri: HostUri) -> str:
    return hashlib.sha1(str(uri).encode()).hexdigest()[:12]


def control_path(uri: HostUri) -> Path:
    return _state_dir() / f"{_key(uri)}.ctl"


def local_socket(uri: HostUri) -> Path:
    return _state_dir() / f"{_key(uri)}.sock"


def ssh_base(uri: HostUri) -> list[str]:
    command = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
    config = os.environ.get("PVTUI_SSH_CONFIG")
    if config:
        command += ["-F", config]
    if uri.port:
        command += ["-p", str(uri.port)]
    return command


def _unreachable(uri: HostUri, what: str) -> HostUnreachable:
    return HostUnreachable(
        f"Cannot reach host {uri}",
        f"{what}. Check that `ssh {uri.ssh_destination}` works from this shell (keys, known_hosts, "
        "the network) and that pvd runs there (pvtui -H URI engine start). No pvd was started anywhere.",
    )


def run_remote(uri: HostUri, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command on the host through the master connection (started if needed)."""
    command = [*ssh_base(uri), "-o", f"ControlPath={control_path(uri)}", "-o", "ControlMaster=auto"]
    command += ["-o", f"ControlPersist={PERSIST_S}", uri.ssh_destination, shlex.join(argv)]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise _unreachable(uri, f"ssh did not finish within {timeout:g} s") from None


def remote_socket(uri: HostUri) -> str:
    """The remote pvd's socket: the URI's path, else where pvd puts it for the remote user."""
    if uri.path:
        return uri.path
    script = 'if [ "$(id -u)" = 0 ]; then echo /run/pvtui; else echo "${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/pvtui"; fi'
    result = run_remote(uri, ["sh", "-c", script])
    if result.returncode != 0:
        raise _unreachable(uri, f"ssh said: {_last_line(result.stderr)}")
    return result.stdout.strip() + "/pvd.sock"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "nothing (exit status only)"


def ensure_tunnel(uri: HostUri) -> Path:
    """The local socket forwarded to the host's pvd, starting the master connection if needed."""
    local = local_socket(uri)
    control = control_path(uri)
    if local.exists() and _master_alive(uri):
        return local
    with contextlib.suppress(FileNotFoundError):
        local.unlink()
    target = remote_socket(uri)
    command = [*ssh_base(uri), "-o", f"ControlPath={control}", "-o", "ControlMaster=auto"]
    command += ["-o", f"ControlPersist={PERSIST_S}", "-o", "ExitOnForwardFailure=yes"]
    command += ["-o", "StreamLocalBindUnlink=yes", "-O", "forward", "-L", f"{local}:{target}", uri.ssh_destination]
    if not _master_alive(uri):
        with contextlib.suppress(FileNotFoundError):  # a dead master's socket: ssh would not replace it
            control.unlink()
        start = [*ssh_base(uri), "-o", f"ControlPath={control}", "-o", "ControlMaster=yes"]
        start += ["-o", f"ControlPersist={PERSIST_S}", "-f", "-N", uri.ssh_destination]
        try:
            result = subprocess.run(start, capture_output=True, text=True, timeout=CONNECT_TIMEOUT_S * 3)
        except subprocess.TimeoutExpired:
            raise _unreachable(uri, "ssh did not connect in time") from None
        if result.returncode != 0:
            raise _unreachable(uri, f"ssh said: {_last_line(result.stderr)}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=CONNECT_TIMEOUT_S * 3)
    if result.returncode != 0:
        raise _unreachable(uri, f"ssh could not forward to {target}: {_last_line(result.stderr)}")
    return local


def _master_alive(uri: HostUri) -> bool:
    if not control_path(uri).exists():
        return False
    check = [*ssh_base(uri), "-o", f"ControlPath={control_path(uri)}", "-O", "check", uri.ssh_destination]
    return subprocess.run(check, capture_output=True, timeout=CONNECT_TIMEOUT_S).returncode == 0


def close_tunnel(uri: HostUri) -> None:
    """Stop the host's master connection (and so its forwarding)."""
    if control_path(uri).exists():
        stop = [*ssh_base(uri), "-o", f"ControlPath={control_path(uri)}", "-O", "exit", uri.ssh_destination]
        subprocess.run(stop, capture_output=True, timeout=CONNECT_TIMEOUT_S)
    with contextlib.suppress(FileNotFoundError):
        local_socket(uri).unlink()
