/* Internal interfaces of the bundled pvtui guest kernel. */
#ifndef KERNEL_H
#define KERNEL_H

#include "pv.h"

typedef pv_u64 u64;
typedef pv_u32 u32;
typedef pv_s64 s64;

#define NS_PER_MS 1000000ULL
#define NS_PER_SEC 1000000000ULL

extern struct pv_start_info *start_info;
extern volatile struct pv_shared_info *shared;

/* lib.c */
void *memset(void *dst, int c, unsigned long n);
void *memcpy(void *dst, const void *src, unsigned long n);
unsigned long strlen(const char *s);
int strncmp(const char *a, const char *b, unsigned long n);
int snprintf_(char *buf, unsigned long size, const char *fmt, ...);
void printk(const char *fmt, ...);
u64 now_ns(u64 vcpu);
const char *cmdline_get(const char *key);         /* value up to the next space, or 0 */
u64 cmdline_u64(const char *key, u64 fallback);   /* integer with optional K/M/G suffix */
int cmdline_is(const char *key, const char *value);

/* hypercall wrappers (kernel.c) */
long hc_console(const char *buf, u64 len);
long hc_shutdown(u64 reason);
void sleep_until(u64 vcpu, u64 deadline_ns);       /* 0 = until an event */
void yield_cpu(void);

/* control.c */
void control_init(void);
void control_poll(u64 vcpu);                       /* cheap; call often */
extern volatile u64 balloon_top_pfn;               /* frames [0, top) are held */
void report_used_pages(u64 pages);

/* workloads.c, selftest.c, bench.c, verify.c */
void workload_run(u64 vcpu);
void selftest_run(void);
void bench_run(void);
void verify_run(u64 vcpu);

#endif
