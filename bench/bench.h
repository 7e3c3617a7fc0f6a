/*
 * bench.h - what the weft benchmark programs share: error reporting and
 * the main() that runs the benchmark named on the command line as the
 * main coroutine of its own runtime (Ps from WEFTMAXPROCS).
 * A program defines BENCH_PROG ("bench_sched") before including this.
 */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "weft.h"

#define MSEC INT64_C(1000000)

/* fail - print a message on stderr; returns 1 for the caller to return. */
static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    fputs(BENCH_PROG "(weft): ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

struct bench {
    const char *name;
    int (*fn)(void);
};

static int bench_run_one(void *arg)
{
    const struct bench *b = arg;
    return b->fn();
}

/* bench_main - run the benchmark argv[1] names, from benches[0..n). */
static int bench_main(const struct bench *benches, size_t n, int argc,
                      char **argv, const char *usage)
{
    if (argc == 2) {
        for (size_t i = 0; i < n; i++) {
            if (strcmp(argv[1], benches[i].name) != 0)
                continue;
            int rc = weft_main(bench_run_one, (void *)&benches[i]);
            if (rc < 0)
                return fail("weft_main: %s (%s)", weft_strerror(rc),
                            weft_err_name(rc));
            return rc;
        }
    }
    return fail("usage: %s", usage);
}

#endif
