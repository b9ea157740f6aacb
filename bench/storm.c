/* A hostile guest for bench/daemon.py: sched_op yield hypercalls, flat out, forever. */
#include "pv.h"

__attribute__((force_align_arg_pointer, noreturn))
void _start(struct pv_start_info *si, unsigned long vcpu)
{
    for (;;)
        pv_hypercall2(__HYPERVISOR_sched_op, SCHEDOP_yield, 0);
}
