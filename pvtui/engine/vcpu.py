"""One vCPU: a KVM vCPU fd run by its own host thread, as a small state machine.

States: ``created`` (no thread yet), ``running`` (in or around KVM_RUN),
``blocked`` (in sched_op block), ``paused`` (parked by the engine),
``offline`` (taken down through vcpu_op), ``stopped`` (thread finished).
The engine talks to the thread only through flags under ``cond`` plus a
kick (``immediate_exit`` + a signal) that pulls it out of ``KVM_RUN``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from typing import TYPE_CHECKING

from pvtui.engine import abi
from pvtui.engine.exits import GuestFault, HypercallExit, MalformedHypercall, decode_exit
from pvtui.engine.kvm import Vcpu
from pvtui.engine.kvm import ioctl as k
from pvtui.engine.kvm.structs import KvmRegs
from pvtui.errors import PvtuiError

if TYPE_CHECKING:
    from pvtui.engine.domain import Domain

KICK_SIGNAL = signal.SIGUSR1
_U64 = (1 << 64) - 1


def ensure_kick_handler() -> None:
    """Install the no-op handler that lets a signal interrupt KVM_RUN.

    A signal left at SIG_IGN never interrupts KVM_RUN and an unhandled one
    kills the process, so the engine needs a real (empty) handler. Python
    only installs handlers from the main thread.
    """
    if signal.getsignal(KICK_SIGNAL) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        return
    try:
        signal.signal(KICK_SIGNAL, lambda signum, frame: None)
    except ValueError:
        raise PvtuiError(
            "Engine started off the main thread",
            "Create the first domain from the process's main thread (it installs the SIGUSR1 "
            "handler that stops vCPUs), or call pvtui.engine.vcpu.ensure_kick_handler() there first.",
        ) from None


class VcpuRunner:
    """Runs one vCPU in a host thread and answers the engine's requests."""

    def __init__(self, domain: Domain, vcpu: Vcpu) -> None:
        self.domain = domain
        self.vcpu = vcpu
        self.id = vcpu.id
        self.counter = domain.accounting.counter_for(vcpu.id)
        self.cond = threading.Condition()
        self.state = "created"
        self.thread: threading.Thread | None = None
        self.native_id: int | None = None
        self.timer_deadline_ns = 0
        self.affinity: set[int] | None = None
        self._pause = False
        self._offline = False
        self._stop = False
        self._time_refreshed_ns = 0
        #: The thread's own CPU seconds when it ended (psutil only sees live threads).
        self.final_cpu_time_s: float | None = None

    # --- engine side --------------------------------------------------------
    def start(self) -> None:
        self.thread = threading.Thread(
            target=self._main, name=f"{self.domain.name}/vcpu{self.id}", daemon=True
        )
        self.state = "running"
        self.thread.start()

    @property
    def is_up(self) -> bool:
        return self.thread is not None and self.state not in ("offline", "stopped", "created")

    def wake(self) -> None:
        """End a sched_op block (an event arrived)."""
        with self.cond:
            self.cond.notify_all()

    def kick(self) -> None:
        """Pull the thread out of KVM_RUN so it sees a new request."""
        self.vcpu.run.immediate_exit = 1
        with self.cond:
            self.cond.notify_all()
        thread = self.thread
        if thread is not None and thread.ident is not None and thread.is_alive():
            try:
                signal.pthread_kill(thread.ident, KICK_SIGNAL)
            except ProcessLookupError:
                pass

    def _request(self, **flags: bool) -> None:
        with self.cond:
            for name, value in flags.items():
                setattr(self, f"_{name}", value)
        self.kick()

    def pause(self) -> None:
        self._request(pause=True)

    def unpause(self) -> None:
        with self.cond:
            self._pause = False
            self.cond.notify_all()

    def stop(self) -> None:
        self._request(stop=True)

    def bring_up(self) -> None:
        """Start the thread, or resume a vCPU that took itself offline."""
        with self.cond:
            self._offline = False
            self.cond.notify_all()
        if self.thread is None:
            self.start()

    def take_down(self) -> None:
        self._request(offline=True)

    def set_context(self, rip: int, rsp: int, rdi: int) -> None:
        """Registers for the next entry (VCPUOP_initialise while down, or boot)."""
        regs = KvmRegs()
        regs.rip, regs.rsp, regs.rdi, regs.rsi = rip, rsp, rdi, self.id
        regs.rflags = 0x3002
        if self.thread is None:
            self.vcpu.set_regs(regs)
        else:
            # The thread is parked outside KVM_RUN: hand KVM the registers
            # through the synced area, applied at the next entry.
            self.vcpu.run.regs = regs
            self.vcpu.run.kvm_dirty_regs = k.KVM_SYNC_X86_REGS

    def wait_parked(self, timeout: float) -> bool:
        """Wait until the thread is out of the guest (paused, offline or stopped)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.state == "running":
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
        return True

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    # --- the thread -----------------------------------------------------------
    def _park(self) -> bool:
        """Wait while paused or offline; True when the thread must end."""
        with self.cond:
            while not self._stop and (self._pause or self._offline):
                self.state = "paused" if self._pause else "offline"
                self.cond.notify_all()
                self.domain.vcpu_state_changed()
                self.cond.wait()
            if self._stop:
                return True
            if self.state != "running":
                self.state = "running"
                self.domain.vcpu_state_changed()
            return False

    def block(self) -> None:
        """sched_op block: sleep until an event is pending on this vCPU or the timer expires."""
        pending = self.domain.pending_view(self.id)
        with self.cond:
            self.state = "blocked"
            self.cond.notify_all()
            self.domain.vcpu_state_changed()
            while not self._stop and not self._offline:
                if pending[0]:
                    break
                deadline = self.timer_deadline_ns
                now = time.monotonic_ns()
                if deadline and now >= deadline:
                    break
                self.cond.wait((deadline - now) / 1e9 if deadline else None)
            self.state = "running"
            self.domain.vcpu_state_changed()

    def _main(self) -> None:
        self.native_id = threading.get_native_id()
        if self.affinity:
            os.sched_setaffinity(self.native_id, self.affinity)
        run = self.vcpu.run
        regs = run.regs
        io = run.exit.io
        dispatch = self.domain.hypercalls.dispatch
        try:
            while True:
                if (self._pause or self._offline or self._stop) and self._park():
                    break
                try:
                    self.vcpu.kvm_run()
                except InterruptedError:
                    run.immediate_exit = 0
                    continue
                reason = run.exit_reason
                if reason == k.KVM_EXIT_IO:
                    action = decode_exit(
                        reason, (io.direction, io.size, io.port, io.count), self.vcpu.io_data(),
                        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8), regs.rip,
                    )
                else:
                    action = decode_exit(reason, None, 0, (0, 0, 0, 0, 0), regs.rip, run.exit.mmio.phys_addr)
                if isinstance(action, HypercallExit):
                    result = dispatch(self, action.number, action.args)
                    if result is None:
                        break
                    regs.rax = result & _U64
                    run.kvm_dirty_regs = k.KVM_SYNC_X86_REGS
                    self.domain.maybe_refresh_clock(self)
                elif isinstance(action, MalformedHypercall):
                    regs.rax = -abi.Errno.EINVAL & _U64
                    run.kvm_dirty_regs = k.KVM_SYNC_X86_REGS
                elif isinstance(action, GuestFault):
                    self.domain.guest_crashed(f"vCPU {self.id}: {action.why}")
                    break
        except OSError as exc:
            self.domain.guest_crashed(f"vCPU {self.id}: KVM_RUN failed: {exc}")
        except Exception:  # an engine bug must not leave a silent zombie domain
            self.domain.guest_crashed(f"vCPU {self.id}: engine error\n{traceback.format_exc()}")
        finally:
            self.final_cpu_time_s = time.thread_time()
            with self.cond:
                self.state = "stopped"
                self.cond.notify_all()
            self.domain.vcpu_state_changed()
