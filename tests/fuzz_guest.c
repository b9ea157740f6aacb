/*
 * A hostile guest for tests/test_fuzz.py: seeded random hypercalls against
 * the engine, every result checked against the documented set (docs/abi.md):
 * a count or 0, or a negated errno from the ABI's list. Calls that would end
 * or stall this guest on purpose (sched_op shutdown and block) are left out;
 * everything else gets random sub-ops and arguments, pointers into its own
 * scratch memory, past its RAM, or anywhere, except that a frame list (the
 * balloon) or a batch of calls it hands over is its own or outside its RAM:
 * a guest that gives back its own code crashes, as it should.
 */
#include "pv.h"

#define CALLS 100000
#define PAGES 8
#define VICTIM_PAGES 512
/* Frames it may give back, in whole extents of any order up to 9 (2 MiB, hence the alignment). */
static volatile pv_u8 victim[VICTIM_PAGES * 4096] __attribute__((aligned(2 << 20)));
static volatile pv_u8 area[PAGES * 4096] __attribute__((aligned(4096)));    /* structs, arrays, buffers */
static pv_u64 state;

static pv_u64 rnd(void)
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ULL;
}

static void put64(volatile pv_u8 *p, pv_u64 v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (pv_u8)(v >> (8 * i));
}

static void say(const char *s)
{
    pv_u64 n = 0;
    while (s[n])
        n++;
    pv_hypercall3(__HYPERVISOR_console_io, CONSOLEIO_write, n, (pv_u64)s);
}

static void say_num(pv_u64 v)
{
    char buf[24];
    int i = 23;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    say(&buf[i]);
}

/* A pointer the engine must check: into our area, just past RAM, or anywhere. */
static pv_u64 pointer(pv_u64 ram_end)
{
    switch (rnd() % 4) {
    case 0:
    case 1: return (pv_u64)area + rnd() % sizeof area;
    case 2: return ram_end - 64 + rnd() % 128;
    default: return rnd();
    }
}

/* A pointer the engine must refuse: straddling the end of RAM or past it (never our own frames). */
static pv_u64 outside(pv_u64 ram_end)
{
    return rnd() % 2 ? ram_end - 7 + rnd() % 64 : ram_end + rnd();
}

static pv_u64 number(void)
{
    switch (rnd() % 4) {
    case 0: return rnd() % 8;
    case 1: return rnd() % 70000;
    case 2: return (pv_u64)-(pv_s64)(rnd() % 4);
    default: return rnd();
    }
}

static const pv_u64 ops[] = {
    __HYPERVISOR_memory_op, __HYPERVISOR_multicall, __HYPERVISOR_set_timer_op, __HYPERVISOR_xen_version,
    __HYPERVISOR_console_io, __HYPERVISOR_vcpu_op, __HYPERVISOR_sched_op, __HYPERVISOR_event_channel_op,
};

/* One random call (op and five args), made safe only against ending or stalling ourselves. */
static void make_call(pv_u64 ram_end, pv_u64 *op, pv_u64 a[5], int depth)
{
    *op = rnd() % 8 ? ops[rnd() % 8] : rnd() % 2 ? rnd() % 64 : rnd();  /* known, unknown, any 64-bit number */
    for (int i = 0; i < 5; i++)
        a[i] = rnd() % 2 ? number() : pointer(ram_end);
    if (*op == __HYPERVISOR_sched_op && (a[0] == SCHEDOP_block || a[0] == SCHEDOP_shutdown))
        a[0] = rnd() % 2 ? SCHEDOP_yield : 3 + rnd() % 100;
    if (*op == __HYPERVISOR_memory_op && (a[0] <= XENMEM_decrease_reservation || rnd() % 2)) {
        /* A reservation struct in our area naming our victim frames, or garbage. */
        volatile pv_u8 *r = area + (rnd() % (PAGES - 1)) * 4096;
        volatile pv_u8 *list = r + 64;
        pv_u64 count = rnd() % 2 ? rnd() % 8 : number();
        pv_u64 order = rnd() % 3 ? 0 : rnd() % 12;
        pv_u64 aligned = ~((1ULL << (order > 9 ? 9 : order)) - 1);
        for (int i = 0; i < 8; i++)
            put64(list + 8 * i, rnd() % 4 ? ((pv_u64)victim >> 12) + (rnd() % VICTIM_PAGES & aligned) : rnd());
        put64(r, rnd() % 4 ? (pv_u64)list : outside(ram_end));
        put64(r + 8, count);
        put64(r + 16, order | ((pv_u64)(rnd() % 4 ? DOMID_SELF : rnd() % 0x8000) << 32));
        a[0] = rnd() % 6;
        a[1] = rnd() % 4 ? (pv_u64)r : outside(ram_end);
        if (a[0] >= 3)
            a[1] = rnd() % 2 ? DOMID_SELF : number();
    }
    if (*op == __HYPERVISOR_multicall) {
        if (depth > 0) {
            *op = __HYPERVISOR_multicall;  /* nested: the engine must refuse it */
            return;
        }
        pv_u64 n = rnd() % 9;
        volatile pv_u8 *entries = area + (PAGES - 1) * 4096;
        for (pv_u64 i = 0; i < n && i < 64; i++) {
            pv_u64 eop, ea[5];
            make_call(ram_end, &eop, ea, depth + 1);
            put64(entries + 64 * i, eop);
            for (int k = 0; k < 5; k++)
                put64(entries + 64 * i + 16 + 8 * k, ea[k]);
        }
        a[0] = rnd() % 4 ? (pv_u64)entries : outside(ram_end);
        a[1] = rnd() % 4 ? n : number();
        if (a[0] == (pv_u64)entries && a[1] > 64)
            a[1] = n;
    }
}

static int documented(long r)
{
    if (r >= 0)
        return 1;
    switch (-r) {
    case PV_EPERM: case PV_ENOENT: case PV_ENOMEM: case PV_EFAULT:
    case PV_EBUSY: case PV_EEXIST: case PV_EINVAL: case PV_ENOSYS:
        return 1;
    }
    return 0;
}

__attribute__((force_align_arg_pointer, noreturn))
void _start(struct pv_start_info *si, unsigned long vcpu)
{
    pv_u64 seed = 0;
    const char *c = si->cmdline;
    while (*c && !(c[0] == 's' && c[1] == 'e' && c[2] == 'e' && c[3] == 'd' && c[4] == '='))
        c++;
    if (*c)
        for (c += 5; *c >= '0' && *c <= '9'; c++)
            seed = seed * 10 + (pv_u64)(*c - '0');
    state = seed * 0x9E3779B97F4A7C15ULL + 1;
    pv_u64 ram_end = si->max_pages * PV_PAGE_SIZE;
    pv_u64 bad = 0;
    for (pv_u64 i = 0; i < CALLS; i++) {
        pv_u64 op, a[5];
        make_call(ram_end, &op, a, 0);
        long r = pv_hypercall5(op, a[0], a[1], a[2], a[3], a[4]);
        if (!documented(r)) {
            if (bad++ < 5) {
                say("\nfuzz: undocumented result ");
                say_num((pv_u64)-r);
                say(" from op ");
                say_num(op);
                say("\n");
            }
        }
    }
    for (int i = 0; i < 3000; i++)  /* ~0.1 s: the console's rate limit has room for the summary again */
        pv_hypercall2(__HYPERVISOR_sched_op, SCHEDOP_yield, 0);
    say("\nfuzz done: ");
    say_num(CALLS);
    say(" calls, ");
    say_num(bad);
    say(" undocumented results, seed ");
    say_num(seed);
    say("\n");
    pv_hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, SHUTDOWN_poweroff);
    for (;;)
        ;
}
