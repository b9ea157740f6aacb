"""A client of the pvd on any host: local, another socket on this machine, or over SSH.

Only ``local`` may start a pvd by itself (and only for the verbs that do);
a remote or ``unix://`` host that does not answer is an error that says
which host and what to try: a verb meant for another host never falls back
to this machine's pvd.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pvtui.client.client import Client, EngineError
from pvtui.client.hosts import HostUri
from pvtui.client.ssh import close_tunnel, ensure_tunnel

#: Pauses before each new attempt at a host's SSH forwarding that stopped answering.
RECONNECT_BACKOFF_S = (0.0, 0.5, 1.5)


def _not_running(uri: HostUri, where: str) -> EngineError:
    return EngineError(
        f"pvd is not running on {uri}",
        f"Nothing answers at {where}. Start it there: pvtui -H {uri} engine start.",
        "down",
    )


async def _open(uri: HostUri, path: Path) -> Client:
    try:
        return await Client._open(path)
    except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        raise _not_running(uri, str(path)) from None
    except EngineError as exc:
        if exc.code == "down":  # the tunnel took the connection, the far end did not
            raise _not_running(uri, f"the pvd socket of {uri.host or uri.path}") from None
        raise


async def connect_host(uri: HostUri, start: bool = False, domains_dir: Path | None = None) -> Client:
    """Connect to the pvd ``uri`` names; ``start`` applies to ``local`` only."""
    if uri.is_local:
        return await Client.connect(start=start, domains_dir=domains_dir)
    if uri.scheme == "unix":
        return await _open(uri, Path(uri.path))
    local = await asyncio.to_thread(ensure_tunnel, uri)
    try:
        return await _open(uri, local)
    except EngineError as exc:
        if exc.code != "down":
            raise
    # The forwarding may be stale (its master died, the network blinked): start it again,
    # with backoff, before saying the host's pvd does not answer.
    for delay in RECONNECT_BACKOFF_S:
        await asyncio.sleep(delay)
        await asyncio.to_thread(close_tunnel, uri)
        local = await asyncio.to_thread(ensure_tunnel, uri)
        try:
            return await _open(uri, local)
        except EngineError as exc:
            if exc.code != "down" or delay == RECONNECT_BACKOFF_S[-1]:
                raise
    raise AssertionError("unreachable")  # the loop returns or raises


def start_engine_on(uri: HostUri) -> str:
    """Start pvd on a host that is not ``local`` (the operator asked: ``pvtui -H URI engine start``).

    ``unix://DIR/pvd.sock`` starts a pvd here with DIR as its runtime
    directory; ``ssh://`` runs ``python3 -m pvtui engine start`` there
    (``$PVTUI_REMOTE_PYTHON`` names another interpreter). Returns what it said.
    """
    import os
    import subprocess
    import sys

    from pvtui.client.ssh import run_remote

    if uri.scheme == "unix":
        path = Path(uri.path)
        if path.name != "pvd.sock":
            raise EngineError(
                f"Cannot start a pvd at {uri}",
                "pvtui starts a pvd only where it would put its socket: unix://DIR/pvd.sock (DIR its runtime directory).",
            )
        env = {**os.environ, "PVTUI_RUNTIME_DIR": str(path.parent)}
        result = subprocess.run(
            [sys.executable, "-m", "pvtui", "engine", "start"], capture_output=True, text=True, env=env, timeout=60
        )
    else:
        python = os.environ.get("PVTUI_REMOTE_PYTHON", "python3")
        command = [python, "-m", "pvtui", "engine", "start"]
        if uri.path:  # the URI says where its socket is: start it there
            if not uri.path.endswith("/pvd.sock"):
                raise EngineError(
                    f"Cannot start a pvd at {uri}",
                    "pvtui starts a pvd only where it would put its socket: ssh://host/DIR/pvd.sock.",
                )
            command = ["env", f"PVTUI_RUNTIME_DIR={uri.path[: -len('/pvd.sock')]}", *command]
        result = run_remote(uri, command)
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        raise EngineError(f"pvd did not start on {uri}", said)
    return result.stdout.strip()
