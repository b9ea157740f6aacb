"""Starting pvd: runtime directory, the zygote, the single-instance lock, the event loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import sys
from pathlib import Path

from pvtui.daemon import paths
from pvtui.errors import PvtuiError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvd", description="The pvtui engine daemon.")
    parser.add_argument("--domains", type=Path, help="directory of domain definitions (autostart)")
    args = parser.parse_args(argv)
    try:
        paths.ensure_private_dir(paths.runtime_dir())
        paths.ensure_private_dir(paths.domains_dir())
    except PvtuiError as exc:
        print(f"pvd: {exc.title}: {exc.message}", file=sys.stderr)
        return 1
    # Import the engine before forking the zygote so monitors start with it loaded.
    import pvtui.daemon.monitor
    import pvtui.engine.domain  # noqa: F401
    from pvtui.daemon.zygote import start_zygote

    zygote = start_zygote()
    # The lock is taken after the fork, so neither the zygote nor the monitors hold it.
    lock = open(paths.lock_path(), "a+")  # noqa: SIM115 - held for pvd's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        print(f"pvd: already running (pid {holder}); stop it with: pvtui engine stop", file=sys.stderr)
        return 1
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    logging.basicConfig(
        filename=paths.log_path(), level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.setproctitle("pvd")
    from pvtui.daemon.server import Pvd

    domains = args.domains.resolve() if args.domains else None
    try:
        asyncio.run(Pvd(zygote, domains).run())
    finally:
        zygote.sock.close()
    return 0
