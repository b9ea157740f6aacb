"""The engine's side of the guest ABI: numbers and layouts from ``pv.h``.

``tests/test_abi_agreement.py`` compiles a probe against ``pv.h`` and checks
every constant and offset here, so the two cannot drift apart.
"""

from __future__ import annotations

import struct
from enum import IntEnum

ABI_VERSION_MAJOR = 1
ABI_VERSION_MINOR = 0
START_INFO_MAGIC = b"pvtui-abi-1"
HYPERCALL_PORT = 0xF2
MAX_VCPUS = 32
CONSOLE_MAX_WRITE = 65536
MULTICALL_MAX = 512
MAX_EXTENT_ORDER = 9
DOMID_SELF = 0x7FF0
PORT_CONTROL = 0
PORT_VCPU_BASE = 1


class Hypercall(IntEnum):
    memory_op = 12
    multicall = 13
    set_timer_op = 15
    xen_version = 17
    console_io = 18
    vcpu_op = 24
    sched_op = 29
    event_channel_op = 32


class Errno(IntEnum):
    """Xen errno values; a failing hypercall returns the negated value."""

    EPERM = 1
    ENOENT = 2
    ENOMEM = 12
    EFAULT = 14
    EBUSY = 16
    EEXIST = 17
    EINVAL = 22
    ENOSYS = 38


XENVER_version = 0
#: pvtui's query: the hypercalls the calling vCPU made so far, as the engine counts them.
XENVER_pvtui_hypercalls = 0x7076
CONSOLEIO_write = 0


class VcpuOp(IntEnum):
    initialise = 0
    up = 1
    down = 2
    is_up = 3


class SchedOp(IntEnum):
    yield_ = 0
    block = 1
    shutdown = 2


class ShutdownReason(IntEnum):
    poweroff = 0
    reboot = 1
    suspend = 2
    crash = 3


class MemoryOp(IntEnum):
    increase_reservation = 0
    decrease_reservation = 1
    current_reservation = 3
    maximum_reservation = 4


EVTCHNOP_send = 4

# struct pv_memory_reservation: extent_start, nr_extents, extent_order, domid
MEMORY_RESERVATION = struct.Struct("<QQII")
# struct pv_multicall_entry: op, result, args[6]
MULTICALL_ENTRY = struct.Struct("<Qq6Q")
# struct pv_vcpu_context: rip, rsp, rdi
VCPU_CONTEXT = struct.Struct("<QQQ")

# struct pv_start_info (offsets)
START_INFO = struct.Struct("<16sQQQQQIIQ")
START_INFO_CMDLINE_OFFSET = 1024
START_INFO_CMDLINE_SIZE = 1024

# struct pv_shared_info (offsets)
SI_CONTROL_SEQ = 0
SI_VCPU_ONLINE_MASK = 8
SI_BALLOON_TARGET_PAGES = 16
SI_MEMORY_PAGES = 24
SI_SHUTDOWN_REQUEST = 32
SI_GUEST_USED_PAGES = 40
SI_VCPU_INFO = 256
VCPU_INFO_SIZE = 64
VI_EVTCHN_PENDING = 0
VI_TIME = 16
# struct pv_vcpu_time_info: version, pad, tsc_timestamp, system_time, mul, shift
VCPU_TIME_INFO = struct.Struct("<IIQQIb3x")


def op_name(number: int) -> str:
    """Human name of a hypercall number, for logs and the UI."""
    try:
        return Hypercall(number).name
    except ValueError:
        return f"unknown_{number}"
