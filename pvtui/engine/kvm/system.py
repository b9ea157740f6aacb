"""fd-owning wrappers for the KVM system, VM and vCPU file descriptors."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct

from pvtui.engine.kvm import ioctl as k
from pvtui.engine.kvm.structs import (
    KvmDebugregs,
    KvmRegs,
    KvmRun,
    KvmSregs,
    KvmUserspaceMemoryRegion,
    kvm_cpuid2,
    kvm_msrs,
)
from pvtui.errors import PvtuiError

KVM_DEVICE = "/dev/kvm"


class KvmUnavailable(PvtuiError):
    """``/dev/kvm`` is missing, not permitted, or too old for pvtui."""


class Kvm:
    """The ``/dev/kvm`` system fd: capability checks and VM creation."""

    def __init__(self, path: str = KVM_DEVICE) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KvmUnavailable(
                "KVM is not available",
                f"{path} does not exist. Load the KVM module (modprobe kvm_intel, kvm_amd "
                "or kvm_pvm) or run pvtui on a host whose kernel has CONFIG_KVM enabled.",
            ) from None
        except PermissionError:
            raise KvmUnavailable(
                "KVM is not permitted",
                f"You may not open {path}. Add yourself to its group "
                f"(sudo usermod -aG kvm $USER, then log in again) or run as root.",
            ) from None
        version = fcntl.ioctl(self.fd, k.KVM_GET_API_VERSION, 0)
        if version != k.KVM_API_VERSION:
            os.close(self.fd)
            raise KvmUnavailable(
                "Unsupported KVM",
                f"{path} speaks KVM API {version}; pvtui needs {k.KVM_API_VERSION}.",
            )
        for cap, name in ((k.KVM_CAP_SYNC_REGS, "SYNC_REGS"), (k.KVM_CAP_IMMEDIATE_EXIT, "IMMEDIATE_EXIT")):
            if not self.check_extension(cap):
                os.close(self.fd)
                raise KvmUnavailable(
                    "KVM is too old",
                    f"{path} lacks KVM_CAP_{name}; use a host kernel of Linux 4.14 or newer.",
                )
        self.vcpu_mmap_size = fcntl.ioctl(self.fd, k.KVM_GET_VCPU_MMAP_SIZE, 0)
        self._supported_cpuid: ctypes.Structure | None = None

    def check_extension(self, cap: int) -> int:
        return fcntl.ioctl(self.fd, k.KVM_CHECK_EXTENSION, cap)

    def supported_cpuid(self) -> ctypes.Structure:
        """The host's KVM-supported CPUID table, fetched once."""
        if self._supported_cpuid is None:
            nent = 128
            while True:
                cpuid = kvm_cpuid2(nent)
                try:
                    fcntl.ioctl(self.fd, k.KVM_GET_SUPPORTED_CPUID, cpuid)
                except OSError as exc:
                    if exc.errno == errno.E2BIG and nent < 4096:
                        nent *= 2
                        continue
                    raise
                self._supported_cpuid = cpuid
                break
        return self._supported_cpuid

    def msr_index_list(self) -> list[int]:
        """The MSRs KVM saves and restores for a vCPU (KVM_GET_MSR_INDEX_LIST)."""
        count = 256
        while True:
            buf = bytearray(4 + 4 * count)
            struct.pack_into("<I", buf, 0, count)
            try:
                fcntl.ioctl(self.fd, k.KVM_GET_MSR_INDEX_LIST, buf)
            except OSError as exc:
                if exc.errno == errno.E2BIG and count < 65536:
                    count *= 4
                    continue
                raise
            found = struct.unpack_from("<I", buf)[0]
            return list(struct.unpack_from(f"<{found}I", buf, 4))

    def create_vm(self) -> Vm:
        return Vm(self, fcntl.ioctl(self.fd, k.KVM_CREATE_VM, 0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Vm:
    """A KVM virtual machine fd."""

    def __init__(self, kvm: Kvm, fd: int) -> None:
        self.kvm = kvm
        self.fd = fd
        os.set_inheritable(fd, False)

    def set_memory_region(self, slot: int, guest_phys_addr: int, size: int, host_addr: int, flags: int = 0) -> None:
        """Map (size > 0) or remove (size == 0) a guest-physical memory slot; registering
        a slot again with other ``flags`` (dirty logging on or off) keeps its contents."""
        region = KvmUserspaceMemoryRegion(slot, flags, guest_phys_addr, size, host_addr)
        fcntl.ioctl(self.fd, k.KVM_SET_USER_MEMORY_REGION, region)

    def get_dirty_log(self, slot: int, pages: int) -> bytearray:
        """The slot's dirty bitmap (one bit per 4 KiB page, LSB first) since the last call; reading clears it."""
        bitmap = bytearray(-(-pages // 64) * 8)
        holder = (ctypes.c_char * len(bitmap)).from_buffer(bitmap)
        request = struct.pack("<IIQ", slot, 0, ctypes.addressof(holder))
        fcntl.ioctl(self.fd, k.KVM_GET_DIRTY_LOG, request)
        del holder
        return bitmap

    def create_vcpu(self, vcpu_id: int) -> Vcpu:
        return Vcpu(self, vcpu_id, fcntl.ioctl(self.fd, k.KVM_CREATE_VCPU, vcpu_id))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


MSR_IA32_TSC = 0x10


class Vcpu:
    """A KVM vCPU fd plus its mmapped ``kvm_run`` page with synced registers."""

    def __init__(self, vm: Vm, vcpu_id: int, fd: int) -> None:
        self.vm = vm
        self.id = vcpu_id
        self.fd = fd
        os.set_inheritable(fd, False)
        self._run_map = mmap.mmap(fd, vm.kvm.vcpu_mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.run = KvmRun.from_buffer(self._run_map)
        #: The raw kvm_run page, for struct-based reads on the per-exit hot path.
        self.run_map = self._run_map
        # Ask KVM to copy the general registers into kvm_run on every exit, so
        # a hypercall needs no KVM_GET_REGS/KVM_SET_REGS (≈8 µs each here).
        self.run.kvm_valid_regs = k.KVM_SYNC_X86_REGS

    def get_regs(self) -> KvmRegs:
        regs = KvmRegs()
        fcntl.ioctl(self.fd, k.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: KvmRegs) -> None:
        fcntl.ioctl(self.fd, k.KVM_SET_REGS, regs)

    def get_sregs(self) -> KvmSregs:
        sregs = KvmSregs()
        fcntl.ioctl(self.fd, k.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: KvmSregs) -> None:
        fcntl.ioctl(self.fd, k.KVM_SET_SREGS, sregs)

    def set_cpuid(self, cpuid: ctypes.Structure) -> None:
        fcntl.ioctl(self.fd, k.KVM_SET_CPUID2, cpuid)

    def tsc_khz(self) -> int:
        return fcntl.ioctl(self.fd, k.KVM_GET_TSC_KHZ, 0)

    def read_tsc(self) -> int:
        msrs = kvm_msrs([MSR_IA32_TSC])
        fcntl.ioctl(self.fd, k.KVM_GET_MSRS, msrs)
        return int(msrs.entries[0].data)

    def get_debugregs(self) -> KvmDebugregs:
        regs = KvmDebugregs()
        fcntl.ioctl(self.fd, k.KVM_GET_DEBUGREGS, regs)
        return regs

    def set_debugregs(self, regs: KvmDebugregs) -> None:
        fcntl.ioctl(self.fd, k.KVM_SET_DEBUGREGS, regs)

    def set_msrs(self, msrs: ctypes.Structure) -> None:
        """Write MSRs (a ``kvm_msrs`` from :func:`kvm_msrs`); KVM refusing any entry is an error."""
        written = fcntl.ioctl(self.fd, k.KVM_SET_MSRS, msrs)
        if written != msrs.nmsrs:
            raise OSError(f"KVM_SET_MSRS wrote {written} of {msrs.nmsrs} MSRs")

    def get_state_blob(self, request: int, size: int) -> bytes:
        """A vCPU state struct as raw bytes (xsave, xcrs, vcpu events), for a snapshot."""
        buf = bytearray(size)
        fcntl.ioctl(self.fd, request, buf)
        return bytes(buf)

    def set_state_blob(self, request: int, blob: bytes) -> None:
        fcntl.ioctl(self.fd, request, bytearray(blob))

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        """Read the MSRs KVM will give; one that it refuses is left out (not every listed MSR exists)."""
        values: dict[int, int] = {}
        msrs = kvm_msrs(indices)
        read = fcntl.ioctl(self.fd, k.KVM_GET_MSRS, msrs)
        for entry in list(msrs.entries)[:read]:
            values[int(entry.index)] = int(entry.data)
        if read < len(indices):  # KVM stops at the first it refuses: read the rest one by one
            for index in indices[read + 1 :]:
                one = kvm_msrs([index])
                if fcntl.ioctl(self.fd, k.KVM_GET_MSRS, one) == 1:
                    values[index] = int(one.entries[0].data)
        return values

    def kvm_run(self) -> None:
        """Enter the guest; returns at the next exit (raises InterruptedError on a kick)."""
        fcntl.ioctl(self.fd, k.KVM_RUN, 0)

    def close(self) -> None:
        if self.fd >= 0:
            del self.run
            self._run_map.close()
            os.close(self.fd)
            self.fd = -1
