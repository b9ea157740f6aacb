"""Starting pvd: runtime directory, the zygote, the single-instance lock, the event loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.handlers
import os
import sys
from pathlib import Path

from pvtui.daemon import admission, paths
from pvtui.daemon.instance import AlreadyRunning, take_lock
from pvtui.errors import PvtuiError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvd", description="The pvtui engine daemon.")
    parser.add_argument("--domains", type=Path, help="directory of domain definitions (autostart)")
    parser.add_argument(
        "--overcommit",
        metavar="RATIO",
        help=f"let domains commit RATIO x the memory the host can back (default 1.0, or ${admission.OVERCOMMIT_ENV})",
    )
    args = parser.parse_args(argv)
    try:
        overcommit = admission.parse_overcommit(args.overcommit or os.environ.get(admission.OVERCOMMIT_ENV))
        paths.ensure_private_dir(paths.runtime_dir())
        paths.ensure_private_dir(paths.domains_dir())
    except PvtuiError as exc:
        print(f"pvd: {exc.title}: {exc.message}", file=sys.stderr)
        return 1
    # Import the engine before forking the zygote so monitors start with it loaded
    # (shared, not copied, and readable after a monitor gives up root).
    import pvtui.daemon.monitor
    import pvtui.engine.domain  # noqa: F401
    from pvtui.daemon.privileges import preload_modules
    from pvtui.daemon.zygote import start_zygote

    preload_modules()

    zygote = start_zygote()
    # The locks are taken after the fork, so neither the zygote nor the monitors hold them.
    # The instance lock outlives the runtime directory; the one inside it tells clients our pid.
    try:
        locks = [take_lock(paths.instance_lock_path()), take_lock(paths.lock_path())]
    except AlreadyRunning as running:
        print(f"pvd: already running (pid {running.holder}); stop it with: pvtui engine stop", file=sys.stderr)
        return 1
    handler = logging.handlers.RotatingFileHandler(
        paths.log_path(), maxBytes=paths.LOG_MAX_BYTES, backupCount=paths.LOG_KEEP
    )
    logging.basicConfig(handlers=[handler], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _last_for_the_oom_killer()
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.setproctitle("pvd")
    from pvtui.daemon.server import Pvd

    domains = args.domains.resolve() if args.domains else None
    try:
        asyncio.run(Pvd(zygote, domains, overcommit, locks).run())
    finally:
        zygote.sock.close()
    return 0


#: pvd's OOM score adjustment: the kernel kills every other process first (-1000 would exempt it).
PVD_OOM_SCORE_ADJ = -999


def _last_for_the_oom_killer() -> None:
    """Make pvd the last process the kernel's OOM killer picks.

    After the zygote fork, so monitors (whose guests hold the memory) keep the
    default score and are picked before pvd, which must live to apply their
    ``on_crash``. Lowering the score needs root (CAP_SYS_RESOURCE): without it
    pvd keeps its score and says so in its log.
    """
    try:
        Path("/proc/self/oom_score_adj").write_text(str(PVD_OOM_SCORE_ADJ))
    except OSError as exc:
        logging.getLogger("pvtui.pvd").warning("cannot lower pvd's OOM score (%s); run pvd as root for that", exc)
