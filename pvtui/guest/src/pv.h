/*
 * pv.h — the pvtui paravirtual guest ABI, version 1.0.
 *
 * The one C header a guest kernel needs. It agrees with docs/abi.md (the
 * prose) and pvtui/engine/abi.py (the engine's side); tests check all three
 * against each other. Freestanding: it needs only a C compiler.
 */
#ifndef PVTUI_PV_H
#define PVTUI_PV_H

typedef unsigned char      pv_u8;
typedef unsigned short     pv_u16;
typedef unsigned int       pv_u32;
typedef unsigned long long pv_u64;
typedef long long          pv_s64;
typedef signed char        pv_s8;

#define PV_ABI_VERSION_MAJOR 1
#define PV_ABI_VERSION_MINOR 0
#define PV_START_INFO_MAGIC  "pvtui-abi-1"

/* ---- Hypercall transport: `out %eax, $0xf2`, args rdi rsi rdx r10 r8, result rax ---- */
#define PV_HYPERCALL_PORT 0xF2

#define __HYPERVISOR_memory_op         12
#define __HYPERVISOR_multicall         13
#define __HYPERVISOR_set_timer_op      15
#define __HYPERVISOR_xen_version       17
#define __HYPERVISOR_console_io        18
#define __HYPERVISOR_vcpu_op           24
#define __HYPERVISOR_sched_op          29
#define __HYPERVISOR_event_channel_op  32

/* Xen errno values returned (negated) in rax */
#define PV_EPERM   1
#define PV_ENOENT  2
#define PV_ENOMEM 12
#define PV_EFAULT 14
#define PV_EBUSY  16
#define PV_EEXIST 17
#define PV_EINVAL 22
#define PV_ENOSYS 38

/* xen_version */
#define XENVER_version 0               /* returns (major << 16) + minor */
#define XENVER_pvtui_hypercalls 0x7076 /* pvtui: hypercalls this vCPU made, as the engine counts them */

/* console_io */
#define CONSOLEIO_write 0              /* arg2 = length (<= PV_CONSOLE_MAX_WRITE), arg3 = buffer */
#define PV_CONSOLE_MAX_WRITE 65536

/* vcpu_op: arg2 = vCPU id */
#define VCPUOP_initialise 0            /* arg3 = address of struct pv_vcpu_context; vCPU must be down */
#define VCPUOP_up         1            /* start (or resume) a vCPU the engine wants online */
#define VCPUOP_down       2            /* stop a vCPU; on itself it returns when brought up again */
#define VCPUOP_is_up      3            /* returns 1 if up, 0 if down */

/* sched_op */
#define SCHEDOP_yield    0
#define SCHEDOP_block    1             /* until an event is pending on this vCPU or its timer expires */
#define SCHEDOP_shutdown 2             /* arg2 = reason */
#define SHUTDOWN_poweroff 0
#define SHUTDOWN_reboot   1
#define SHUTDOWN_suspend  2
#define SHUTDOWN_crash    3

/* memory_op */
#define XENMEM_increase_reservation 0  /* arg2 = address of struct pv_memory_reservation */
#define XENMEM_decrease_reservation 1
#define XENMEM_current_reservation  3  /* arg2 = DOMID_SELF; returns pages held */
#define XENMEM_maximum_reservation  4  /* arg2 = DOMID_SELF; returns pages the domain may hold */
#define DOMID_SELF 0x7FF0
#define PV_MAX_EXTENT_ORDER 9          /* 2 MiB extents */

/* event_channel_op */
#define EVTCHNOP_send 4                /* arg2 = port */
#define PV_PORT_CONTROL 0              /* engine -> every online vCPU: shared-info control changed */
#define PV_PORT_VCPU_BASE 1            /* port 1 + n raises an event on vCPU n (an IPI) */

/* multicall */
#define PV_MULTICALL_MAX 512

#define PV_MAX_VCPUS 32
#define PV_PAGE_SIZE 4096ULL
#define PV_VCPU_STACK_SIZE 16384ULL

struct pv_memory_reservation {         /* 24 bytes */
    pv_u64 extent_start;               /* address of a pv_u64 array of frame numbers */
    pv_u64 nr_extents;
    pv_u32 extent_order;               /* 0 = 4 KiB, 9 = 2 MiB (frames aligned to the order) */
    pv_u32 domid;                      /* DOMID_SELF */
};

struct pv_multicall_entry {            /* 64 bytes */
    pv_u64 op;
    pv_s64 result;                     /* written by the engine */
    pv_u64 args[6];                    /* args[0..4] = arg1..arg5; args[5] reserved */
};

struct pv_vcpu_context {               /* VCPUOP_initialise */
    pv_u64 rip;
    pv_u64 rsp;                        /* 0 = the vCPU's reserved stack */
    pv_u64 rdi;                        /* 0 = the start-info address */
};

/* Start-info: one page at rdi on every vCPU's entry. */
struct pv_start_info {
    char   magic[16];                  /* PV_START_INFO_MAGIC, NUL padded */
    pv_u64 nr_pages;                   /* pages of RAM at boot (memory:) */
    pv_u64 max_pages;                  /* pages the identity map covers (maxmem:) */
    pv_u64 shared_info;                /* address of struct pv_shared_info */
    pv_u64 first_free_pfn;             /* frames below hold boot structures, kernel, stacks */
    pv_u64 stack_base;                 /* vCPU n's stack: [stack_base + n*16K, +16K) */
    pv_u32 nr_vcpus;                   /* vCPUs online at boot */
    pv_u32 max_vcpus;
    pv_u64 kernel_end;                 /* first byte after the loaded image */
    pv_u8  reserved[1024 - 72];
    char   cmdline[1024];              /* at offset 1024: "workload=cpu duty=50 ..." */
};

/* Xen's vcpu_time_info: ns = system_time + (((tsc - tsc_timestamp) << shift) * mul >> 32),
 * a negative shift meaning a right shift. Read under `version` (odd = being updated). */
struct pv_vcpu_time_info {             /* 32 bytes */
    pv_u32 version;
    pv_u32 pad0;
    pv_u64 tsc_timestamp;
    pv_u64 system_time;                /* ns of the engine's monotonic clock */
    pv_u32 tsc_to_system_mul;
    pv_s8  tsc_shift;
    pv_u8  pad1[3];
};

struct pv_vcpu_info {                  /* 64 bytes */
    pv_u64 evtchn_pending;             /* bit p = port p pending; the guest clears (atomically) */
    pv_u64 pad0;
    struct pv_vcpu_time_info time;
    pv_u64 pad1[2];
};

struct pv_shared_info {                /* one page, address in start-info */
    /* engine -> guest; each change bumps control_seq, then raises PV_PORT_CONTROL */
    pv_u64 control_seq;
    pv_u64 vcpu_online_mask;           /* vCPUs the engine wants online */
    pv_u64 balloon_target_pages;       /* pages the guest should hold */
    pv_u64 memory_pages;               /* pages of guest-physical RAM present now */
    pv_u32 shutdown_request;           /* 0 = none, else 1 + SHUTDOWN_* reason asked for */
    pv_u32 pad0;
    /* guest -> engine */
    pv_u64 guest_used_pages;           /* pages the guest really uses (kernel + working set) */
    pv_u64 reserved[26];
    struct pv_vcpu_info vcpu_info[PV_MAX_VCPUS];  /* at offset 256 */
};

#if defined(__GNUC__) && !defined(__ASSEMBLER__)
static inline long pv_hypercall5(pv_u64 nr, pv_u64 a1, pv_u64 a2, pv_u64 a3, pv_u64 a4, pv_u64 a5)
{
    register pv_u64 r10 __asm__("r10") = a4;
    register pv_u64 r8 __asm__("r8") = a5;
    long ret;
    __asm__ volatile("outl %%eax, $0xf2"
                     : "=a"(ret)
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8)
                     : "memory");
    return ret;
}
#define pv_hypercall3(nr, a1, a2, a3) pv_hypercall5((nr), (a1), (a2), (a3), 0, 0)
#define pv_hypercall2(nr, a1, a2)     pv_hypercall5((nr), (a1), (a2), 0, 0, 0)
#define pv_hypercall1(nr, a1)         pv_hypercall5((nr), (a1), 0, 0, 0, 0)

static inline pv_u64 pv_rdtsc(void)
{
    pv_u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((pv_u64)hi << 32) | lo;
}

/* The engine's monotonic clock in ns, read without an exit. */
static inline pv_u64 pv_clock_ns(volatile struct pv_vcpu_time_info *t)
{
    pv_u32 version;
    pv_u64 ns;
    do {
        version = t->version;
        __asm__ volatile("" ::: "memory");
        pv_u64 delta = pv_rdtsc() - t->tsc_timestamp;
        if ((pv_s64)delta < 0)
            delta = 0;
        if (t->tsc_shift >= 0)
            delta <<= t->tsc_shift;
        else
            delta >>= -t->tsc_shift;
        ns = t->system_time + (pv_u64)(((unsigned __int128)delta * t->tsc_to_system_mul) >> 32);
        __asm__ volatile("" ::: "memory");
    } while ((version & 1) || version != t->version);
    return ns;
}
#endif

#endif /* PVTUI_PV_H */
