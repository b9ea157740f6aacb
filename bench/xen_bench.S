/* A tiny Xen PV kernel for bench/engine.py: N #UD traps bounced to a handler and
 * back via iret, then N no-op xen_version hypercalls, each timed with rdtsc into
 * trap_cycles[] / call_cycles[] (read from guest memory by the benchmark). */
#define N 2000
    .section .note.Xen, "a", @note
    .align 4
    .long 4, 8, 2                   /* XEN_ELFNOTE_HYPERCALL_PAGE */
    .asciz "Xen"
    .quad hypercall_page

    .text
    .globl _start
_start:
    lea stack_top(%rip), %rsp
    lea traps(%rip), %rdi
    call hypercall_page + 0 * 32    /* set_trap_table */
    xor %r12, %r12
1:  rdtsc
    shl $32, %rdx
    or %rax, %rdx
    mov %rdx, %r13
    ud2                             /* bounced to ud_handler, which irets past it */
    rdtsc
    shl $32, %rdx
    or %rax, %rdx
    sub %r13, %rdx
    lea trap_cycles(%rip), %rax
    mov %rdx, (%rax, %r12, 8)
    inc %r12
    cmp $N, %r12
    jb 1b
    xor %r12, %r12
2:  rdtsc
    shl $32, %rdx
    or %rax, %rdx
    mov %rdx, %r13
    xor %edi, %edi                  /* XENVER_version */
    xor %esi, %esi
    call hypercall_page + 17 * 32
    rdtsc
    shl $32, %rdx
    or %rax, %rdx
    sub %r13, %rdx
    lea call_cycles(%rip), %rax
    mov %rdx, (%rax, %r12, 8)
    inc %r12
    cmp $N, %r12
    jb 2b
    mov $2, %edi                    /* SCHEDOP_shutdown, poweroff */
    lea reason(%rip), %rsi
    call hypercall_page + 29 * 32
3:  jmp 3b

ud_handler:                         /* Xen's frame: rcx r11 rip cs rflags rsp ss */
    pop %rcx
    pop %r11
    addq $2, (%rsp)                 /* past the ud2 */
    push $0                         /* iret flags */
    jmp hypercall_page + 23 * 32

    .data
    .align 16
traps:                              /* trap_info: vector, flags, cs, address */
    .byte 6, 0
    .word 0xe030
    .long 0
    .quad ud_handler
    .quad 0, 0
reason: .long 0

    .balign 4096
hypercall_page:
    .fill 4096, 1, 0xc3
    .globl trap_cycles, call_cycles
trap_cycles: .fill N, 8, 0
call_cycles: .fill N, 8, 0
    .fill 16384, 1, 0
stack_top:
