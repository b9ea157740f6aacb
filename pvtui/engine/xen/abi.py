"""The Xen x86-64 PV ABI as the engine implements it: numbers, selectors, layouts.

Values come from Xen's public headers (``xen/include/public``), which are
the specification; ``docs/xen-abi.md`` lists what of it is implemented.
"""

from __future__ import annotations

import struct
from enum import IntEnum


class XenHypercall(IntEnum):
    set_trap_table = 0
    mmu_update = 1
    set_gdt = 2
    stack_switch = 3
    set_callbacks = 4
    fpu_taskswitch = 5
    sched_op_compat = 6
    platform_op = 7
    set_debugreg = 8
    get_debugreg = 9
    update_descriptor = 10
    memory_op = 12
    multicall = 13
    update_va_mapping = 14
    set_timer_op = 15
    event_channel_op_compat = 16
    xen_version = 17
    console_io = 18
    physdev_op_compat = 19
    grant_table_op = 20
    vm_assist = 21
    update_va_mapping_otherdomain = 22
    iret = 23
    vcpu_op = 24
    set_segment_base = 25
    mmuext_op = 26
    xsm_op = 27
    nmi_op = 28
    sched_op = 29
    callback_op = 30
    xenoprof_op = 31
    event_channel_op = 32
    physdev_op = 33
    hvm_op = 34
    sysctl = 35
    domctl = 36
    kexec_op = 37
    tmem_op = 38
    argo_op = 39
    xenpmu_op = 40
    dm_op = 41
    hypfs_op = 42


#: Names for the hypercall log: Xen's own op names.
HYPERCALL_NAMES = {int(op): op.name for op in XenHypercall}

# Xen errno values (xen/include/public/errno.h): a failing call returns the negation.
EPERM, ENOENT, ESRCH, EFAULT, EBUSY, EEXIST, EINVAL, ENOSPC, ENOSYS, EOPNOTSUPP = 1, 2, 3, 14, 16, 17, 22, 28, 38, 95
EAGAIN, E2BIG, ENOMEM, EACCES, ERANGE = 11, 7, 12, 13, 34

# Flat selectors Xen keeps for 64-bit PV guests (public/arch-x86/xen-x86_64.h).
FLAT_RING3_CS32 = 0xE023
FLAT_RING3_CS64 = 0xE033
FLAT_RING3_DS32 = 0xE02B
FLAT_RING3_SS64 = 0xE02B
FLAT_KERNEL_CS = FLAT_RING3_CS64
FLAT_KERNEL_SS = FLAT_RING3_SS64
#: The GDT's first byte Xen reserves for itself: guests own entries below it.
FIRST_RESERVED_GDT_BYTE = 0xE000
FIRST_RESERVED_GDT_ENTRY = FIRST_RESERVED_GDT_BYTE // 8
GDT_GUEST_PAGES = FIRST_RESERVED_GDT_BYTE // 4096

# start_info (public/xen.h), x86-64: 1168 bytes.
START_INFO_MAGIC = b"xen-3.0-x86_64"
START_INFO_SIZE = 1168
SI_NR_PAGES = 32
SI_SHARED_INFO = 40
SI_FLAGS = 48
SI_STORE_MFN = 56
SI_STORE_EVTCHN = 64
SI_CONSOLE = 72
SI_PT_BASE = 88
SI_NR_PT_FRAMES = 96
SI_MFN_LIST = 104
SI_MOD_START = 112
SI_MOD_LEN = 120
SI_CMD_LINE = 128
MAX_GUEST_CMDLINE = 1024
SI_FIRST_P2M_PFN = 1152
SI_NR_P2M_FRAMES = 1160
SIF_PRIVILEGED = 1
SIF_INITDOMAIN = 2

# shared_info (public/xen.h, arch-x86/xen.h)
MAX_VIRT_CPUS = 32
VCPU_INFO_SIZE = 64
VI_UPCALL_PENDING = 0
VI_UPCALL_MASK = 1
VI_PENDING_SEL = 8
VI_CR2 = 16
VI_TIME = 32
SHI_EVTCHN_PENDING = 2048
SHI_EVTCHN_MASK = 2560
SHI_WC_VERSION = 3072
SHI_WC_SEC = 3076
SHI_WC_NSEC = 3080
SHI_MAX_PFN = 3096

# trap_info, callbacks, iret (public/arch-x86/xen.h, callback.h)
TRAP_INFO = struct.Struct("<BBHxxxxQ")
TI_DPL_MASK = 3
TI_MASK_EVENTS = 4
CALLBACK_REGISTER = struct.Struct("<HHxxxxQ")
CALLBACK_UNREGISTER = struct.Struct("<H")
CALLBACKOP_register = 0
CALLBACKOP_unregister = 1
CALLBACKTYPE_event = 0
CALLBACKTYPE_failsafe = 1
CALLBACKTYPE_syscall = 2
CALLBACKTYPE_nmi = 4
CALLBACKTYPE_sysenter = 5
CALLBACKTYPE_syscall32 = 7
CALLBACKF_mask_events = 1
#: The frame the ``iret`` hypercall pops: rax r11 rcx flags rip cs rflags rsp ss.
IRET_CONTEXT = struct.Struct("<9Q")
VGCF_in_syscall = 1 << 8

# mmu_update / mmuext_op (public/xen.h)
MMU_UPDATE = struct.Struct("<QQ")
MMU_NORMAL_PT_UPDATE = 0
MMU_MACHPHYS_UPDATE = 1
MMU_PT_UPDATE_PRESERVE_AD = 2
MMUEXT_OP = struct.Struct("<IxxxxQQ")
MMUEXT_PIN_L1_TABLE = 0
MMUEXT_PIN_L2_TABLE = 1
MMUEXT_PIN_L3_TABLE = 2
MMUEXT_PIN_L4_TABLE = 3
MMUEXT_UNPIN_TABLE = 4
MMUEXT_NEW_BASEPTR = 5
MMUEXT_TLB_FLUSH_LOCAL = 6
MMUEXT_INVLPG_LOCAL = 7
MMUEXT_TLB_FLUSH_MULTI = 8
MMUEXT_INVLPG_MULTI = 9
MMUEXT_TLB_FLUSH_ALL = 10
MMUEXT_INVLPG_ALL = 11
MMUEXT_FLUSH_CACHE = 12
MMUEXT_SET_LDT = 13
MMUEXT_NEW_USER_BASEPTR = 15
MMUEXT_CLEAR_PAGE = 16
MMUEXT_COPY_PAGE = 17
MMUEXT_FLUSH_CACHE_GLOBAL = 18
MMUEXT_MARK_SUPER = 19
MMUEXT_UNMARK_SUPER = 20
UVMF_NONE = 0
UVMF_TLB_FLUSH = 1
UVMF_INVLPG = 2
UVMF_FLUSHTYPE_MASK = 3
DOMID_SELF = 0x7FF0

# xen_version (public/version.h)
XENVER_version = 0
XENVER_extraversion = 1
XENVER_compile_info = 2
XENVER_capabilities = 3
XENVER_changeset = 4
XENVER_platform_parameters = 5
XENVER_get_features = 6
XENVER_pagesize = 7
XENVER_guest_handle = 8
XENVER_commandline = 9
XENVER_build_id = 10
XENVER_extraversion2 = 11
XENVER_capabilities2 = 12
XENVER_changeset2 = 13
XENVER_commandline2 = 14
XEN_VERSION_MAJOR, XEN_VERSION_MINOR = 4, 19
XEN_EXTRAVERSION = b".0-pvtui"
XEN_CHANGESET = b"pvtui"
XEN_CAPABILITIES = b"xen-3.0-x86_64"
#: The hypervisor's virtual start (what XENVER_platform_parameters reports).
HYPERVISOR_VIRT_START = 0xFFFF800000000000

# console_io, sched_op, vm_assist, physdev, event channels, grant tables
CONSOLEIO_write = 0
CONSOLEIO_read = 1
SCHEDOP_yield = 0
SCHEDOP_block = 1
SCHEDOP_shutdown = 2
SCHEDOP_poll = 3
SCHEDOP_remote_shutdown = 4
SCHEDOP_shutdown_code = 5
SCHEDOP_watchdog = 6
SCHEDOP_pin_override = 7
VMASST_CMD_enable = 0
VMASST_CMD_disable = 1
VMASST_TYPE_4gb_segments = 0
VMASST_TYPE_4gb_segments_notify = 1
VMASST_TYPE_writable_pagetables = 2
VMASST_TYPE_pae_extended_cr3 = 3
VMASST_TYPE_architectural_iopl = 4
VMASST_TYPE_runstate_update_flag = 5
VMASST_TYPE_m2p_strict = 32
#: What a 64-bit PV guest may enable (Xen's VM_ASSIST_VALID for pv64).
VM_ASSIST_VALID = (
    (1 << VMASST_TYPE_4gb_segments)
    | (1 << VMASST_TYPE_4gb_segments_notify)
    | (1 << VMASST_TYPE_writable_pagetables)
    | (1 << VMASST_TYPE_pae_extended_cr3)
    | (1 << VMASST_TYPE_architectural_iopl)
    | (1 << VMASST_TYPE_runstate_update_flag)
    | (1 << VMASST_TYPE_m2p_strict)
)
PHYSDEVOP_set_iopl = 6
PHYSDEVOP_get_free_pirq = 23
EVTCHNOP_bind_interdomain = 0
EVTCHNOP_bind_virq = 1
EVTCHNOP_close = 3
EVTCHNOP_send = 4
EVTCHNOP_status = 5
EVTCHNOP_alloc_unbound = 6
EVTCHNOP_bind_ipi = 7
EVTCHNOP_bind_vcpu = 8
EVTCHNOP_unmask = 9
EVTCHNOP_reset = 10
EVTCHNOP_init_control = 11
EVTCHNOP_expand_array = 12
EVTCHNOP_set_priority = 13
EVTCHN_2L_NR_CHANNELS = 64 * 64
GNTTABOP_setup_table = 2
GNTTABOP_query_size = 6
GNTTABOP_set_version = 8
GNTTABOP_get_version = 10
#: Grant-table frames a domain may have (Xen's default max_grant_frames).
MAX_GRANT_FRAMES = 64
XENMEM_increase_reservation = 0
XENMEM_decrease_reservation = 1
XENMEM_populate_physmap = 6
XENMEM_maximum_ram_page = 2
XENMEM_current_reservation = 3
XENMEM_maximum_reservation = 4
XENMEM_add_to_physmap = 7
XENMEM_memory_map = 9
XENMEM_machine_memory_map = 10
XENMEM_maximum_gpfn = 14
VCPUOP_initialise = 0
VCPUOP_up = 1
VCPUOP_down = 2
VCPUOP_is_up = 3
VCPUOP_get_runstate_info = 4
VCPUOP_set_periodic_timer = 6
VCPUOP_stop_periodic_timer = 7
VCPUOP_set_singleshot_timer = 8
VCPUOP_stop_singleshot_timer = 9
VCPUOP_get_physid = 13

# Shutdown reasons (public/sched.h): poweroff 0, reboot 1, suspend 2, crash 3, watchdog 4, soft_reset 5
SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_suspend, SHUTDOWN_crash, SHUTDOWN_watchdog = 0, 1, 2, 3, 4

# x86 exceptions; vectors whose frame carries an error code.
X86_EXC_DE, X86_EXC_DB, X86_EXC_NMI, X86_EXC_BP, X86_EXC_OF, X86_EXC_BR, X86_EXC_UD, X86_EXC_NM = range(8)
X86_EXC_DF, X86_EXC_TS, X86_EXC_NP, X86_EXC_SS, X86_EXC_GP, X86_EXC_PF = 8, 10, 11, 12, 13, 14
X86_EXC_MF, X86_EXC_AC, X86_EXC_MC, X86_EXC_XM, X86_EXC_VE, X86_EXC_CP = 16, 17, 18, 19, 20, 21
EXC_HAS_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})

RFLAGS_CF, RFLAGS_TF, RFLAGS_IF, RFLAGS_IOPL, RFLAGS_NT = 1 << 0, 1 << 8, 1 << 9, 3 << 12, 1 << 14
RFLAGS_RF, RFLAGS_VM, RFLAGS_AC, RFLAGS_ID = 1 << 16, 1 << 17, 1 << 18, 1 << 21
#: RFLAGS bits a guest may set through iret (Xen masks the rest).
RFLAGS_GUEST_MASK = 0x3F7FD7

CR4_DE, CR4_TSD = 1 << 3, 1 << 2
#: CR4 as a 64-bit PV guest finds it (PAE, OSFXSR, OSXMMEXCPT); it may toggle only these bits.
GUEST_CR4 = 0x620
CR4_GUEST_WRITABLE = CR4_DE | CR4_TSD

# Page-table entry bits.
PTE_P, PTE_RW, PTE_US, PTE_PWT, PTE_PCD, PTE_A, PTE_D, PTE_PSE, PTE_G = 1, 2, 4, 8, 16, 32, 64, 128, 256
PTE_NX = 1 << 63
PTE_ADDR_MASK = 0x000FFFFFFFFFF000

# #PF error code bits.
PFEC_PRESENT, PFEC_WRITE, PFEC_USER, PFEC_RSVD, PFEC_INSN = 1, 2, 4, 8, 16
