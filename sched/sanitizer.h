/*
 * sanitizer.h - fiber annotations for AddressSanitizer, ThreadSanitizer
 * and Valgrind, so user code built with a sanitizer (or run under
 * Valgrind) works on weft's coroutines even when libweft itself was built
 * without one.
 *
 * The sanitizer entry points are weak references: they resolve to the
 * sanitizer runtime when the program carries one, and to NULL otherwise.
 * weft__san_init() looks once and sets weft__san_on, so a build without
 * sanitizers pays one predictable branch per context switch.
 *
 * Protocol (compiler-rt's common_interface_defs.h and tsan_interface.h):
 *  1. Before a switch, the leaving context calls start_switch_fiber with
 *     a slot for its fake stack (NULL when it will never run again) and
 *     the bounds of the stack it switches to; TSan switches fibers.
 *  2. The first thing the arriving context does is finish_switch_fiber
 *     with its own saved slot (NULL on a new coroutine's first run).
 *  3. A G that exits never returns from its frames, so their redzones
 *     stay poisoned; a stack is unpoisoned before it is reused.
 */
#ifndef WEFT_SANITIZER_H
#define WEFT_SANITIZER_H

#include <stdbool.h>
#include <stddef.h>

void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom,
                                    size_t size) __attribute__((weak));
void __sanitizer_finish_switch_fiber(void *fake_stack_save,
                                     const void **bottom_old,
                                     size_t *size_old) __attribute__((weak));
void __asan_unpoison_memory_region(void const volatile *addr, size_t size)
    __attribute__((weak));
void *__tsan_get_current_fiber(void) __attribute__((weak));
void *__tsan_create_fiber(unsigned flags) __attribute__((weak));
void __tsan_destroy_fiber(void *fiber) __attribute__((weak));
void __tsan_switch_to_fiber(void *fiber, unsigned flags) __attribute__((weak));
void __tsan_acquire(void *addr) __attribute__((weak));
void __tsan_release(void *addr) __attribute__((weak));

extern bool weft__san_on;
extern bool weft__vg_on;

void weft__san_init(void);

static inline void weft__tsan_acquire(void *addr)
{
    if (__tsan_acquire)
        __tsan_acquire(addr);
}

static inline void weft__tsan_release(void *addr)
{
    if (__tsan_release)
        __tsan_release(addr);
}

unsigned weft__vg_stack_register(void *lo, void *hi);
void weft__vg_stack_deregister(unsigned id);

#endif
