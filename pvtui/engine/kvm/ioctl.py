"""KVM ioctl request numbers, derived the way ``<linux/kvm.h>`` derives them.

``_IO``/``_IOR``/``_IOW``/``_IOWR`` follow ``<asm-generic/ioctl.h>``: the
number packs a direction (2 bits), the argument size (14 bits), the type
byte (``KVMIO`` = 0xAE) and the command number. Writing them out this way
keeps every constant checkable against the kernel header.
"""

from __future__ import annotations

_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = 8
_IOC_SIZESHIFT = 16
_IOC_DIRSHIFT = 30
_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2

KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << _IOC_DIRSHIFT) | (KVMIO << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _ior(nr: int, size: int) -> int:
    return _ioc(_IOC_READ, nr, size)


def _iow(nr: int, size: int) -> int:
    return _ioc(_IOC_WRITE, nr, size)


def _iowr(nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, size)


# Sizes of the argument structs (see structs.py for their layouts).
_SIZEOF_KVM_USERSPACE_MEMORY_REGION = 32
_SIZEOF_KVM_REGS = 144
_SIZEOF_KVM_SREGS = 312
_SIZEOF_KVM_CPUID2 = 8  # header only; entries follow (flexible array)
_SIZEOF_KVM_MSRS = 8  # header only; entries follow (flexible array)
_SIZEOF_KVM_DEBUGREGS = 128
_SIZEOF_KVM_XSAVE = 4096
_SIZEOF_KVM_XCRS = 392
_SIZEOF_KVM_VCPU_EVENTS = 64
_SIZEOF_KVM_MSR_LIST = 4  # header only; indices follow (flexible array)
_SIZEOF_KVM_DIRTY_LOG = 16

# System ioctls (on the /dev/kvm fd)
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, _SIZEOF_KVM_CPUID2)
KVM_GET_MSR_INDEX_LIST = _iowr(0x02, _SIZEOF_KVM_MSR_LIST)

# VM ioctls
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, _SIZEOF_KVM_USERSPACE_MEMORY_REGION)
KVM_GET_STATS_FD = _io(0xCE)
KVM_GET_DIRTY_LOG = _iow(0x42, _SIZEOF_KVM_DIRTY_LOG)

# vCPU ioctls
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, _SIZEOF_KVM_REGS)
KVM_SET_REGS = _iow(0x82, _SIZEOF_KVM_REGS)
KVM_GET_SREGS = _ior(0x83, _SIZEOF_KVM_SREGS)
KVM_SET_SREGS = _iow(0x84, _SIZEOF_KVM_SREGS)
KVM_GET_MSRS = _iowr(0x88, _SIZEOF_KVM_MSRS)
KVM_SET_MSRS = _iow(0x89, _SIZEOF_KVM_MSRS)
KVM_SET_CPUID2 = _iow(0x90, _SIZEOF_KVM_CPUID2)
KVM_GET_TSC_KHZ = _io(0xA3)
KVM_GET_DEBUGREGS = _ior(0xA1, _SIZEOF_KVM_DEBUGREGS)
KVM_SET_DEBUGREGS = _iow(0xA2, _SIZEOF_KVM_DEBUGREGS)
KVM_GET_VCPU_EVENTS = _ior(0x9F, _SIZEOF_KVM_VCPU_EVENTS)
KVM_SET_VCPU_EVENTS = _iow(0xA0, _SIZEOF_KVM_VCPU_EVENTS)
KVM_GET_XSAVE = _ior(0xA4, _SIZEOF_KVM_XSAVE)
KVM_SET_XSAVE = _iow(0xA5, _SIZEOF_KVM_XSAVE)
KVM_GET_XCRS = _ior(0xA6, _SIZEOF_KVM_XCRS)
KVM_SET_XCRS = _iow(0xA7, _SIZEOF_KVM_XCRS)

KVM_API_VERSION = 12

# Capabilities (KVM_CAP_*)
KVM_CAP_NR_VCPUS = 9
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_SYNC_REGS = 74
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_USER_MEMORY = 3

# kvm_run.exit_reason values (KVM_EXIT_*)
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24

EXIT_REASON_NAMES = {
    value: name.removeprefix("KVM_EXIT_").lower()
    for name, value in dict(globals()).items()
    if name.startswith("KVM_EXIT_")
}

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

# kvm_sync_regs selector bits (kvm_valid_regs / kvm_dirty_regs)
KVM_SYNC_X86_REGS = 1 << 0

# kvm_userspace_memory_region.flags
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
