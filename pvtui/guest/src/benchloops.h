/* Loops shared by the guest's bench workload and bench/native.c, so the
 * guest-vs-native comparison runs the very same code. */
#ifndef BENCHLOOPS_H
#define BENCHLOOPS_H

static inline unsigned long long bench_cpu_loop(unsigned long long iterations)
{
    unsigned long long x = 0x9E3779B97F4A7C15ULL;
    for (unsigned long long i = 0; i < iterations; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x += i;
    }
    return x;
}

/* Write every word of [base, base + bytes) `passes` times: the first pass
 * touches fresh memory, the others rewrite it. */
static inline unsigned long long bench_mem_loop(volatile unsigned long long *base,
                                                unsigned long long bytes, int passes)
{
    unsigned long long words = bytes / 8, sum = 0;
    for (int p = 0; p < passes; p++)
        for (unsigned long long i = 0; i < words; i++)
            base[i] = i + (unsigned long long)p;
    for (unsigned long long i = 0; i < words; i += 4096)
        sum += base[i];
    return sum;
}

#endif
