/* Entry for every vCPU: rdi = start-info, rsi = vCPU id, rsp = its stack top. */
    .section .note.GNU-stack, "", @progbits
    .section .text.entry, "ax"
    .globl _start
_start:
    xor %ebp, %ebp
    call kernel_entry
    ud2                 /* kernel_entry never returns; a fault here is a crash */
