/*
 * context_aarch64.S - coroutine context switch for AArch64 (AAPCS64).
 *
 * weft__ctx_switch(save, load) stores the callee-saved registers x19-x28,
 * the frame pointer x29, the link register x30 and d8-d15 in a 160-byte
 * frame on the current stack, stores sp in save->sp, loads load->sp and
 * restores the same frame from the new stack, then returns through the
 * restored x30. FPCR is per thread and not switched.
 *
 * A new context (weft__ctx_make) holds that frame with x19 = arg,
 * x20 = entry, x29 = 0 and x30 = weft__ctx_start, whose CFI marks the
 * return address undefined so unwinders stop at the coroutine's entry.
 */
    .text
    .globl weft__ctx_switch
    .hidden weft__ctx_switch
    .type weft__ctx_switch, %function
    .p2align 4
weft__ctx_switch:
    .cfi_startproc
    sub sp, sp, #160
    .cfi_adjust_cfa_offset 160
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    .cfi_rel_offset x29, 80
    .cfi_rel_offset x30, 88
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mov x2, sp
    str x2, [x0]
    /* A parked G's context is unwound as if it stood here (see
     * context_x86_64.S). */
    .globl weft__ctx_switch_saved
    .hidden weft__ctx_switch_saved
weft__ctx_switch_saved:
    ldr x2, [x1]
    mov sp, x2
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    add sp, sp, #160
    .cfi_adjust_cfa_offset -160
    ret
    .cfi_endproc
    .size weft__ctx_switch, .-weft__ctx_switch

    .globl weft__ctx_start
    .hidden weft__ctx_start
    .type weft__ctx_start, %function
    .p2align 4
weft__ctx_start:
    .cfi_startproc
    .cfi_undefined x30
    mov x0, x19
    blr x20
    brk #0 /* entry functions never return */
    .cfi_endproc
    .size weft__ctx_start, .-weft__ctx_start

    .section .note.GNU-stack, "", %progbits
