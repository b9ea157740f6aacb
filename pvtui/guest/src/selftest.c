/*
 * `workload=selftest`: every hypercall with good and bad arguments. Each
 * case prints "selftest NAME rc=X want=Y ok|FAIL"; the engine tests check
 * the same calls again from the engine's own hypercall records.
 */
#include "kernel.h"

#define BAD_ADDR 0x7fff00000000ULL

static int passed, failed;

static void check(const char *name, long rc, long want)
{
    if (rc == want)
        passed++;
    else
        failed++;
    printk("selftest %s rc=%ld want=%ld %s\n", name, rc, want, rc == want ? "ok" : "FAIL");
}

static long hc(u64 nr, u64 a1, u64 a2, u64 a3)
{
    return pv_hypercall3(nr, a1, a2, a3);
}

static u64 frames[4];

static long reserve(u64 op, u64 list, u64 n, u32 order, u32 domid)
{
    struct pv_memory_reservation r = {list, n, order, domid};
    return hc(__HYPERVISOR_memory_op, op, (u64)&r, 0);
}

static void memory_cases(void)
{
    u64 mem = start_info->nr_pages;
    static volatile u64 probe[512] __attribute__((aligned(4096)));
    u64 probe_pfn = (u64)probe >> 12;
    probe[0] = 0x1234;
    frames[0] = probe_pfn;
    frames[1] = mem + 10;   /* outside the domain */
    check("memory_op_frame_outside", reserve(XENMEM_decrease_reservation, (u64)frames, 2, 0, DOMID_SELF), -PV_EINVAL);
    check("memory_op_nothing_applied", probe[0] == 0x1234, 1);
    check("memory_op_bad_reservation", hc(__HYPERVISOR_memory_op, XENMEM_decrease_reservation, BAD_ADDR, 0), -PV_EFAULT);
    check("memory_op_bad_extent_array", reserve(XENMEM_decrease_reservation, BAD_ADDR, 1, 0, DOMID_SELF), -PV_EFAULT);
    check("memory_op_bad_order", reserve(XENMEM_decrease_reservation, (u64)frames, 1, 10, DOMID_SELF), -PV_EINVAL);
    check("memory_op_other_domain", reserve(XENMEM_decrease_reservation, (u64)frames, 1, 0, 5), -PV_EPERM);
    frames[0] = 513;   /* not 2 MiB aligned */
    check("memory_op_unaligned_extent", reserve(XENMEM_decrease_reservation, (u64)frames, 1, 9, DOMID_SELF), -PV_EINVAL);
    check("memory_op_bad_subop", hc(__HYPERVISOR_memory_op, 42, 0, 0), -PV_EINVAL);
    check("memory_op_current", hc(__HYPERVISOR_memory_op, XENMEM_current_reservation, DOMID_SELF, 0), (long)mem);
    check("memory_op_maximum", hc(__HYPERVISOR_memory_op, XENMEM_maximum_reservation, DOMID_SELF, 0), (long)start_info->max_pages);
    frames[0] = probe_pfn;
    check("memory_op_decrease", reserve(XENMEM_decrease_reservation, (u64)frames, 1, 0, DOMID_SELF), 1);
    check("memory_op_released_reads_zero", probe[0] == 0, 1);
    check("memory_op_current_after_decrease", hc(__HYPERVISOR_memory_op, XENMEM_current_reservation, DOMID_SELF, 0), (long)mem - 1);
    check("memory_op_increase", reserve(XENMEM_increase_reservation, (u64)frames, 1, 0, DOMID_SELF), 1);
    check("memory_op_current_after_increase", hc(__HYPERVISOR_memory_op, XENMEM_current_reservation, DOMID_SELF, 0), (long)mem);
}

static void multicall_cases(void)
{
    static struct pv_multicall_entry mc[4];
    mc[0].op = __HYPERVISOR_xen_version;
    mc[0].args[0] = XENVER_version;
    mc[1].op = 99;
    mc[2].op = __HYPERVISOR_console_io;
    mc[2].args[0] = CONSOLEIO_write;
    mc[2].args[1] = 8;
    mc[2].args[2] = BAD_ADDR;
    mc[3].op = __HYPERVISOR_multicall;
    check("multicall", hc(__HYPERVISOR_multicall, (u64)mc, 4, 0), 0);
    check("multicall_entry_version", mc[0].result, (PV_ABI_VERSION_MAJOR << 16) | PV_ABI_VERSION_MINOR);
    check("multicall_entry_unknown", mc[1].result, -PV_ENOSYS);
    check("multicall_entry_fault", mc[2].result, -PV_EFAULT);
    check("multicall_entry_nested", mc[3].result, -PV_EINVAL);
    check("multicall_bad_array", hc(__HYPERVISOR_multicall, BAD_ADDR, 2, 0), -PV_EFAULT);
    check("multicall_too_many", hc(__HYPERVISOR_multicall, (u64)mc, PV_MULTICALL_MAX + 1, 0), -PV_EINVAL);
}

static void vcpu_cases(void)
{
    static struct pv_vcpu_context ctx;
    u64 max = start_info->max_vcpus;
    check("vcpu_op_is_up_self", hc(__HYPERVISOR_vcpu_op, VCPUOP_is_up, 0, 0), 1);
    check("vcpu_op_bad_id", hc(__HYPERVISOR_vcpu_op, VCPUOP_is_up, max, 0), -PV_ENOENT);
    check("vcpu_op_bad_subop", hc(__HYPERVISOR_vcpu_op, 50, 0, 0), -PV_EINVAL);
    check("vcpu_op_initialise_running", hc(__HYPERVISOR_vcpu_op, VCPUOP_initialise, 0, (u64)&ctx), -PV_EEXIST);
    check("vcpu_op_down_vcpu0", hc(__HYPERVISOR_vcpu_op, VCPUOP_down, 0, 0), -PV_EPERM);
    if (max > 1) {
        check("vcpu_op_initialise_bad_context", hc(__HYPERVISOR_vcpu_op, VCPUOP_initialise, max - 1, BAD_ADDR), -PV_EFAULT);
        if (!(shared->vcpu_online_mask & (1ULL << (max - 1))))
            check("vcpu_op_up_unwanted", hc(__HYPERVISOR_vcpu_op, VCPUOP_up, max - 1, 0), -PV_EPERM);
    }
}

static void event_and_timer_cases(void)
{
    check("evtchn_send_self", hc(__HYPERVISOR_event_channel_op, EVTCHNOP_send, PV_PORT_VCPU_BASE + 0, 0), 0);
    u64 t0 = now_ns(0);
    check("sched_block_pending_returns", hc(__HYPERVISOR_sched_op, SCHEDOP_block, 0, 0), 0);
    check("sched_block_was_immediate", now_ns(0) - t0 < 5 * NS_PER_MS, 1);
    __atomic_exchange_n(&shared->vcpu_info[0].evtchn_pending, 0, __ATOMIC_SEQ_CST);
    check("evtchn_bad_port", hc(__HYPERVISOR_event_channel_op, EVTCHNOP_send, 999, 0), -PV_EINVAL);
    check("evtchn_control_port_reserved", hc(__HYPERVISOR_event_channel_op, EVTCHNOP_send, PV_PORT_CONTROL, 0), -PV_EINVAL);
    check("evtchn_bad_subop", hc(__HYPERVISOR_event_channel_op, 3, 1, 0), -PV_EINVAL);
    t0 = now_ns(0);
    check("set_timer_op", hc(__HYPERVISOR_set_timer_op, t0 + 2 * NS_PER_MS, 0, 0), 0);
    check("sched_block_timer", hc(__HYPERVISOR_sched_op, SCHEDOP_block, 0, 0), 0);
    /* block also returns for an event: one that arrived meanwhile is not the timer's doing */
    for (int again = 0; again < 4 && shared->vcpu_info[0].evtchn_pending && now_ns(0) - t0 < 2 * NS_PER_MS; again++) {
        printk("selftest note: block woke for events %lx at %lu ns; blocking again\n",
               (u64)shared->vcpu_info[0].evtchn_pending, now_ns(0) - t0);
        __atomic_exchange_n(&shared->vcpu_info[0].evtchn_pending, 0, __ATOMIC_SEQ_CST);
        hc(__HYPERVISOR_sched_op, SCHEDOP_block, 0, 0);
    }
    u64 slept = now_ns(0) - t0;
    if (slept < 2 * NS_PER_MS)
        printk("selftest note: the timer block returned after %lu ns (deadline 2000000)\n", slept);
    check("sched_block_slept_until_deadline", slept >= 2 * NS_PER_MS, 1);
    check("set_timer_op_cancel", hc(__HYPERVISOR_set_timer_op, 0, 0, 0), 0);
    check("sched_yield", hc(__HYPERVISOR_sched_op, SCHEDOP_yield, 0, 0), 0);
    check("sched_bad_subop", hc(__HYPERVISOR_sched_op, 77, 0, 0), -PV_EINVAL);
    check("sched_shutdown_bad_reason", hc(__HYPERVISOR_sched_op, SCHEDOP_shutdown, 9, 0), -PV_EINVAL);
}

void selftest_run(void)
{
    static const char hello[] = "selftest console line\n";
    long version = (PV_ABI_VERSION_MAJOR << 16) | PV_ABI_VERSION_MINOR;
    check("xen_version", hc(__HYPERVISOR_xen_version, XENVER_version, 0, 0), version);
    check("xen_version_bad_subop", hc(__HYPERVISOR_xen_version, 99, 0, 0), -PV_EINVAL);
    check("console_write", hc(__HYPERVISOR_console_io, CONSOLEIO_write, sizeof hello - 1, (u64)hello), 0);
    check("console_bad_buffer", hc(__HYPERVISOR_console_io, CONSOLEIO_write, 16, BAD_ADDR), -PV_EFAULT);
    check("console_buffer_past_end", hc(__HYPERVISOR_console_io, CONSOLEIO_write, 8192, (start_info->nr_pages << 12) - 4096), -PV_EFAULT);
    check("console_too_long", hc(__HYPERVISOR_console_io, CONSOLEIO_write, PV_CONSOLE_MAX_WRITE + 1, (u64)hello), -PV_EINVAL);
    check("console_bad_subop", hc(__HYPERVISOR_console_io, 9, 1, (u64)hello), -PV_EINVAL);
    check("unknown_hypercall", hc(99, 0, 0, 0), -PV_ENOSYS);
    check("unknown_hypercall_huge", hc(0xFFFFFFFFULL, 0, 0, 0), -PV_ENOSYS);
    long rc;
    __asm__ volatile("outb %%al, $0xf2" : "=a"(rc) : "a"(__HYPERVISOR_xen_version) : "memory");
    check("hypercall_wrong_width", rc, -PV_EINVAL);
    memory_cases();
    multicall_cases();
    vcpu_cases();
    event_and_timer_cases();
    printk("selftest done: %d passed, %d failed\n", passed, failed);
    hc_shutdown(failed ? SHUTDOWN_crash : SHUTDOWN_poweroff);
}
