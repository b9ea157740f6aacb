/* `workload=bench test=...`: measurements the engine benchmark reads off the console. */
#include "kernel.h"
#include "benchloops.h"

#define MAX_SAMPLES 20000
static u32 samples[MAX_SAMPLES];

static void sort_u32(u32 *a, u64 n)   /* heapsort: no recursion, no allocation */
{
    for (u64 start = n / 2; start-- > 0;) {
        for (u64 root = start; 2 * root + 1 < n;) {
            u64 child = 2 * root + 1;
            if (child + 1 < n && a[child] < a[child + 1])
                child++;
            if (a[root] >= a[child])
                break;
            u32 t = a[root]; a[root] = a[child]; a[child] = t;
            root = child;
        }
    }
    for (u64 end = n; end-- > 1;) {
        u32 t = a[0]; a[0] = a[end]; a[end] = t;
        for (u64 root = 0; 2 * root + 1 < end;) {
            u64 child = 2 * root + 1;
            if (child + 1 < end && a[child] < a[child + 1])
                child++;
            if (a[root] >= a[child])
                break;
            t = a[root]; a[root] = a[child]; a[child] = t;
            root = child;
        }
    }
}

static void bench_hypercall(u64 count)
{
    if (count > MAX_SAMPLES)
        count = MAX_SAMPLES;
    for (u64 i = 0; i < 100; i++)
        pv_hypercall1(__HYPERVISOR_xen_version, XENVER_version);
    for (u64 i = 0; i < count; i++) {
        u64 t0 = now_ns(0);
        pv_hypercall1(__HYPERVISOR_xen_version, XENVER_version);
        samples[i] = (u32)(now_ns(0) - t0);
    }
    sort_u32(samples, count);
    printk("bench hypercall n=%lu p50_ns=%u min_ns=%u\n", count, samples[count / 2], samples[0]);
}

static void bench_multicall(u64 count)
{
    static struct pv_multicall_entry batch[32];
    count -= count % 32;
    u64 t0 = now_ns(0);
    for (u64 i = 0; i < count; i++)
        pv_hypercall1(__HYPERVISOR_xen_version, XENVER_version);
    u64 single = now_ns(0) - t0;
    for (int i = 0; i < 32; i++) {
        batch[i].op = __HYPERVISOR_xen_version;
        batch[i].args[0] = XENVER_version;
    }
    t0 = now_ns(0);
    for (u64 i = 0; i < count / 32; i++)
        pv_hypercall2(__HYPERVISOR_multicall, (u64)batch, 32);
    u64 batched = now_ns(0) - t0;
    printk("bench multicall n=%lu single_ns=%lu batched_ns=%lu\n", count, single, batched);
}

static void bench_cpu(u64 iterations)
{
    u64 t0 = now_ns(0);
    u64 x = bench_cpu_loop(iterations);
    u64 t1 = now_ns(0);
    printk("bench cpu iterations=%lu ns=%lu checksum=%lx\n", iterations, t1 - t0, x);
}

static void bench_memory(u64 bytes, u64 passes)
{
    u64 base_pfn = (start_info->first_free_pfn + 511) & ~511ULL;
    if ((base_pfn << 12) + bytes > (balloon_top_pfn << 12)) {
        printk("bench memory: need %lu MiB above the kernel\n", bytes >> 20);
        return;
    }
    u64 t0 = now_ns(0);
    u64 sum = bench_mem_loop((volatile unsigned long long *)(base_pfn << 12), bytes, (int)passes);
    u64 t1 = now_ns(0);
    printk("bench memory bytes=%lu passes=%lu ns=%lu checksum=%lx\n", bytes, passes, t1 - t0, sum);
}

void bench_run(void)
{
    u64 count = cmdline_u64("count", 10000);
    if (cmdline_is("test", "hypercall"))
        bench_hypercall(count);
    else if (cmdline_is("test", "multicall"))
        bench_multicall(count);
    else if (cmdline_is("test", "cpu"))
        bench_cpu(count);
    else if (cmdline_is("test", "memory"))
        bench_memory(cmdline_u64("size", 256 << 20), cmdline_u64("passes", 2));
    else
        printk("bench: unknown test\n");
    hc_shutdown(SHUTDOWN_poweroff);
}
