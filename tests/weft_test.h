/*
 * weft_test.h - what every runtime test binary shares on top of
 * harness.h: sanitizer detection, time units, looser time bounds for slow
 * builds, and running a test body as the main coroutine of its own
 * runtime with a given number of Ps.
 */
#ifndef WEFT_TESTS_WEFT_TEST_H
#define WEFT_TESTS_WEFT_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "weft.h"

#include "harness.h"

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

#endif
