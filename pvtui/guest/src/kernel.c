/* Boot and hypercall wrappers of the bundled pvtui guest kernel. */
#include "kernel.h"

struct pv_start_info *start_info;
volatile struct pv_shared_info *shared;

long hc_console(const char *buf, u64 len)
{
    return pv_hypercall3(__HYPERVISOR_console_io, CONSOLEIO_write, len, (u64)buf);
}

long hc_shutdown(u64 reason)
{
    return pv_hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, reason);
}

void yield_cpu(void)
{
    pv_hypercall1(__HYPERVISOR_sched_op, SCHEDOP_yield);
}

/* Arm the timer and block in one exit (a two-entry multicall). */
void sleep_until(u64 vcpu, u64 deadline_ns)
{
    static struct pv_multicall_entry calls[PV_MAX_VCPUS][2];
    struct pv_multicall_entry *mc = calls[vcpu];
    mc[0].op = __HYPERVISOR_set_timer_op;
    mc[0].args[0] = deadline_ns;
    mc[1].op = __HYPERVISOR_sched_op;
    mc[1].args[0] = SCHEDOP_block;
    pv_hypercall2(__HYPERVISOR_multicall, (u64)mc, 2);
}

static const char *workload_name(void)
{
    static char name[32];
    const char *v = cmdline_get("workload");
    unsigned long n = 0;
    if (!v)
        return "idle";
    while (v[n] && v[n] != ' ' && n < sizeof name - 1) {
        name[n] = v[n];
        n++;
    }
    name[n] = 0;
    return name;
}

void kernel_entry(struct pv_start_info *si, u64 vcpu)
{
    if (vcpu == 0) {
        start_info = si;
        shared = (volatile struct pv_shared_info *)si->shared_info;
        if (strncmp(si->magic, PV_START_INFO_MAGIC, sizeof si->magic))
            hc_shutdown(SHUTDOWN_crash);
        long version = pv_hypercall1(__HYPERVISOR_xen_version, XENVER_version);
        printk("pvtui guest kernel on ABI %ld.%ld: %u/%u vCPUs, %lu MiB, workload %s\n",
               version >> 16, version & 0xffff, si->nr_vcpus, si->max_vcpus,
               si->nr_pages >> 8, workload_name());
        control_init();
    } else {
        printk("vcpu %lu up\n", vcpu);
    }
    workload_run(vcpu);
    hc_shutdown(SHUTDOWN_crash);
}
