/*
 * weft_test.h - what every runtime test binary shares on top of
 * harness.h: sanitizer detection, time units, looser time bounds for slow
 * builds, running a test body as the main coroutine of its own runtime
 * with a given number of Ps, and waiting (white box) until coroutines are
 * parked instead of sleeping and hoping they are.
 */
#ifndef WEFT_TESTS_WEFT_TEST_H
#define WEFT_TESTS_WEFT_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "weft.h"

#include "harness.h"
#include "runtime.h" /* white box: the G registry (parked_count) */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif
/* TSan holds a signal until its thread's next intercepted call, so an
 * idle M asleep in a raw futex does not answer a dump's freeze: what
 * needs every M stopped (SIGQUIT, labels in a goroutine profile) is
 * weaker there. */
#if defined(__SANITIZE_THREAD__)
#define TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN 1
#endif
#endif
#ifndef TSAN
#define TSAN 0
#endif

#define MS ((int64_t)1000 * 1000)
#define US ((int64_t)1000)

/* slow - factor for time bounds: slower builds get looser bounds. */
static inline double slow(void)
{
    return harness_timeout_scale() * (SANITIZED ? 4.0 : 1.0);
}

/* set_procs - WEFTMAXPROCS for the next weft_main; 0 unsets it. */
static inline void set_procs(int n)
{
    if (n <= 0) {
        unsetenv("WEFTMAXPROCS");
        return;
    }
    char buf[16];
    snprintf(buf, sizeof buf, "%d", n);
    setenv("WEFTMAXPROCS", buf, 1);
}

/* run - weft_main(fn, arg) with WEFTMAXPROCS=procs (0: unset); asserts
 * that it returns 0. */
static inline void run(int procs, weft_main_fn fn, void *arg)
{
    set_procs(procs);
    int r = weft_main(fn, arg);
    if (r != 0)
        HARNESS_FAIL("weft_main returned %d (%s)", r, weft_err_name(r));
}

/* parked_count - coroutines parked with wait reason (id 0: any id), or
 * with that id: read from the G registry (racily, as dumps do). */
static inline int parked_count(int64_t id, int reason)
{
    struct g **chunks = __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
    size_t n = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE);
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        struct g *gp = weft__allg(chunks, i);
        if ((id == 0 || gp->id == id) &&
            atomic_load(&gp->status) == G_WAITING &&
            __atomic_load_n(&gp->waitreason, __ATOMIC_RELAXED) == reason)
            k++;
    }
    return k;
}

/* wait_parked - wait until at least n coroutines (id 0) or coroutine id
 * (n 1) are parked with reason, instead of sleeping and hoping they got
 * there; fails after 5 s (scaled). */
static inline void wait_parked(int64_t id, int reason, int n)
{
    int64_t end = weft_now() + (int64_t)(5000 * MS * slow());
    while (parked_count(id, reason) < n) {
        if (weft_now() > end)
            HARNESS_FAIL("%d coroutine(s) never parked (reason %d)", n,
                         reason);
        weft_sleep(20 * US);
    }
}

#endif
