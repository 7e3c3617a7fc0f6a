/*
 * crashprog.c - scenarios that end a process, for test_crash.c (like Go's
 * runtime/testdata/testprog): `crashprog <scenario>`.
 *
 * Each scenario prints what the test needs to check on stdout, flushed
 * before the crash, e.g. "id 2" for the coroutine that overflows.
 *
 *  stackoverflow          a coroutine with a 64 KiB stack (weft_go_opts)
 *                         recurses without bound.
 *  stackoverflow_default  the same with the default stack (256 KiB).
 *  stackoverflow_procs2   the same, 64 KiB, WEFTMAXPROCS=2 and the overflow
 *                         on whatever M runs it, while other coroutines spin.
 *  nilderef               a coroutine writes through a NULL pointer (not a
 *                         stack overflow).
 *  maxprocs               prints weft_procs() from coroutine 1 and exits 0.
 *  ok                     runs a coroutine and exits 0.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"

static _Atomic int stop;
/* Never set: makes the recursion below look bounded to the compiler. */
static volatile int depth_limit = -1;

/* recurse - never returns; the frame is kept (not a tail call) and its
 * buffer written so each level really uses stack. */
static int __attribute__((noinline)) recurse(int depth)
{
    volatile char buf[128];
    buf[0] = (char)depth;
    buf[sizeof buf - 1] = (char)depth;
    if (depth == depth_limit)
        return 0;
    return recurse(depth + 1) + buf[0] + buf[sizeof buf - 1];
}

static void overflow(void *arg)
{
    printf("id %lld\n", (long long)weft_self());
    fflush(stdout);
    recurse(0);
}

static void spin(void *arg)
{
    while (!atomic_load(&stop))
        weft_checkpoint();
}

static void nilderef(void *arg)
{
    printf("id %lld\n", (long long)weft_self());
    fflush(stdout);
    volatile int *volatile p = NULL;
    *p = 1;
}

static int overflow_main(void *arg)
{
    size_t size = (size_t)(uintptr_t)arg;
    weft_go_opts_t o = {0};
    o.stack_size = size;
    o.name = "overflow";
    if (weft_go_opts(overflow, NULL, &o) < 0)
        return 3;
    for (;;)
        weft_sleep(1000000);
    return 0;
}

static int overflow_procs2_main(void *arg)
{
    for (int i = 0; i < 3; i++)
        weft_go(spin, NULL);
    weft_sleep(5 * 1000 * 1000);
    return overflow_main(arg);
}

static int nilderef_main(void *arg)
{
    weft_go(nilderef, NULL);
    for (;;)
        weft_sleep(1000000);
    return 0;
}

/* deadlock: every coroutine parks for good (no timer, nothing to wake
 * them): the runtime must say so and exit 2, as Go does. */
static void park_forever(void *arg)
{
    (void)arg;
    weft_sleep_until(WEFT_FOREVER);
}

static int deadlock_main(void *arg)
{
    for (int i = 0; i < 3; i++)
        weft_go(park_forever, NULL);
    weft_sleep(2 * 1000 * 1000); /* let them park, on any P */
    printf("parking main\n");
    fflush(stdout);
    weft_sleep_until(WEFT_FOREVER);
    return 0;
}

/* not a deadlock: everyone sleeps, but on timers, so time will wake
 * them; main returns 0 after 100 ms. */
static void nap(void *arg)
{
    (void)arg;
    weft_sleep(50 * 1000 * 1000);
}

static int sleepers_main(void *arg)
{
    for (int i = 0; i < 3; i++)
        weft_go(nap, NULL);
    weft_sleep(100 * 1000 * 1000);
    printf("ok\n");
    return 0;
}

/* extref: main parks for good while an outside thread holds an external
 * reference; no deadlock may be reported before that thread ends the
 * process. */
static void *outsider(void *arg)
{
    (void)arg;
    usleep(200 * 1000);
    printf("outsider done\n");
    fflush(stdout);
    _exit(0);
}

static int extref_main(void *arg)
{
    (void)arg;
    if (weft_external_ref() != 0)
        return 5;
    pthread_t t;
    if (pthread_create(&t, NULL, outsider, NULL) != 0)
        return 6;
    weft_sleep_until(WEFT_FOREVER);
    return 0;
}

static int maxprocs_main(void *arg)
{
    printf("%d\n", weft_procs());
    return 0;
}

static void hello(void *arg)
{
    atomic_store((_Atomic int *)arg, 1);
}

static int ok_main(void *arg)
{
    _Atomic int done = 0;
    weft_go(hello, &done);
    while (!atomic_load(&done))
        weft_yield();
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: crashprog <scenario>\n");
        return 64;
    }
    const char *s = argv[1];
    int r;
    if (strcmp(s, "stackoverflow") == 0) {
        r = weft_main(overflow_main, (void *)(uintptr_t)(64 * 1024));
    } else if (strcmp(s, "stackoverflow_default") == 0) {
        r = weft_main(overflow_main, (void *)(uintptr_t)0);
    } else if (strcmp(s, "stackoverflow_procs2") == 0) {
        setenv("WEFTMAXPROCS", "2", 1);
        r = weft_main(overflow_procs2_main, (void *)(uintptr_t)(64 * 1024));
    } else if (strcmp(s, "nilderef") == 0) {
        r = weft_main(nilderef_main, NULL);
    } else if (strcmp(s, "deadlock") == 0) {
        r = weft_main(deadlock_main, NULL);
    } else if (strcmp(s, "deadlock_procs2") == 0) {
        setenv("WEFTMAXPROCS", "2", 1);
        r = weft_main(deadlock_main, NULL);
    } else if (strcmp(s, "extref") == 0) {
        r = weft_main(extref_main, NULL);
    } else if (strcmp(s, "sleepers") == 0) {
        r = weft_main(sleepers_main, NULL);
    } else if (strcmp(s, "maxprocs") == 0) {
        r = weft_main(maxprocs_main, NULL);
    } else if (strcmp(s, "ok") == 0) {
        r = weft_main(ok_main, NULL);
    } else {
        fprintf(stderr, "crashprog: unknown scenario %s\n", s);
        return 64;
    }
    if (r != 0)
        fprintf(stderr, "crashprog: weft_main returned %d (%s)\n", r,
                weft_err_name(r));
    return r == 0 ? 0 : 1;
}
