/*
 * The domain's workload, chosen by `workload=` on the command line.
 * Every loop polls the control channel, so the engine's requests (balloon,
 * vCPU unplug, shutdown) are met within one slice even while spinning.
 */
#include "kernel.h"

static inline int event_pending(u64 vcpu)
{
    return shared->vcpu_info[vcpu].evtchn_pending != 0;
}

static void idle_loop(u64 vcpu)
{
    for (;;) {
        control_poll(vcpu);
        sleep_until(vcpu, 0);
    }
}

static volatile u64 burn_sink;

/* Busy for `duty` percent of each `period`; `aligned` puts every vCPU's
 * busy phase at the same time (bursts). */
static void duty_loop(u64 vcpu, u64 duty, u64 period_ns, int aligned)
{
    if (duty > 100)
        duty = 100;
    for (;;) {
        control_poll(vcpu);
        u64 start = now_ns(vcpu);
        if (aligned)
            start -= start % period_ns;
        u64 busy_end = start + period_ns / 100 * duty;
        u64 x = burn_sink;
        while (now_ns(vcpu) < busy_end) {
            for (int i = 0; i < 2000; i++)
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            if (event_pending(vcpu))
                control_poll(vcpu);
        }
        burn_sink = x;
        if (duty < 100)
            sleep_until(vcpu, start + period_ns);
    }
}

/* Keep a working set resident and rewrite it at `rate` bytes per second;
 * the set shrinks to fit when the balloon takes frames away. */
static void memory_loop(u64 vcpu)
{
    u64 wss_pages = cmdline_u64("wss", 32 << 20) / PV_PAGE_SIZE;
    u64 rate = cmdline_u64("touch_rate", 64 << 20);
    u64 first = start_info->first_free_pfn;
    const u64 slice_ns = 10 * NS_PER_MS;
    u64 cursor = 0, touched = 0, generation = 0;
    for (;;) {
        control_poll(vcpu);
        u64 limit = balloon_top_pfn > first + 256 ? balloon_top_pfn - 256 - first : 0;
        u64 ws = wss_pages < limit ? wss_pages : limit;
        if (touched > ws)
            touched = ws;
        u64 start = now_ns(vcpu);
        u64 budget = rate ? rate / 100 / PV_PAGE_SIZE + 1 : ws;
        if (!rate && touched >= ws)
            budget = 0;
        for (u64 i = 0; i < budget && ws; i++) {
            if (cursor >= ws) {
                cursor = 0;
                generation++;
            }
            volatile u64 *page = (volatile u64 *)((first + cursor) * PV_PAGE_SIZE);
            for (int w = 0; w < 512; w += 8)
                page[w] = generation + w;
            cursor++;
            if (touched < cursor)
                touched = cursor;
            if ((i & 255) == 0 && event_pending(vcpu))
                break;
        }
        report_used_pages(first + touched);
        if (rate)
            sleep_until(vcpu, start + slice_ns);
        else if (touched >= ws)
            sleep_until(vcpu, 0);   /* all resident: nothing to do until the engine asks */
    }
}

/* Console lines and yields at the configured rates. */
static void chatty_loop(u64 vcpu)
{
    u64 lines = cmdline_u64("lines_per_sec", 2);
    u64 yields = cmdline_u64("yields_per_sec", 50);
    u64 now = now_ns(vcpu);
    u64 next_line = now, next_yield = now, line_no = 0;
    for (;;) {
        control_poll(vcpu);
        now = now_ns(vcpu);
        if (vcpu == 0 && lines && now >= next_line) {
            printk("chatty: line %lu at %lu ms\n", ++line_no, now / NS_PER_MS);
            next_line += NS_PER_SEC / lines;
        }
        if (yields && now >= next_yield) {
            yield_cpu();
            next_yield += NS_PER_SEC / yields;
        }
        u64 wake = 0;
        if (vcpu == 0 && lines)
            wake = next_line;
        if (yields && (!wake || next_yield < wake))
            wake = next_yield;
        sleep_until(vcpu, wake);
    }
}

void workload_run(u64 vcpu)
{
    if (cmdline_is("workload", "cpu"))
        duty_loop(vcpu, cmdline_u64("duty", 100), cmdline_u64("period_ms", 100) * NS_PER_MS, 0);
    else if (cmdline_is("workload", "bursty"))
        duty_loop(vcpu, cmdline_u64("duty", 30), cmdline_u64("period_ms", 5000) * NS_PER_MS, 1);
    else if (cmdline_is("workload", "memory") && vcpu == 0)
        memory_loop(vcpu);
    else if (cmdline_is("workload", "chatty"))
        chatty_loop(vcpu);
    else if (cmdline_is("workload", "selftest") && vcpu == 0)
        selftest_run();
    else if (cmdline_is("workload", "bench") && vcpu == 0)
        bench_run();
    else if (cmdline_is("workload", "verify") && vcpu == 0)
        verify_run(vcpu);
    idle_loop(vcpu);
}
