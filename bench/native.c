/* The bench loops run natively on the host, built with the guest kernel's flags. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include "benchloops.h"

static unsigned long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "cpu")) {
        unsigned long long n = strtoull(argv[2], NULL, 0), t0 = now_ns();
        unsigned long long x = bench_cpu_loop(n);
        printf("bench cpu iterations=%llu ns=%llu checksum=%llx\n", n, now_ns() - t0, x);
        return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "memory")) {
        unsigned long long bytes = strtoull(argv[2], NULL, 0);
        int passes = atoi(argv[3]);
        /* Same backing as guest RAM: anonymous, THP-advised. */
        void *base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        madvise(base, bytes, MADV_HUGEPAGE);
        unsigned long long t0 = now_ns();
        unsigned long long sum = bench_mem_loop(base, bytes, passes);
        printf("bench memory bytes=%llu passes=%d ns=%llu checksum=%llx\n", bytes, passes, now_ns() - t0, sum);
        return 0;
    }
    fprintf(stderr, "usage: native cpu ITERATIONS | native memory BYTES PASSES\n");
    return 2;
}
