/*
 * weft_test.h - what every runtime test binary shares on top of
 * harness.h: sanitizer detection, time units, looser time bounds for slow
 * builds, running a test body as the main coroutine of its own runtime
 * with a given number of Ps, and waiting (white box) until coroutines are
 * parked instead of sleeping and hoping they are.
 */
#ifndef WEFT_TESTS_WEFT_TEST_H
#define WEFT_TESTS_WEFT_TEST_H

#include <stdatomic.h>
#include <stdbool.h>
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
 * needs every M stopped (a SIGQUIT dump of a running coroutine) is
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

/*
 * The leak gate. Every body these helpers start runs between
 * weft_leak_snapshot and weft_leak_verify (weft.h, "leak checks"): a
 * coroutine it spawned that is still alive, or an fd opened since it
 * started that is still open, after retries of about 2 s (scaled by
 * slow()) fails the test, with goleak's report on stderr. harness.h's
 * own check (fds open when the forked child ends) still runs after the
 * runtime is gone; this one sees what weft knows: which coroutine, where,
 * and who opened an fd. A test that leaves coroutines or fds on purpose
 * sets gate_opts (an ignore list) or gate_off before run(), with a
 * comment saying why; both apply to every later run() of the test
 * (each test is its own forked child).
 */
static __attribute__((unused)) const struct weft_leak_opts *gate_opts;
static __attribute__((unused)) bool gate_off;
/* For tests whose body leaves coroutines parked on purpose, for the
 * runtime's end to reclaim: their fds are still checked. */
static __attribute__((unused)) const struct weft_leak_opts gate_fds_only = {
    .flags = WEFT_LEAK_NO_COROUTINES};

struct gate {
    weft_main_fn fn;
    void *arg;
};

/* gate_body - fn(arg) under the leak gate; fn's result. */
static inline int gate_body(void *p)
{
    struct gate *g = (struct gate *)p;
    weft_leak_snapshot_t *s;
    int r = weft_leak_snapshot(&s);
    if (r < 0)
        HARNESS_FAIL("leak gate: weft_leak_snapshot: %s", weft_err_name(r));
    int res = g->fn(g->arg);
    struct weft_leak_opts o = {0};
    if (gate_opts != NULL)
        o = *gate_opts;
    /* goleak's 20 looks take about 0.45 s; then 100 ms apart up to 2 s
     * (scaled): a helper a test body did not join has time to end. */
    if (o.retries == 0)
        o.retries = 20 + (int)((2.0 * slow() - 0.45) * 10);
    char first[256];
    o.fd = 2;
    o.buf = first;
    o.bufsize = sizeof first;
    fflush(stdout);
    int n = weft_leak_verify(s, &o);
    weft_leak_snapshot_free(s);
    if (n < 0)
        HARNESS_FAIL("leak gate: weft_leak_verify: %s", weft_err_name(n));
    if (n > 0)
        HARNESS_FAIL("leak gate: %d coroutine(s) or fd(s) left by the test "
                     "(report above): %s",
                     n, first);
    return res;
}

/* The symbolizer's and unwinder's fds (a dump, a profile, or the gate's
 * own look at stacks opens them for the process's life) are not the
 * test's: harness.h's end-of-child check asks weft which they are. */
static int gate_own_fd(int fd) { return weft__selffd_is(fd); }
__attribute__((constructor)) static void gate_init(void)
{
    harness_fd_excused = gate_own_fd;
}

/* run_ret - weft_main(fn, arg) with WEFTMAXPROCS=procs (0: unset) under
 * the leak gate (unless gate_off); weft_main's result. */
static inline int run_ret(int procs, weft_main_fn fn, void *arg)
{
    set_procs(procs);
    if (gate_off)
        return weft_main(fn, arg);
    struct gate g = {fn, arg};
    return weft_main(gate_body, &g);
}

/* run - run_ret, asserting that it returns 0. */
static inline void run(int procs, weft_main_fn fn, void *arg)
{
    int r = run_ret(procs, fn, arg);
    if (r != 0)
        HARNESS_FAIL("weft_main returned %d (%s)", r, weft_err_name(r));
}

/* cmp_i64 - qsort's comparison of int64_t values. */
static __attribute__((unused)) int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* wait_until - sleep in small steps until *c >= n (from a coroutine). */
static inline void wait_until(_Atomic int64_t *c, int64_t n)
{
    while (atomic_load(c) < n)
        weft_sleep(100 * US);
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

/* promtool_check - the real `promtool check metrics` must accept text
 * silently (SKIP without promtool). Outside a runtime (it blocks). */
static inline void promtool_check(const char *text)
{
    if (!harness_have_tool("promtool"))
        SKIP("no promtool (scripts/deps.sh)");
    char path[] = "/tmp/weft-promtool-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    size_t n = strlen(text);
    ASSERT(write(fd, text, n) == (ssize_t)n);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    const char *const argv[] = {"/bin/sh", "-c", cmd, NULL};
    static char out[64 * 1024], err[64 * 1024];
    int status = 0;
    int r = harness_run(argv, NULL, out, sizeof out, err, sizeof err,
                        &status);
    unlink(path);
    ASSERT(r == 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || out[0] != '\0' ||
        err[0] != '\0')
        HARNESS_FAIL("promtool check metrics: status %d\nstdout:\n%s\n"
                     "stderr:\n%s", status, out, err);
}

#endif
