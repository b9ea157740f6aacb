"""A paused domain's state as plain data, and putting it into a freshly built domain.

What is written (docs/snapshot.md): per vCPU everything KVM needs to resume
it exactly (registers, special registers, XSAVE area, XCRs, MSRs, debug
registers, pending events) plus the engine's view of it (online or not,
its timer, its pinning); for the domain the engine's own state (which frames
the balloon took, the wanted vCPU set, hypercall counters, the console's
tail, the guest's clock and uptime); for a Xen PV guest its PV state.

Capture requires every vCPU parked outside KVM_RUN and outside any
hypercall (:meth:`~pvtui.engine.domain.Domain.pause` guarantees it).
"""

from __future__ import annotations

import base64
import ctypes
import itertools
import time
import zlib
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pvtui.engine.kvm import ioctl as k
from pvtui.engine.kvm.structs import KvmDebugregs, KvmRegs, KvmSregs, kvm_msrs
from pvtui.engine.kvm.system import MSR_IA32_TSC
from pvtui.engine.snapshot.fileformat import SnapshotError
from pvtui.engine.vcpu import VcpuState

if TYPE_CHECKING:
    from pvtui.engine.domain import Domain
    from pvtui.engine.vcpu import VcpuRunner

#: vCPU state KVM hands out as one struct: name -> (get ioctl, set ioctl, size).
BLOBS = {
    "xsave": (k.KVM_GET_XSAVE, k.KVM_SET_XSAVE, 4096),
    "xcrs": (k.KVM_GET_XCRS, k.KVM_SET_XCRS, 392),
    "events": (k.KVM_GET_VCPU_EVENTS, k.KVM_SET_VCPU_EVENTS, 64),
}
#: MSRs not restored: KVM keeps the TSC running on the host's clock (the guest's
#: clock is re-paired with it instead, see Domain.clock_offset_ns).
NOT_RESTORED_MSRS = {MSR_IA32_TSC}


def _pack(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data, 1)).decode()


def _unpack(text: str) -> bytes:
    return zlib.decompress(base64.b64decode(text))


def _struct_bytes(value: ctypes.Structure) -> str:
    return bytes(value).hex()


def _load_struct(cls: type[ctypes.Structure], text: str) -> Any:
    raw = bytes.fromhex(text)
    if len(raw) != ctypes.sizeof(cls):
        raise SnapshotError(
            "Snapshot has a malformed vCPU", f"{cls.__name__} is {len(raw)} bytes, not {ctypes.sizeof(cls)}."
        )
    return cls.from_buffer_copy(raw)


# --- vCPUs ---------------------------------------------------------------------------
def capture_vcpu(domain: Domain, runner: VcpuRunner) -> dict[str, Any]:
    vcpu = runner.vcpu
    regs = vcpu.get_regs()
    if runner.thread is not None and vcpu.run.kvm_dirty_regs & k.KVM_SYNC_X86_REGS:
        # A hypercall's result waits in kvm_run for the next entry: that is the state.
        regs = KvmRegs.from_buffer_copy(bytes(vcpu.run.regs))
    msrs = vcpu.get_msrs(domain.kvm.msr_index_list())
    blocked = runner.state is VcpuState.BLOCKED
    return {
        "id": runner.id,
        "started": runner.thread is not None,
        # Blocked inside a hypercall (a pause freezes that): the copy blocks again, then finishes the call.
        "blocked": {"call": domain.hypercalls.blocked_call(runner)} if blocked else None,
        "offline": runner._offline,
        "timer_deadline_ns": runner.timer_deadline_ns,
        "affinity": sorted(runner.affinity) if runner.affinity else None,
        "regs": _struct_bytes(regs),
        "sregs": _struct_bytes(vcpu.get_sregs()),
        "debugregs": _struct_bytes(vcpu.get_debugregs()),
        "msrs": {f"{index:#x}": value for index, value in msrs.items()},
        **{name: _pack(vcpu.get_state_blob(get, size)) for name, (get, _, size) in BLOBS.items()},
    }


def apply_vcpu(domain: Domain, data: dict[str, Any]) -> VcpuRunner:
    """Give a vCPU of the new domain the saved state (created if the domain has no such vCPU yet)."""
    vcpu_id = int(data["id"])
    if not 0 <= vcpu_id < domain.max_vcpus:
        raise SnapshotError("Snapshot has a vCPU the domain cannot have", f"vCPU {vcpu_id} of {domain.max_vcpus}.")
    runner = domain.vcpus.get_or_create(vcpu_id)
    vcpu = runner.vcpu
    vcpu.set_sregs(_load_struct(KvmSregs, data["sregs"]))
    vcpu.set_regs(_load_struct(KvmRegs, data["regs"]))
    for name, (_, set_request, size) in BLOBS.items():
        blob = _unpack(data[name])
        if len(blob) != size:
            raise SnapshotError("Snapshot has a malformed vCPU", f"Its {name} is {len(blob)} bytes, not {size}.")
        vcpu.set_state_blob(set_request, blob)
    vcpu.set_debugregs(_load_struct(KvmDebugregs, data["debugregs"]))
    known = set(domain.kvm.msr_index_list())
    saved = {int(index, 16): int(value) for index, value in data["msrs"].items()}
    wanted = [i for i in sorted(saved) if i in known and i not in NOT_RESTORED_MSRS]
    _restore_msrs(vcpu, {index: saved[index] for index in wanted})
    runner.timer_deadline_ns = int(data["timer_deadline_ns"])
    runner.affinity = set(data["affinity"]) if data.get("affinity") else None
    runner._offline = bool(data["offline"])
    blocked = data.get("blocked")
    if blocked is not None:
        runner.resume_after_block = domain.hypercalls.resume_blocked(runner, blocked.get("call"))
    return runner


def _restore_msrs(vcpu: Any, values: dict[int, int]) -> None:
    """Write the saved MSRs. KVM refuses some host-side writes (PVM's own MSRs, read-only ones);
    one it refuses is fine if the new vCPU already holds the saved value, else the restore fails."""
    current = vcpu.get_msrs(sorted(values))
    differing = {i: v for i, v in values.items() if current.get(i) != v}
    refused = []
    for index, value in differing.items():
        one = kvm_msrs([index])
        one.entries[0].data = value
        try:
            vcpu.set_msrs(one)
        except OSError:
            refused.append(index)
    if refused:
        raise SnapshotError(
            "This host cannot restore the vCPU's MSRs",
            f"KVM refused {', '.join(f'{i:#x}' for i in refused)}; restore on a host of the same kind.",
        )


# --- the engine's state ------------------------------------------------------------------
def capture_engine(domain: Domain) -> dict[str, Any]:
    now = time.monotonic_ns()
    accounting = domain.accounting
    console = domain.console
    return {
        "slots": [slot.size for slot in domain.memory.slots],
        "released": _pack(domain.memory.released_map),
        "wanted_mask": domain.vcpus.wanted_mask,
        "counters": {str(vcpu): dict(counter) for vcpu, counter in accounting._per_vcpu.items()},
        "last_seq": accounting.last_seq,
        "console": {
            "tail": _pack(console.contents()),
            "total_bytes": console.total_bytes,
            "dropped_bytes": console.dropped_bytes,
        },
        "guest_time_ns": now + domain.clock_offset_ns,
        "uptime_ns": now - domain.started_ns if domain.started_ns else 0,
    }


def apply_memory_layout(domain: Domain, engine: dict[str, Any]) -> None:
    """Hot-added slots first (pages are loaded into them), before the pages themselves."""
    slots = [int(size) for size in engine["slots"]]
    if not slots or slots[0] != domain.memory.slots[0].size:
        raise SnapshotError(
            "Snapshot does not match its definition",
            f"Its boot memory is {slots[0] if slots else 0} bytes, the definition says {domain.memory.slots[0].size}.",
        )
    if sum(slots) > domain.config.maxmem_or_memory:
        raise SnapshotError("Snapshot has more memory than its maxmem", "The file is corrupt or was edited.")
    for size in slots[1:]:
        domain.memory.add_slot(size, populated=False)


def apply_engine(domain: Domain, engine: dict[str, Any]) -> None:
    domain.memory.set_released_map(_unpack(engine["released"]))
    domain.vcpus.wanted_mask = int(engine["wanted_mask"])
    accounting = domain.accounting
    for vcpu, counts in engine["counters"].items():
        counter = accounting.counter_for(int(vcpu))
        counter.clear()
        counter.update({int(op): int(n) for op, n in counts.items()})
    accounting._seq = itertools.count(int(engine["last_seq"]) + 1)
    console = domain.console
    tail = _unpack(engine["console"]["tail"])
    with console._lock:
        console._data[:] = tail
        console.total_bytes = int(engine["console"]["total_bytes"])
        console.dropped_bytes = int(engine["console"]["dropped_bytes"])
    now = time.monotonic_ns()
    # The guest's clock continues from where it stopped, never behind it.
    domain.clock_offset_ns = max(0, int(engine["guest_time_ns"]) - now)
    domain.restored_uptime_ns = int(engine["uptime_ns"])


# --- the Xen PV personality -------------------------------------------------------------
def capture_xen(domain: Domain) -> dict[str, Any] | None:
    guest = domain.xen
    if guest is None:
        return None
    return {
        "private": _pack(bytes(guest.private)),
        "vcpus": {str(vcpu): asdict(state) for vcpu, state in guest.vcpus.items()},
        "ports": {str(port): list(value) for port, value in guest.ports.items()},
        "vm_assist": guest.vm_assist,
        "grant_frames": guest.grant_frames,
        "grant_version": guest.grant_version,
    }


def apply_xen(domain: Domain, data: dict[str, Any] | None) -> None:
    from pvtui.engine.xen.guest import PvVcpu

    guest = domain.xen
    if (guest is None) != (data is None):
        raise SnapshotError("Snapshot is of another personality", "Its kernel and its saved state disagree.")
    if guest is None or data is None:
        return
    private = _unpack(data["private"])
    if len(private) != len(guest.private):
        raise SnapshotError("Snapshot does not fit this engine", "Its Xen private area has another size.")
    guest.private[:] = private
    for vcpu, fields in data["vcpus"].items():
        fields = dict(fields)
        fields["traps"] = {int(v): tuple(t) for v, t in fields["traps"].items()}
        fields["callbacks"] = {int(v): tuple(c) for v, c in fields["callbacks"].items()}
        guest.vcpus[int(vcpu)] = PvVcpu(**fields)
    guest.ports = {int(port): (str(kind), int(v)) for port, (kind, v) in data["ports"].items()}
    guest.vm_assist = int(data["vm_assist"])
    guest.grant_frames = int(data["grant_frames"])
    guest.grant_version = int(data["grant_version"])
    guest.flush_mappings()
