/*
 * weft_leak.h - leak checks for tests written with any C test framework,
 * over weft.h's weft_leak_snapshot/verify (see there for the report).
 *
 *     static int body(void *arg) { ... the test ... return 0; }
 *
 *     int leaks = weft_leak_main(body, NULL, NULL, &result);
 *     assert(leaks == 0);  // the report went to stderr
 *
 * weft_leak_main runs body as the main coroutine of a runtime of its own
 * (weft_main), with a snapshot taken before it and a verify after it; a
 * test already inside a coroutine calls weft_leak_check instead. Both
 * return the number of leaks (0: clean) or a negative weft error, and
 * store body's result in *result (may be NULL). opts NULL: defaults, the
 * report on stderr. Header-only: nothing here is part of the ABI.
 */
#ifndef WEFT_LEAK_H
#define WEFT_LEAK_H

#include <string.h>

#include "weft.h"

#ifdef __cplusplus
extern "C" {
#endif

/* weft_leak_check - from a coroutine: snapshot, fn(arg), verify. */
static inline int weft_leak_check(weft_main_fn fn, void *arg,
                                  const struct weft_leak_opts *opts,
                                  int *result)
{
    struct weft_leak_opts def;
    weft_leak_snapshot_t *s;
    int r, res;
    if (opts == NULL) {
        memset(&def, 0, sizeof def);
        def.fd = 2;
        opts = &def;
    }
    if (fn == NULL)
        return WEFT_EINVAL;
    if ((r = weft_leak_snapshot(&s)) < 0)
        return r;
    res = fn(arg);
    if (result != NULL)
        *result = res;
    r = weft_leak_verify(s, opts);
    weft_leak_snapshot_free(s);
    return r;
}

struct weft__leak_main {
    weft_main_fn fn;
    void *arg;
    const struct weft_leak_opts *opts;
    int result, leaks;
};

static inline int weft__leak_main_body(void *arg)
{
    struct weft__leak_main *m = (struct weft__leak_main *)arg;
    m->leaks = weft_leak_check(m->fn, m->arg, m->opts, &m->result);
    return 0;
}

/* weft_leak_main - weft_main(fn, arg) under a leak check. Returns the
 * leaks, a weft_leak_* error, or weft_main's (WEFT_EBUSY, WEFT_EINVAL). */
static inline int weft_leak_main(weft_main_fn fn, void *arg,
                                 const struct weft_leak_opts *opts,
                                 int *result)
{
    struct weft__leak_main m = {fn, arg, opts, 0, 0};
    int r;
    if (fn == NULL)
        return WEFT_EINVAL;
    r = weft_main(weft__leak_main_body, &m);
    if (r < 0)
        return r;
    if (result != NULL)
        *result = m.result;
    return m.leaks;
}

/* WEFT_LEAK_VERIFY_NONE(snapshot) - goleak's VerifyNone: the leak count
 * with the report on stderr, default retries. */
#define WEFT_LEAK_VERIFY_NONE(s)                                               \
    weft_leak_verify((s), &(const struct weft_leak_opts){.fd = 2})

#ifdef __cplusplus
}
#endif
#endif /* WEFT_LEAK_H */
