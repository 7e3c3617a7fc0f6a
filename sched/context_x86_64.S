/*
 * context_x86_64.S - coroutine context switch for x86-64 (System V).
 *
 * weft__ctx_switch(save, load) pushes the callee-saved registers (rbp, rbx,
 * r12-r15) on the current stack, stores rsp in save->sp, loads load->sp
 * and pops the same registers from the new stack, then returns into the
 * new context. Caller-saved registers need no saving: the switch is an
 * ordinary call. The FP control words (mxcsr, x87 cw) are not switched:
 * they are per thread, and weft assumes every thread keeps the default.
 *
 * A new context (weft__ctx_make) is a stack whose top holds the same
 * frame: r12 = arg, r13 = entry, rbp = 0, return address weft__ctx_start.
 * weft__ctx_start marks the return address undefined in its CFI so that
 * debuggers, libunwind and profilers stop cleanly at a coroutine's entry
 * instead of walking off the top of its stack.
 */
    .text
    .globl weft__ctx_switch
    .hidden weft__ctx_switch
    .type weft__ctx_switch, @function
    .p2align 4
weft__ctx_switch:
    .cfi_startproc
    pushq %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    pushq %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbx, 0
    pushq %r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r12, 0
    pushq %r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r13, 0
    pushq %r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r14, 0
    pushq %r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r15, 0
    movq %rsp, (%rdi)
    /* A parked G's context is unwound as if it stood here: rsp is the
     * saved sp and the CFI above says where everything else is. */
    .globl weft__ctx_switch_saved
    .hidden weft__ctx_switch_saved
weft__ctx_switch_saved:
    /* From here rsp is the other context's, whose frame has the same
     * layout, so the CFI above still describes it. */
    movq (%rsi), %rsp
    popq %r15
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r15
    popq %r14
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r14
    popq %r13
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r13
    popq %r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r12
    popq %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    popq %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
    ret
    .cfi_endproc
    .size weft__ctx_switch, .-weft__ctx_switch

    .globl weft__ctx_start
    .hidden weft__ctx_start
    .type weft__ctx_start, @function
    .p2align 4
weft__ctx_start:
    .cfi_startproc
    .cfi_undefined %rip
    movq %r12, %rdi
    callq *%r13
    ud2 /* entry functions never return */
    .cfi_endproc
    .size weft__ctx_start, .-weft__ctx_start

    .section .note.GNU-stack, "", @progbits
