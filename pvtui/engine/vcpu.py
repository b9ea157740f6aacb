"""One vCPU: a KVM vCPU fd run by its own host thread, as a small state machine.

States: ``created`` (no thread yet), ``running`` (in or around KVM_RUN),
``blocked`` (in sched_op block), ``paused`` (parked by the engine),
``offline`` (taken down through vcpu_op), ``stopped`` (thread finished).
The engine talks to the thread only through flags under ``cond`` plus a
kick (``immediate_exit`` + a signal) that pulls it out of ``KVM_RUN``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import threading
import time
import traceback
from collections.abc import Callable
from enum import StrEnum
from fcntl import ioctl
from typing import TYPE_CHECKING, Any

from pvtui.engine import abi, layout
from pvtui.engine.abi import HYPERCALL_PORT
from pvtui.engine.exits import HYPERCALL_IO_WORD, GuestFault, MalformedHypercall, decode_exit
from pvtui.engine.kvm import Vcpu
from pvtui.engine.kvm import ioctl as k
from pvtui.engine.kvm.ioctl import KVM_RUN
from pvtui.engine.kvm.structs import KvmRegs, KvmRun
from pvtui.engine.threadtimes import own_schedstat
from pvtui.errors import PvtuiError

if TYPE_CHECKING:
    from pvtui.engine.domain import Domain


class VcpuState(StrEnum):
    """What a vCPU's thread is doing (its string is what ``vcpu-list`` shows)."""

    CREATED = "created"  # no thread yet
    RUNNING = "running"  # in or around KVM_RUN
    BLOCKED = "blocked"  # in sched_op block
    PAUSED = "paused"  # parked by the engine
    OFFLINE = "offline"  # taken down through vcpu_op
    STOPPED = "stopped"  # the thread finished


KICK_SIGNAL = signal.SIGUSR1
#: Re-pair the guest TSC with the host clock this often, so NTP slewing never drifts the guest.
CLOCK_REFRESH_NS = 10_000_000_000
_U64 = (1 << 64) - 1
# Hot-path views of kvm_run: exit_reason (u32 at 8) and the io word (u64 at 32) in
# one read; the synced general registers (rax rbx rcx rdx rsi rdi rsp rbp r8 r9 r10).
_EXIT_HEAD_OFFSET = KvmRun.exit_reason.offset
_EXIT_HEAD = struct.Struct(f"<I{KvmRun.exit.offset - KvmRun.exit_reason.offset - 4}xQ")
_REGS_OFFSET = KvmRun.regs.offset
_REGS = struct.Struct("<11Q")
_DIRTY_OFFSET = KvmRun.kvm_dirty_regs.offset
_U64_FIELD = struct.Struct("<Q")


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
        self.state = VcpuState.CREATED
        self.thread: threading.Thread | None = None
        self.native_id: int | None = None
        self.timer_deadline_ns = 0
        self.affinity: set[int] | None = None
        self._pause = False
        self._offline = False
        self._stop = False
        self._time_refreshed_ns = 0
        #: The thread's own CPU seconds when it ended (/proc only shows live threads).
        self.final_cpu_time_s: float | None = None
        self.final_wait_time_s = 0.0
        #: The multicall this vCPU is in (set by the personality's handler): where a
        #: snapshot of a vCPU blocked inside one finds the entries still to run.
        self.multicall: Any = None
        #: A vCPU restored while blocked: the rest of its hypercall, run once the block ends.
        self.resume_after_block: Callable[[], int | None] | None = None

    # --- engine side --------------------------------------------------------
    def start(self) -> None:
        self.thread = threading.Thread(target=self._main, name=f"{self.domain.name}/vcpu{self.id}", daemon=True)
        self.state = VcpuState.RUNNING
        self.thread.start()

    @property
    def is_up(self) -> bool:
        return self.thread is not None and self.state not in (VcpuState.OFFLINE, VcpuState.STOPPED, VcpuState.CREATED)

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
            with contextlib.suppress(ProcessLookupError):
                signal.pthread_kill(thread.ident, KICK_SIGNAL)

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

    def set_context(self, rip: int, rsp: int, rdi: int, rsi: int | None = None) -> None:
        """Registers for the next entry (VCPUOP_initialise while down, or boot).

        ``rsi`` is the vCPU id for pvtui's ABI; a Xen PV kernel gets its
        start_info there instead.
        """
        regs = KvmRegs()
        regs.rip, regs.rsp, regs.rdi, regs.rsi = rip, rsp, rdi, self.id if rsi is None else rsi
        regs.rflags = layout.RFLAGS_IOPL3_RESERVED
        if self.thread is None:
            self.vcpu.set_regs(regs)
        else:
            # The thread is parked outside KVM_RUN: hand KVM the registers
            # through the synced area, applied at the next entry.
            self.vcpu.run.regs = regs
            self.vcpu.run.kvm_dirty_regs = k.KVM_SYNC_X86_REGS

    def wait_parked(self, timeout: float) -> bool:
        """Wait until the thread is out of the guest: paused, offline, stopped, or blocked (which a pause freezes)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.state is VcpuState.RUNNING:
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
                self.state = VcpuState.PAUSED if self._pause else VcpuState.OFFLINE
                self.cond.notify_all()
                self.domain.vcpu_state_changed()
                self.cond.wait()
            if self._stop:
                return True
            if self.state is not VcpuState.RUNNING:
                self.state = VcpuState.RUNNING
                self.domain.vcpu_state_changed()
            return False

    def block(self) -> None:
        """sched_op block: sleep until an event is pending on this vCPU or the timer expires."""
        if time.monotonic_ns() - self._time_refreshed_ns > CLOCK_REFRESH_NS:
            # Off the per-exit hot path: guests read the clock around blocks and timers.
            self.domain.refresh_clock(self)
        pending = self.domain.pending_view(self.id)
        offset = self.domain.clock_offset_ns
        with self.cond:
            self.state = VcpuState.BLOCKED
            self.cond.notify_all()
            self.domain.vcpu_state_changed()
            while not self._stop and not self._offline:
                if self._pause:
                    # Paused: the block stays as it is, whatever arrives (a snapshot
                    # records this vCPU as blocked, and the copy blocks the same way).
                    self.cond.wait()
                    continue
                if pending[0]:
                    break
                deadline = self.timer_deadline_ns  # guest time: the engine clock plus the domain's offset
                now = time.monotonic_ns() + offset
                if deadline and now >= deadline:
                    break
                self.cond.wait((deadline - now) / 1e9 if deadline else None)
            self.state = VcpuState.RUNNING
            self.domain.vcpu_state_changed()

    def _finish_restored_block(self) -> bool:
        """A restored vCPU that was blocked: block again, then finish its hypercall (False: it must stop)."""
        finish, self.resume_after_block = self.resume_after_block, None
        assert finish is not None
        self.block()
        if self._stop:
            return False
        result = finish()
        if result is None:
            return False
        regs = self.vcpu.get_regs()  # the exit's registers, as restored
        regs.rax = result & _U64
        self.vcpu.set_regs(regs)
        return True

    def _main(self) -> None:
        self.native_id = threading.get_native_id()
        if self.affinity:
            os.sched_setaffinity(self.native_id, self.affinity)
        run = self.vcpu.run
        run_map = self.vcpu.run_map
        regs = run.regs
        io = run.exit.io
        fd = self.vcpu.fd
        dispatch = self.domain.hypercalls.dispatch
        trap_exit = self.domain.trap_exit
        read_head, read_regs, write_u64 = _EXIT_HEAD.unpack_from, _REGS.unpack_from, _U64_FIELD.pack_into
        exit_io, hypercall_io, sync_regs = (
            k.KVM_EXIT_IO,
            HYPERCALL_IO_WORD,
            k.KVM_SYNC_X86_REGS,
        )  # locals: no lookups per exit
        try:
            if self.resume_after_block is not None and not self._finish_restored_block():
                return
            while True:
                if (self._pause or self._offline or self._stop) and self._park():
                    break
                try:
                    ioctl(fd, KVM_RUN, 0)
                except InterruptedError:
                    run.immediate_exit = 0
                    continue
                reason, io_word = read_head(run_map, _EXIT_HEAD_OFFSET)
                if reason == exit_io and io_word == hypercall_io:
                    rax, _, _, rdx, rsi, rdi, _, _, r8, _, r10 = read_regs(run_map, _REGS_OFFSET)
                    # The hypercall number is the `out`'s 32-bit value, i.e. eax.
                    result = dispatch(self, rax & 0xFFFFFFFF, rdi, rsi, rdx, r10, r8)
                    if result is None:
                        break
                    write_u64(run_map, _REGS_OFFSET, result & _U64)
                    write_u64(run_map, _DIRTY_OFFSET, sync_regs)
                    continue
                if trap_exit is not None and reason == exit_io and io.port != HYPERCALL_PORT:
                    if trap_exit(self, io.port):
                        continue
                    break
                io_exit = (io.direction, io.size, io.port, io.count) if reason == k.KVM_EXIT_IO else None
                action = decode_exit(
                    reason,
                    io_exit,
                    regs.rax,
                    (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8),
                    regs.rip,
                    run.exit.mmio.phys_addr,
                )
                if isinstance(action, MalformedHypercall):
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
            self.final_wait_time_s = own_schedstat()[1]
            with self.cond:
                self.state = VcpuState.STOPPED
                self.cond.notify_all()
            self.domain.vcpu_state_changed()
