"""What happens when a guest stops by itself: the on_* actions and the crash-loop guard.

Shared by ``pvtui run`` and the daemon's monitors so both behave the same.
"""

from __future__ import annotations

import time
from collections import deque

from pvtui.domain.schema import DomainConfig
from pvtui.engine.abi import ShutdownReason

#: More restarts than this within RESTART_WINDOW_S means a crash loop: stop.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 10.0


def action_for(config: DomainConfig, reason: ShutdownReason) -> str:
    """The configured on_* action ("destroy", "restart" or "preserve") for a shutdown reason.

    A guest's own suspend request destroys it: pvtui saves a domain when the
    operator asks (``pvtui suspend``), which needs no cooperation from the guest.
    """
    return {
        ShutdownReason.poweroff: config.on_poweroff,
        ShutdownReason.reboot: config.on_reboot,
        ShutdownReason.crash: config.on_crash,
    }.get(reason, "destroy")


class RestartGuard:
    """Counts stops that asked for a restart; the MAX_RESTARTS-th within the window is refused,
    so a crash-looping domain boots MAX_RESTARTS times in all before it is given up."""

    def __init__(self) -> None:
        self._stops: deque[float] = deque(maxlen=MAX_RESTARTS)

    def allow(self) -> bool:
        now = time.monotonic()
        self._stops.append(now)
        return not (len(self._stops) == MAX_RESTARTS and now - self._stops[0] < RESTART_WINDOW_S)
