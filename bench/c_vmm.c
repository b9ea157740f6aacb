/*
 * c_vmm: the smallest KVM_RUN loop that boots the bundled pvtui guest kernel,
 * built only as a baseline for bench/engine.py's hypercall round trip. It
 * builds the same machine as pvtui/engine (layout.py, domain.py) for one vCPU
 * and answers just what a bench workload needs: console_io, xen_version,
 * multicall of those, set_timer_op, sched_op (block returns at once), shutdown.
 *
 * usage: c_vmm KERNEL.elf MEMORY_MIB "CMDLINE"
 */
#define _GNU_SOURCE
#include <elf.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "pv.h"

#define DIE(...) do { fprintf(stderr, "c_vmm: " __VA_ARGS__); fputc('\n', stderr); exit(2); } while (0)

static uint8_t *mem;
static uint64_t mem_size;

static void *gpa(uint64_t addr, uint64_t len)
{
    return (addr + len <= mem_size && addr + len >= addr) ? mem + addr : NULL;
}

static uint64_t load_elf(const char *path, uint64_t *end)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) DIE("cannot open %s", path);
    uint8_t *img = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
    *end = 0;
    for (int i = 0; i < eh->e_phnum; i++) {
        Elf64_Phdr *ph = (Elf64_Phdr *)(img + eh->e_phoff + i * eh->e_phentsize);
        if (ph->p_type != PT_LOAD || !ph->p_memsz) continue;
        void *dst = gpa(ph->p_paddr, ph->p_memsz);
        if (!dst) DIE("segment outside memory");
        memcpy(dst, img + ph->p_offset, ph->p_filesz);
        if (ph->p_paddr + ph->p_memsz > *end) *end = ph->p_paddr + ph->p_memsz;
    }
    return eh->e_entry;
}

static uint64_t msr_tsc(int vcpu)
{
    struct { struct kvm_msrs h; struct kvm_msr_entry e; } m = {{.nmsrs = 1}, {.index = 0x10}};
    if (ioctl(vcpu, KVM_GET_MSRS, &m) != 1) DIE("KVM_GET_MSRS");
    return m.e.data;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int64_t hypercall(uint64_t nr, uint64_t a1, uint64_t a2, uint64_t a3, int *stop);

static int64_t multicall(uint64_t array, uint64_t count, int *stop)
{
    struct pv_multicall_entry *e = gpa(array, count * sizeof *e);
    if (!e) return -PV_EFAULT;
    for (uint64_t i = 0; i < count && !*stop; i++)
        e[i].result = e[i].op == __HYPERVISOR_multicall ? -PV_EINVAL
                    : hypercall(e[i].op, e[i].args[0], e[i].args[1], e[i].args[2], stop);
    return 0;
}

static int64_t hypercall(uint64_t nr, uint64_t a1, uint64_t a2, uint64_t a3, int *stop)
{
    switch (nr) {
    case __HYPERVISOR_xen_version:
        return a1 == XENVER_version ? (PV_ABI_VERSION_MAJOR << 16) | PV_ABI_VERSION_MINOR : -PV_EINVAL;
    case __HYPERVISOR_console_io: {
        void *buf = gpa(a3, a2);
        if (!buf) return -PV_EFAULT;
        fwrite(buf, 1, a2, stdout);
        fflush(stdout);
        return 0;
    }
    case __HYPERVISOR_multicall:
        return multicall(a1, a2, stop);
    case __HYPERVISOR_set_timer_op:
        return 0;
    case __HYPERVISOR_sched_op:
        if (a1 == SCHEDOP_shutdown) *stop = 1;
        return 0;
    default:
        return -PV_ENOSYS;
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) DIE("usage: c_vmm KERNEL MEMORY_MIB CMDLINE");
    mem_size = strtoull(argv[2], NULL, 0) << 20;
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) DIE("cannot open /dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    madvise(mem, mem_size, MADV_HUGEPAGE);
    struct kvm_userspace_memory_region region = {0, 0, 0, mem_size, (uint64_t)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) DIE("KVM_SET_USER_MEMORY_REGION");

    /* Identity map with 2 MiB user pages: PML4 0x10000, PDPT 0x11000, PDs from 0x12000. */
    uint64_t *pml4 = gpa(0x10000, 4096), *pdpt = gpa(0x11000, 4096);
    pml4[0] = 0x11000 | 7;
    uint64_t gib = (mem_size + (1ull << 30) - 1) >> 30;
    for (uint64_t i = 0; i < gib; i++) {
        uint64_t *pd = gpa(0x12000 + i * 4096, 4096);
        pdpt[i] = (0x12000 + i * 4096) | 7;
        for (int j = 0; j < 512; j++) pd[j] = ((i << 30) + ((uint64_t)j << 21)) | 0x87;
    }
    uint64_t kernel_end, entry = load_elf(argv[1], &kernel_end);
    uint64_t stack_base = (kernel_end + 4095) & ~4095ull;
    uint64_t first_free = (stack_base + PV_VCPU_STACK_SIZE + 4095) & ~4095ull;

    struct pv_start_info *si = gpa(0x1000, sizeof *si);
    strcpy(si->magic, PV_START_INFO_MAGIC);
    si->nr_pages = si->max_pages = mem_size >> 12;
    si->shared_info = 0x2000;
    si->first_free_pfn = first_free >> 12;
    si->stack_base = stack_base;
    si->nr_vcpus = si->max_vcpus = 1;
    si->kernel_end = kernel_end;
    snprintf(si->cmdline, sizeof si->cmdline, "%s", argv[3]);
    struct pv_shared_info *sh = gpa(0x2000, sizeof *sh);
    sh->control_seq = 1;
    sh->vcpu_online_mask = 1;
    sh->balloon_target_pages = sh->memory_pages = mem_size >> 12;

    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    struct { struct kvm_cpuid2 h; struct kvm_cpuid_entry2 e[128]; } cpuid;
    memset(&cpuid, 0, sizeof cpuid);
    cpuid.h.nent = 128;
    ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid);
    ioctl(vcpu, KVM_SET_CPUID2, &cpuid);

    struct kvm_sregs sregs;
    ioctl(vcpu, KVM_GET_SREGS, &sregs);
    struct kvm_segment code = {.base = 0, .limit = 0xffffffff, .selector = 0x33, .type = 11, .present = 1,
                               .dpl = 3, .s = 1, .l = 1, .g = 1};
    struct kvm_segment data = code;
    data.selector = 0x2b; data.type = 3; data.l = 0; data.db = 1;
    sregs.cs = code;
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
    sregs.tr = (struct kvm_segment){.base = 0x5000, .limit = 0x67, .selector = 0x40, .type = 11, .present = 1};
    sregs.cr0 = 0x80050033; sregs.cr3 = 0x10000; sregs.cr4 = 0x620; sregs.efer = 0x500;
    ioctl(vcpu, KVM_SET_SREGS, &sregs);
    struct kvm_regs regs = {.rip = entry, .rsp = stack_base + PV_VCPU_STACK_SIZE, .rdi = 0x1000, .rflags = 0x3002};
    ioctl(vcpu, KVM_SET_REGS, &regs);

    /* Publish the clock: ns = system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32. */
    uint64_t khz = ioctl(vcpu, KVM_GET_TSC_KHZ, 0), num = 1000000, den = khz;
    int shift = 0;
    while (num >= den) { den *= 2; shift++; }
    while (num * 2 < den) { num *= 2; shift--; }
    uint64_t t0 = now_ns(), tsc = msr_tsc(vcpu), t1 = now_ns();
    struct pv_vcpu_time_info *ti = &sh->vcpu_info[0].time;
    ti->tsc_timestamp = tsc;
    ti->system_time = (t0 + t1) / 2;
    ti->tsc_to_system_mul = (uint32_t)((num << 32) / den);
    ti->tsc_shift = (pv_s8)shift;
    ti->version = 2;

    run->kvm_valid_regs = KVM_SYNC_X86_REGS;
    for (int stop = 0; !stop;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) DIE("KVM_RUN");
        if (run->exit_reason != KVM_EXIT_IO || run->io.port != PV_HYPERCALL_PORT)
            DIE("guest exit %u", run->exit_reason);
        struct kvm_regs *r = &run->s.regs.regs;
        uint32_t nr = *(uint32_t *)((uint8_t *)run + run->io.data_offset);
        r->rax = (uint64_t)hypercall(nr, r->rdi, r->rsi, r->rdx, &stop);
        run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
    }
    return 0;
}
