"""A monitor's snapshot and migration work: save, restore, send and receive its domain.

These run in job threads (:mod:`pvtui.daemon.jobs`) beside the monitor's
event loop; what they report reaches pvd as ``migration`` events pushed
through the loop. While one runs, requests that would change the domain
under it (pause, vCPUs, memory) are refused with the reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from pvtui.daemon.privileges import prctl
from pvtui.engine.domain import Domain
from pvtui.engine.snapshot.fileformat import SnapshotReader
from pvtui.engine.snapshot.image import restore_domain, save_domain
from pvtui.engine.snapshot.migration import Receiver, Sender
from pvtui.errors import PvtuiError

if TYPE_CHECKING:
    from pvtui.daemon.jobs import JobHandler
    from pvtui.daemon.monitor import Monitor


class MigrationJobs:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        #: Waiting for (or receiving) a migration stream; the domain is built but not running.
        self.incoming = monitor.spec.incoming
        #: The last progress report of a running save or migration (None when none runs).
        self.progress: dict[str, Any] | None = None
        self._busy: str | None = None
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._stream: socket.socket | None = None
        self._receiving = False

    def handlers(self) -> dict[str, JobHandler]:
        return {"save": self.save, "migrate_send": self.send, "migrate_receive": self.receive}

    # --- guards -------------------------------------------------------------------------
    def refuse_if_busy(self, what: str) -> None:
        if self._busy is not None:
            raise PvtuiError(
                f"Cannot {what} {self.monitor.name} now",
                f"It is being {self._busy}; wait for that to finish (or cancel it with pvtui migrate --cancel).",
            )
        if self.incoming:
            raise PvtuiError(
                f"Cannot {what} {self.monitor.name} now", "It is arriving by migration; wait for it to run."
            )

    def _begin(self, verb: str, being: str) -> None:
        """Start a job (``verb``, as a refusal says it), marking the domain as being ``being``."""
        with self._lock:
            self.refuse_if_busy(verb)
            self._busy = being
            self._cancel.clear()

    def _end(self) -> None:
        with self._lock:
            self._busy = None
            self.progress = None

    def cancel(self) -> bool:
        """Ask a running migration to stop (the domain stays here); False when none runs."""
        if self._busy != "migrated":
            return False
        self._cancel.set()
        return True

    def watch_incoming(self) -> None:
        """An arriving domain is abandoned if its pvd dies or its stream never comes.

        The zygote (this monitor's parent) exits when pvd does: a parent-death
        signal (SIGTERM, which finishes the monitor) covers a pvd killed before
        it ever connected here; :data:`INCOMING_WAIT_S` covers a stream that
        never arrives. Both end once the domain runs (:meth:`receive`).
        """
        parent = os.getppid()
        _set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent or parent == 1:  # the zygote went before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)
        monitor = self.monitor

        def give_up() -> None:
            if self.incoming and self._stream is None and not self._receiving:
                monitor._finish({"reason": "migration_never_came", "action": "destroy", "crash_reason": None})

        monitor.loop.call_later(INCOMING_WAIT_S, give_up)

    def pvd_lost(self) -> None:
        """pvd's connection is gone: an incoming migration it was asked for is abandoned."""
        if not self.incoming:
            return
        stream = self._stream
        if stream is not None:  # the receiver fails and discards the domain
            with contextlib.suppress(OSError):
                stream.shutdown(socket.SHUT_RDWR)
        else:  # the stream never came: nothing will fill this domain
            self.monitor._finish({"reason": "migration_aborted", "action": "destroy", "crash_reason": None})

    def _report(self, data: dict[str, Any]) -> None:
        self.progress = data
        monitor = self.monitor
        monitor.loop.call_soon_threadsafe(monitor._push, "migration", data)

    @property
    def _domain(self) -> Domain:
        domain = self.monitor.domain
        if domain is None:
            raise PvtuiError(f"{self.monitor.name} has no domain", "It is not built yet.")
        return domain

    # --- jobs -----------------------------------------------------------------------------
    def restore(self, path: str) -> Domain:
        """Build the domain from a snapshot file (in the monitor, before it serves)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            reader = SnapshotReader(fd, path)
            monitor = self.monitor
            return restore_domain(reader, monitor.config, monitor._kvm, monitor.spec.domid, monitor.spec.paused)
        finally:
            os.close(fd)

    def save(self, job: dict[str, Any], fd: int) -> Any:
        """Pause, write the snapshot to ``fd`` and sync it; ``keep`` runs the domain on afterwards.

        Without ``keep`` the domain stays paused: pvd destroys it once the file
        is in place, or unpauses it if that fails.
        """
        domain = self._domain
        keep = bool(job.get("keep"))
        self._begin("save", "saved")
        was_paused = domain._paused
        try:
            if not was_paused:
                domain.pause()
            try:
                started = time.perf_counter()
                figures = save_domain(domain, fd, self.monitor.spec.definition, was_paused)
                os.fsync(fd)
                synced = time.perf_counter() - started  # the file is on disk: that is the save's time
            except OSError as exc:
                raise PvtuiError(
                    f"Cannot write {domain.name}'s snapshot", f"{exc.strerror or exc}; it keeps running."
                ) from None
            return {**figures.to_dict(), "seconds": synced, "was_paused": was_paused}
        except BaseException:
            if not was_paused and domain._paused:
                domain.unpause()
            raise
        finally:
            if keep and not was_paused and domain._paused:
                domain.unpause()
            self._end()

    def send(self, job: dict[str, Any], fd: int) -> Any:
        """Migrate the domain over the stream ``fd`` (already connected to the target's monitor)."""
        domain = self._domain
        self._begin("migrate", "migrated")
        sock = _blocking_socket(fd)
        try:
            sender = Sender(
                domain,
                sock,
                progress=self._report,
                cancelled=self._cancel.is_set,
                downtime_ms=float(job.get("downtime_ms", 20.0)),
            )
            return sender.run().to_dict()
        finally:
            sock.close()
            self._end()

    def receive(self, job: dict[str, Any], fd: int) -> Any:
        """Fill the built domain from the stream ``fd`` and run it when the source says so."""
        domain = self._domain
        sock = _blocking_socket(fd)
        self._stream = sock
        self._receiving = True
        try:
            started = Receiver(domain, sock).run(self.monitor.spec.paused)
        except (OSError, ConnectionError, ValueError, PvtuiError) as exc:
            monitor = self.monitor
            detail = {"reason": "migration_aborted", "action": "destroy", "crash_reason": None}
            monitor.loop.call_soon_threadsafe(monitor._finish, detail)
            if isinstance(exc, PvtuiError):
                raise
            raise PvtuiError("Incoming migration failed", f"{exc}; the arriving domain was discarded.") from None
        finally:
            self._stream = None
            sock.close()
        self.incoming = False
        _set_parent_death_signal(0)  # it runs now: like any domain, it outlives pvd and the zygote
        monitor = self.monitor
        monitor.loop.call_soon_threadsafe(monitor._push, "state", {"state": domain.state.value, "detail": "arrived"})
        return {"vcpus": sorted(started)}


#: How long an incoming monitor waits for its migration stream before it gives up.
INCOMING_WAIT_S = 60.0
PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(signum: int) -> None:
    prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


def _blocking_socket(fd: int) -> socket.socket:
    """A socket of our own over pvd's descriptor; asyncio made it non-blocking (a flag the dup shares)."""
    sock = socket.socket(fileno=os.dup(fd))
    sock.setblocking(True)
    return sock
