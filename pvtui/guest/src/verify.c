/*
 * The `verify` workload: proof that a save, restore or migration lost nothing.
 *
 * vCPU 0 keeps a working set of pages, each filled with a pattern derived
 * from the page's address and its generation number (kept in a table in
 * front of the set). It rewrites `rate` bytes a second (a page at a time,
 * the generation going up) and re-checks `check_rate` bytes a second; a
 * page that does not hold what its generation says is printed and crashes
 * the domain. It also checks that its clock never goes backwards and that
 * the engine's count of its hypercalls (XENVER_pvtui_hypercalls) never
 * falls behind the calls it made itself. The working set shrinks to fit
 * when the balloon takes frames away (pages it gave up are not checked).
 */
#include "kernel.h"

struct verify {
    u64 first;          /* first page of the generation table */
    u64 table_pages;
    u64 data;           /* first data page */
    u64 pages;          /* data pages wanted */
    u64 ws;             /* data pages in use now (fits the balloon) */
    u32 *gen;           /* generation of each data page; 0 = never written */
    u64 write_cursor, check_cursor;
    u64 written, checked, generation;
    u64 last_now;
    u64 calls_made;     /* hypercalls this loop made (each counted by the engine) */
    u64 engine_calls;   /* the engine's count when last asked */
};

static inline u64 pattern(u64 addr, u64 gen)
{
    u64 x = addr * 0x9E3779B97F4A7C15ULL ^ (gen + 1) * 0xC2B2AE3D27D4EB4FULL;
    return x ^ (x >> 29);
}

static void fail(const char *what, u64 a, u64 b, u64 c)
{
    printk("verify: MISMATCH %s %lx %lx %lx\n", what, a, b, c);
    hc_shutdown(SHUTDOWN_crash);
}

static void fill(struct verify *v, u64 index)
{
    u32 gen = v->gen[index] + 1;
    if (!gen)
        gen = 1;
    u64 base = (v->data + index) * PV_PAGE_SIZE;
    volatile u64 *words = (volatile u64 *)base;
    for (u64 w = 0; w < PV_PAGE_SIZE / 8; w++)
        words[w] = pattern(base + w * 8, gen);
    v->gen[index] = gen;
    v->written++;
}

static void check(struct verify *v, u64 index)
{
    u32 gen = v->gen[index];
    if (!gen)
        return;
    u64 base = (v->data + index) * PV_PAGE_SIZE;
    volatile u64 *words = (volatile u64 *)base;
    for (u64 w = 0; w < PV_PAGE_SIZE / 8; w++) {
        u64 want = pattern(base + w * 8, gen);
        if (words[w] != want)
            fail("page", base + w * 8, words[w], want);
    }
    v->checked++;
}

static void check_clock_and_counters(struct verify *v, u64 vcpu)
{
    u64 now = now_ns(vcpu);
    if (now < v->last_now)
        fail("clock went back", v->last_now, now, 0);
    v->last_now = now;
    long count = pv_hypercall1(__HYPERVISOR_xen_version, XENVER_pvtui_hypercalls);
    v->calls_made++;
    if (count < 0)
        return;   /* an engine without the query: nothing to compare */
    if ((u64)count < v->engine_calls + 1 || (u64)count < v->calls_made)
        fail("hypercall count", (u64)count, v->engine_calls, v->calls_made);
    v->engine_calls = (u64)count;
}

/* Pages above the balloon's top are gone: forget them, and fit the set below it. */
static void fit_balloon(struct verify *v)
{
    u64 top = balloon_top_pfn > 256 ? balloon_top_pfn - 256 : 0;
    u64 room = top > v->data ? top - v->data : 0;
    u64 ws = v->pages < room ? v->pages : room;
    for (u64 i = ws; i < v->ws; i++)
        v->gen[i] = 0;
    v->ws = ws;
}

void verify_run(u64 vcpu)
{
    static struct verify v;
    u64 bytes = cmdline_u64("wss", 16 << 20);
    u64 rate = cmdline_u64("rate", 64 << 20) / PV_PAGE_SIZE;
    u64 check_rate = cmdline_u64("check_rate", 128 << 20) / PV_PAGE_SIZE;
    const u64 slice_ns = 10 * NS_PER_MS;
    v.first = start_info->first_free_pfn;
    v.pages = bytes / PV_PAGE_SIZE;
    v.table_pages = (v.pages * sizeof(u32) + PV_PAGE_SIZE - 1) / PV_PAGE_SIZE;
    v.data = v.first + v.table_pages;
    v.gen = (u32 *)(v.first * PV_PAGE_SIZE);
    memset(v.gen, 0, v.table_pages * PV_PAGE_SIZE);
    fit_balloon(&v);
    for (u64 i = 0; i < v.ws; i++) {   /* the whole set first, so every page is checked */
        fill(&v, i);
        if ((i & 1023) == 0)
            control_poll(vcpu);
    }
    printk("verify: %lu pages, rewriting %lu and checking %lu pages/s\n", v.ws, rate, check_rate);
    u64 next_report = now_ns(vcpu) + 5 * NS_PER_SEC;
    for (;;) {
        control_poll(vcpu);
        fit_balloon(&v);
        u64 start = now_ns(vcpu);
        check_clock_and_counters(&v, vcpu);
        u64 writes = rate / 100 + (rate ? 1 : 0), checks = check_rate / 100 + 1;
        for (u64 i = 0; i < writes && v.ws; i++) {
            if (v.write_cursor >= v.ws) {
                v.write_cursor = 0;
                v.generation++;
            }
            fill(&v, v.write_cursor++);
        }
        for (u64 i = 0; i < checks && v.ws; i++) {
            if (v.check_cursor >= v.ws)
                v.check_cursor = 0;
            check(&v, v.check_cursor++);
        }
        report_used_pages(v.data + v.ws);
        if (start >= next_report) {
            printk("verify: ok: %lu pages written, %lu checked, pass %lu\n", v.written, v.checked, v.generation);
            v.calls_made++;
            next_report = start + 5 * NS_PER_SEC;
        }
        sleep_until(vcpu, start + slice_ns);
        v.calls_made += 3;   /* the multicall and its two entries */
    }
}
