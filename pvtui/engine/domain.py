"""A paravirtual domain: one KVM VM, its memory, vCPU threads and accounting.

This is the whole VMM for one domain and has no UI in it: ``pvtui run``
drives it in the foreground and the daemon's per-domain monitors run the
same class. Guest-facing behaviour is in :mod:`pvtui.engine.hypercalls`;
this module builds the machine and implements the requests the engine (and
the guest, through hypercalls) make of it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pvtui.domain.limits import pin_problem, vcpu_count_problem
from pvtui.domain.model import DomainStats
from pvtui.domain.units import MIB
from pvtui.engine import abi, boot, figures, layout
from pvtui.engine.abi import ShutdownReason
from pvtui.engine.accounting import HypercallAccounting
from pvtui.engine.console import ConsoleBuffer
from pvtui.engine.elf import load_kernel, read_kernel
from pvtui.engine.errors import DomainError
from pvtui.engine.hypercalls import HypercallHandler
from pvtui.engine.kvm import Kvm
from pvtui.engine.kvm.system import KVM_DEVICE
from pvtui.engine.memory import GuestMemory
from pvtui.engine.states import DomainState, valid_transition
from pvtui.engine.vcpu import VcpuRunner, ensure_kick_handler
from pvtui.engine.vcpuset import VcpuSet
from pvtui.engine.xen.guest import XenGuest
from pvtui.engine.xen.hypercalls import XenHypercalls, bind_trap_exit, xen_op_name
from pvtui.engine.xen.notes import kernel_xen_notes

if TYPE_CHECKING:
    from pvtui.domain.schema import DomainConfig

_TERMINAL = (DomainState.SHUTDOWN, DomainState.CRASHED, DomainState.DYING, DomainState.DEAD)


@functools.cache
def open_kvm() -> Kvm:
    """The process's one KVM handle (``$PVTUI_KVM_DEVICE`` overrides ``/dev/kvm``)."""
    return Kvm(os.environ.get("PVTUI_KVM_DEVICE", KVM_DEVICE))


@dataclass(frozen=True)
class DomainEvent:
    kind: str  # "state" | "shutdown"
    domain: str
    state: DomainState
    detail: str = ""


class Domain:
    """Build with the constructor, then :meth:`start`; end with :meth:`destroy`."""

    def __init__(
        self,
        config: DomainConfig,
        kernel_path: str,
        kvm: Kvm | None = None,
        domid: int = 0,
        kernel_image: bytes | None = None,
    ) -> None:
        """``kvm`` and ``kernel_image`` (the kernel file's bytes) let a monitor that has dropped
        its privileges build the domain again (a reboot) from what it opened while it had them."""
        self.created_ns = time.monotonic_ns()
        #: The id pvd gave the domain (0 when run alone); Xen PV guests can ask for it.
        self.domid = domid
        ensure_kick_handler()
        self.config = config
        self.name = config.name
        self.max_vcpus = config.maxvcpus_or_vcpus
        self.max_pages = config.maxmem_or_memory // layout.PAGE_SIZE
        self.kernel_path = kernel_path
        if kernel_image is None:
            with contextlib.suppress(OSError):  # unreadable: load_kernel says why
                kernel_image = read_kernel(kernel_path)
        #: The kernel file's bytes: a snapshot carries them, so a restore needs no file.
        self.kernel_image = kernel_image or b""
        self.kernel = load_kernel(kernel_path, layout.KERNEL_MIN_ADDR, kernel_image)
        xen_notes = kernel_xen_notes(kernel_path, kernel_image)
        #: "xen" for a kernel with Xen's notes (Xen's boot layout, hypercalls and traps), else "pvtui".
        self.personality = "xen" if xen_notes else "pvtui"
        self.xen: XenGuest | None = None
        #: The vCPU loop's hook for exits other than hypercalls (the Xen personality's trap stubs).
        self.trap_exit: Callable[[VcpuRunner, int], bool] | None = None
        self.stack_base, self.first_free = boot.memory_layout(config, self.kernel.end, self.max_vcpus)
        self.accounting = HypercallAccounting(names=xen_op_name) if xen_notes else HypercallAccounting()
        self.console = ConsoleBuffer()
        self.listeners: list[Callable[[DomainEvent], None]] = []
        self.shutdown_reason: ShutdownReason | None = None
        self.crash_reason: str | None = None
        self._lock = threading.RLock()
        self._state = DomainState.BUILDING
        self._paused = False
        self._last_state = DomainState.BUILDING
        #: Called once (from a vCPU thread), then cleared, when the blocked domain wakes: an
        #: idle domain's monitor sleeps until then instead of looking every second.
        self.on_wake: Callable[[], None] | None = None
        self._finished = threading.Event()
        self.vcpus = VcpuSet(self, config.vcpus, self._create_vcpu)
        self.started_ns = 0
        #: Guest time minus the engine's monotonic clock (non-zero only after a restore or migration).
        self.clock_offset_ns = 0
        #: How long the domain had run before it was saved (its uptime continues from there).
        self.restored_uptime_ns = 0

        self.kvm = kvm or open_kvm()
        self.vm = self.kvm.create_vm()
        try:
            self.memory = GuestMemory(self.vm, config.memory)
            self.hypercalls: HypercallHandler | XenHypercalls
            if xen_notes is not None:
                boot.load_segments(self, self.kernel)
                self.xen = XenGuest(self, xen_notes, self.kernel.end, config.cmdline or "")
                self.shared = self.xen.shared
                xen_calls = XenHypercalls(self.xen)
                self.hypercalls = xen_calls
                self.trap_exit = bind_trap_exit(xen_calls)
            else:
                boot.write_boot_structures(self, self.kernel)
                self.shared = self.memory.view(layout.SHARED_INFO_ADDR, layout.PAGE_SIZE)
                self.hypercalls = HypercallHandler(self)
            self._tsc_khz = 0
            for vcpu_id in range(config.vcpus):
                self.vcpus.get_or_create(vcpu_id)
        except BaseException:
            self._release_resources()
            raise

    # --- building (pvtui/engine/boot.py) ----------------------------------------------
    def _create_vcpu(self, vcpu_id: int) -> VcpuRunner:
        return boot.create_vcpu(self, vcpu_id)

    def vcpu_tsc_khz(self) -> int:
        """The guest TSC's frequency (kHz), to turn cycles a guest measured into time."""
        return self._tsc_khz

    def stack_top(self, vcpu_id: int) -> int:
        return self.stack_base + (vcpu_id + 1) * layout.VCPU_STACK_SIZE

    def refresh_clock(self, runner: VcpuRunner) -> None:
        """Re-pair TSC and clock (called by the vCPU's own thread, between entries)."""
        boot.publish_clock(self, runner)

    # --- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            self._transition(DomainState.RUNNING)
            self.started_ns = time.monotonic_ns()
            self.vcpus.get_or_create(0).start()

    def resume_restored(self, started: set[int], paused: bool = False) -> None:
        """Run a domain built from a snapshot: start the vCPUs that were running (``paused``: parked)."""
        with self._lock:
            self._transition(DomainState.RUNNING)
            self.started_ns = time.monotonic_ns() - self.restored_uptime_ns
            self._paused = paused
            for runner in self.vcpus.all():
                boot.publish_clock(self, runner)
                if runner.id in started:
                    runner._pause = paused
                    runner.start()
        self.vcpu_state_changed()

    def _transition(self, target: DomainState) -> None:
        if not valid_transition(self._state, target):
            raise DomainError(
                f"Domain {self.name} cannot go from {self._state.value} to {target.value}",
                "Check the domain's state (pvtui list) and retry.",
            )
        self._state = target

    @property
    def state(self) -> DomainState:
        if self._state is not DomainState.RUNNING:
            return self._state
        if self._paused:
            return DomainState.PAUSED
        if self.vcpus.all_blocked():
            return DomainState.BLOCKED
        return DomainState.RUNNING

    def vcpu_state_changed(self) -> None:
        """Emit a state event for lifecycle changes (paused, shut down, ...).

        Running <-> blocked flips with every sched_op block, many times a second
        for a guest sleeping on timers; that is not news (the 1 Hz stats carry
        the sampled state, as xentop shows it), so it raises no event.
        """
        state = self.state
        if state is self._last_state:
            return
        if state is DomainState.RUNNING and self._last_state is DomainState.BLOCKED and self.on_wake is not None:
            hook, self.on_wake = self.on_wake, None
            hook()
        flapping = {state, self._last_state} <= {DomainState.RUNNING, DomainState.BLOCKED}
        self._last_state = state
        if not flapping:
            self._emit("state", state)

    def _emit(self, kind: str, state: DomainState, detail: str = "") -> None:
        event = DomainEvent(kind, self.name, state, detail)
        for listener in list(self.listeners):
            listener(event)

    def guest_shutdown(self, reason: ShutdownReason, vcpu_id: int) -> None:
        """The guest asked to shut down (sched_op shutdown): stop every vCPU."""
        self._finish(
            DomainState.CRASHED if reason is ShutdownReason.crash else DomainState.SHUTDOWN,
            reason,
            f"guest {reason.name} from vCPU {vcpu_id}",
        )

    def guest_crashed(self, why: str) -> None:
        self.crash_reason = why
        self._finish(DomainState.CRASHED, ShutdownReason.crash, why)

    def _finish(self, state: DomainState, reason: ShutdownReason, detail: str) -> None:
        with self._lock:
            if self._state in _TERMINAL or self._state is DomainState.BUILDING:
                return
            self._transition(state)
            self._paused = False
            self.shutdown_reason = reason
            self.vcpus.stop()
        self._finished.set()
        self._emit("shutdown", state, detail)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the guest shut down or crashed."""
        return self._finished.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def pause(self) -> None:
        with self._lock:
            if self._state is not DomainState.RUNNING or self._paused:
                raise DomainError(f"Domain {self.name} is {self.state.value}", "Only a running domain can be paused.")
            self._paused = True
        self.vcpus.pause()
        self.vcpu_state_changed()

    def unpause(self) -> None:
        with self._lock:
            if not self._paused:
                raise DomainError(f"Domain {self.name} is not paused", "Only a paused domain can be unpaused.")
            self._paused = False
            self.vcpus.unpause()
        self.vcpu_state_changed()

    def request_shutdown(self, reason: ShutdownReason = ShutdownReason.poweroff) -> None:
        """Ask the guest to shut down through the shared-info page (it may ignore it)."""
        if reason not in (ShutdownReason.poweroff, ShutdownReason.reboot):
            raise DomainError("Unsupported shutdown request", "Ask for poweroff or reboot.")
        self._refuse_for_xen("a graceful shutdown", "destroy it instead (as xl does without PV drivers)")
        with self._lock:
            struct.pack_into("<I", self.shared, abi.SI_SHUTDOWN_REQUEST, reason + 1)
            self._control_changed()

    def destroy(self) -> None:
        """Stop every vCPU at once and free the VM. Safe to call twice."""
        with self._lock:
            if self._state in (DomainState.DYING, DomainState.DEAD):
                return
            self._transition(DomainState.DYING)
            runners = self.vcpus.stop()
        self._finished.set()
        for runner in runners:
            runner.join(5.0)
        self._release_resources()
        self._transition(DomainState.DEAD)
        self._emit("state", DomainState.DEAD)

    def _release_resources(self) -> None:
        for runner in self.vcpus.all() if hasattr(self, "vcpus") else []:
            if runner.thread is None or not runner.thread.is_alive():
                runner.vcpu.close()
        if hasattr(self, "shared"):
            self.shared.release()
        if self.xen is not None:
            self.xen.close()
        if hasattr(self, "memory"):
            self.vm.close()
            self.memory.close()
        else:
            self.vm.close()

    # --- guest-facing requests (from hypercalls) --------------------------------
    def _refuse_for_xen(self, what: str, instead: str) -> None:
        """Xen PV guests have no pvtui control page: what needs the guest's cooperation is refused."""
        if self.xen is not None:
            raise DomainError(
                f"{self.name} is a Xen PV guest without PV control drivers",
                f"It cannot take {what} (Xen asks through xenstore, which this guest does not use); {instead}.",
            )

    def pending_view(self, vcpu_id: int) -> memoryview:
        if self.xen is not None:  # evtchn_upcall_pending of its vcpu_info
            at = self.xen.vcpu_info_offset(vcpu_id)
            return self.shared[at : at + 1]
        offset = abi.SI_VCPU_INFO + vcpu_id * abi.VCPU_INFO_SIZE + abi.VI_EVTCHN_PENDING
        return self.shared[offset : offset + 8].cast("Q")

    def raise_event(self, vcpu_id: int, port: int) -> None:
        with self._lock:
            pending = self.pending_view(vcpu_id)
            pending[0] |= 1 << port
            pending.release()
        self.vcpus.wake(vcpu_id)

    def _control_changed(self) -> None:
        seq = struct.unpack_from("<Q", self.shared, abi.SI_CONTROL_SEQ)[0]
        struct.pack_into("<Q", self.shared, abi.SI_CONTROL_SEQ, seq + 1)
        for runner in self.vcpus.all():
            if runner.is_up:
                self.raise_event(runner.id, abi.PORT_CONTROL)

    def initialise_vcpu(self, vcpu_id: int, rip: int, rsp: int, rdi: int) -> None:
        """VCPUOP_initialise: the guest's context, with this ABI's defaults for a zero rsp or rdi."""
        self.vcpus.initialise(vcpu_id, rip, rsp or self.stack_top(vcpu_id), rdi or layout.START_INFO_ADDR)

    # --- engine-side resource requests -----------------------------------------
    def set_balloon_target(self, target_bytes: int) -> None:
        """Ask the guest to hold ``target_bytes`` (it complies through memory_op)."""
        self._refuse_for_xen("a balloon target", "set memory: in its definition and restart it")
        floor = self.first_free + boot.MIN_FREE_BYTES
        if not floor <= target_bytes <= self.memory.size:
            hint = " (mem-max grows it up to maxmem)" if self.memory.size < self.config.maxmem_or_memory else ""
            raise DomainError(
                f"Memory target for {self.name} out of range",
                f"Choose between {-(-floor // MIB)} MiB and {self.memory.size // MIB} MiB{hint}.",
            )
        with self._lock:
            struct.pack_into("<Q", self.shared, abi.SI_BALLOON_TARGET_PAGES, target_bytes // layout.PAGE_SIZE)
            self._control_changed()

    def set_online_vcpus(self, count: int, guest_timeout: float = 2.0) -> None:
        """Ask for ``count`` online vCPUs. The guest brings new ones up itself and takes
        unplugged ones down through vcpu_op; both get ``guest_timeout`` seconds, after
        which an unplug is forced (a plug the guest ignores stays pending)."""
        self._refuse_for_xen("vCPU hot-plug", "set vcpus: in its definition and restart it")
        problem = vcpu_count_problem(count, self.max_vcpus)
        if problem:
            raise DomainError(f"Cannot give {self.name} {count} vCPUs", problem)
        with self._lock:
            if self._state is not DomainState.RUNNING:
                raise DomainError(f"Domain {self.name} is {self._state.value}", "Only a running domain takes vCPUs.")
            leaving = self.vcpus.want(count)
            struct.pack_into("<Q", self.shared, abi.SI_VCPU_ONLINE_MASK, self.vcpus.wanted_mask)
            self._control_changed()
            for runner in leaving:
                self.raise_event(runner.id, abi.PORT_CONTROL)
        # New vCPUs are brought up by the guest; leaving ones taken down by it, or forced after the timeout.
        self.vcpus.settle(count, leaving, guest_timeout, lambda: self.finished)

    def pin_vcpu(self, vcpu_id: int, cpus: set[int] | None) -> None:
        """Pin a vCPU's thread to host CPUs (None: any CPU). Checked before anything moves."""
        if not 0 <= vcpu_id < self.max_vcpus:
            raise DomainError(f"{self.name} has no vCPU {vcpu_id}", f"vCPUs are numbered 0 to {self.max_vcpus - 1}.")
        problem = pin_problem(cpus)
        if problem:
            raise DomainError(f"Cannot pin {self.name} vCPU {vcpu_id}", problem)
        with self._lock:
            self.vcpus.pin(vcpu_id, cpus)

    def grow_memory(self, new_bytes: int) -> None:
        """Add RAM past the present size (a new KVM slot), up to maxmem.

        The new frames start out with the balloon (not backed); raise the
        target to let the guest take them.
        """
        self._refuse_for_xen("memory hot-add", "set memory: in its definition and restart it")
        present = self.memory.size
        limit = self.config.maxmem_or_memory
        if new_bytes % MIB:
            raise DomainError("Memory sizes are whole MiB", f"Round {new_bytes} bytes to a multiple of 1 MiB.")
        if new_bytes < present:
            raise DomainError(
                f"Cannot shrink {self.name}'s memory to {new_bytes // MIB} MiB",
                f"It has {present // MIB} MiB present and memory cannot be unplugged; lower the balloon target (mem-set) instead.",
            )
        if new_bytes > limit:
            raise DomainError(
                f"{self.name} may grow to {limit // MIB} MiB at most",
                "Raise maxmem: in its definition (takes effect on the next start).",
            )
        if new_bytes == present:
            return
        with self._lock:
            if self._state in _TERMINAL:
                raise DomainError(f"Domain {self.name} is {self._state.value}", "Only a live domain can grow.")
            self.memory.add_slot(new_bytes - present, populated=False)
            struct.pack_into("<Q", self.shared, abi.SI_MEMORY_PAGES, self.memory.pages)
            self._control_changed()

    @property
    def online_vcpus(self) -> int:
        return self.vcpus.online

    @property
    def balloon_target_bytes(self) -> int:
        if self.xen is not None:
            return self.config.memory
        return struct.unpack_from("<Q", self.shared, abi.SI_BALLOON_TARGET_PAGES)[0] * layout.PAGE_SIZE

    # --- measurement ------------------------------------------------------------
    @property
    def boot_ns(self) -> int | None:
        """From the start of domain creation to the guest's first hypercall."""
        first = self.accounting.first_time_ns
        return first - self.created_ns if first is not None else None

    def stats(self) -> DomainStats:
        return figures.domain_stats(self)
