/*
 * context.c - what a coroutine's stack needs besides the switch itself
 * (context_*.S): building the first frame of a new context, and telling
 * sanitizers and Valgrind about stacks and switches (sanitizer.h).
 */
#include <string.h>

#if defined(WEFT_HAVE_VALGRIND_H)
#include <valgrind/valgrind.h>
#endif

#include "runtime.h"
#include "sanitizer.h"

bool weft__san_on;
bool weft__vg_on;

/* weft__ctx_make - lay out the frame weft__ctx_switch pops, so that the
 * first switch to c "returns" into weft__ctx_start, which calls
 * entry(arg) with the stack aligned as the ABI wants. */
void weft__ctx_make(struct ctx *c, uintptr_t hi, void (*entry)(void *),
                    void *arg)
{
    hi &= ~(uintptr_t)15;
#if defined(__x86_64__)
    /* r15 r14 r13 r12 rbx rbp, return address; rsp = hi after the ret. */
    uintptr_t *sp = (uintptr_t *)hi - 7;
    sp[0] = 0;                        /* r15 */
    sp[1] = 0;                        /* r14 */
    sp[2] = (uintptr_t)entry;         /* r13 */
    sp[3] = (uintptr_t)arg;           /* r12 */
    sp[4] = 0;                        /* rbx */
    sp[5] = 0;                        /* rbp: ends frame-pointer walks */
    sp[6] = (uintptr_t)weft__ctx_start;
#elif defined(__aarch64__)
    /* 160-byte frame: x19..x28, x29, x30, d8..d15; sp = hi after. */
    uintptr_t *sp = (uintptr_t *)(hi - 160);
    memset(sp, 0, 160);
    sp[0] = (uintptr_t)arg;           /* x19 */
    sp[1] = (uintptr_t)entry;         /* x20 */
    sp[10] = 0;                       /* x29 */
    sp[11] = (uintptr_t)weft__ctx_start; /* x30 */
#else
#error "weft: unsupported architecture"
#endif
    c->sp = sp;
}

void weft__san_init(void)
{
    weft__san_on = __sanitizer_start_switch_fiber != NULL ||
                   __tsan_switch_to_fiber != NULL;
#if defined(WEFT_HAVE_VALGRIND_H)
    weft__vg_on = RUNNING_ON_VALGRIND != 0;
#endif
}

unsigned weft__vg_stack_register(void *lo, void *hi)
{
#if defined(WEFT_HAVE_VALGRIND_H)
    return VALGRIND_STACK_REGISTER(lo, hi);
#else
    (void)lo;
    (void)hi;
    return 0;
#endif
}

void weft__vg_stack_deregister(unsigned id)
{
#if defined(WEFT_HAVE_VALGRIND_H)
    VALGRIND_STACK_DEREGISTER(id);
#else
    (void)id;
#endif
}
