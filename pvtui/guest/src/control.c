/*
 * Obeying the engine through the shared-info page: shutdown requests, the
 * balloon target and the set of online vCPUs. vCPU 0 owns the balloon and
 * brings vCPUs up; every other vCPU takes itself down when asked.
 */
#include "kernel.h"

volatile u64 balloon_top_pfn;
static u64 seen_seq[PV_MAX_VCPUS];
static u64 extents[512];
static u64 kernel_pages;

void report_used_pages(u64 pages)
{
    shared->guest_used_pages = pages;
}

static u64 balloon_floor(void)
{
    return kernel_pages + 256;   /* keep 1 MiB of free frames for the kernel itself */
}

static long reservation(u64 op, u64 n, u32 order)
{
    struct pv_memory_reservation r = {(u64)extents, n, order, DOMID_SELF};
    return pv_hypercall2(__HYPERVISOR_memory_op, op, (u64)&r);
}

/* Give frames back from the top, in 2 MiB extents where aligned. */
static void balloon_shrink(u64 target)
{
    while (balloon_top_pfn > target) {
        u64 top = balloon_top_pfn, n = 0;
        u32 order = (top % 512 == 0 && top - 512 >= target) ? 9 : 0;
        while (n < 512) {
            u64 step = 1ULL << order;
            if (top < target + step)
                break;
            if (order == 0 && n && top % 512 == 0 && top - 512 >= target)
                break;
            top -= step;
            extents[n++] = top;
        }
        balloon_top_pfn = top;   /* the working set stops below top before release */
        long rc = reservation(XENMEM_decrease_reservation, n, order);
        if (rc != (long)n) {
            printk("balloon: decrease_reservation failed (%ld)\n", rc);
            balloon_top_pfn = top + (n << order);
            return;
        }
    }
}

static void balloon_grow(u64 target)
{
    while (balloon_top_pfn < target) {
        u64 top = balloon_top_pfn, n = 0;
        u32 order = (top % 512 == 0 && top + 512 <= target) ? 9 : 0;
        while (n < 512) {
            u64 step = 1ULL << order;
            if (top + step > target)
                break;
            if (order == 0 && n && top % 512 == 0 && top + 512 <= target)
                break;
            extents[n++] = top;
            top += step;
        }
        long rc = reservation(XENMEM_increase_reservation, n, order);
        if (rc != (long)n) {
            printk("balloon: increase_reservation failed (%ld)\n", rc);
            return;
        }
        balloon_top_pfn = top;
    }
}

static void balloon_adjust(void)
{
    u64 target = shared->balloon_target_pages;
    u64 present = shared->memory_pages;
    if (target < balloon_floor())
        target = balloon_floor();
    if (target > present)
        target = present;
    if (target < balloon_top_pfn)
        balloon_shrink(target);
    else if (target > balloon_top_pfn)
        balloon_grow(target);
}

static void vcpus_reconcile(void)
{
    u64 want = shared->vcpu_online_mask;
    for (u64 id = 1; id < start_info->max_vcpus; id++) {
        if (!(want & (1ULL << id)))
            continue;
        if (pv_hypercall2(__HYPERVISOR_vcpu_op, VCPUOP_is_up, id) == 0)
            pv_hypercall2(__HYPERVISOR_vcpu_op, VCPUOP_up, id);
    }
}

void control_init(void)
{
    kernel_pages = start_info->first_free_pfn;
    balloon_top_pfn = start_info->nr_pages;
    report_used_pages(kernel_pages);
    control_poll(0);
}

void control_poll(u64 vcpu)
{
    __atomic_exchange_n(&shared->vcpu_info[vcpu].evtchn_pending, 0, __ATOMIC_SEQ_CST);
    u64 seq = shared->control_seq;
    if (seq == seen_seq[vcpu])
        return;
    seen_seq[vcpu] = seq;
    if (vcpu == 0) {
        u32 request = shared->shutdown_request;
        if (request) {
            printk("shutdown requested by the engine (reason %u)\n", request - 1);
            hc_shutdown(request - 1);
        }
        balloon_adjust();
        vcpus_reconcile();
        return;
    }
    if (!(shared->vcpu_online_mask & (1ULL << vcpu))) {
        printk("vcpu %lu going offline\n", vcpu);
        long rc = pv_hypercall2(__HYPERVISOR_vcpu_op, VCPUOP_down, vcpu);
        if (rc == 0)
            printk("vcpu %lu back online\n", vcpu);
        seen_seq[vcpu] = 0;   /* look again: the mask may have changed meanwhile */
    }
}
