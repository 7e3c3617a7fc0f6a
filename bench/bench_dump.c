/*
 * bench_dump.c - weft's side of the dump benchmark (bench/dump.sh): a
 * process holding N parked coroutines, the peer of bench/go/dump.go, and
 * the repeat-dump check.
 *
 * Usage: bench_dump [N]            (default 100000; Ps from WEFTMAXPROCS)
 *        bench_dump --twice [N]
 *
 * Both modes: the main coroutine locks state_mu, spawns N coroutines,
 * waits on a waitgroup until every one has reached the call it parks in,
 * and sleeps 100 ms so the last ones are parked. Coroutine i takes path
 * i%4, each 4 calls deep below its entry (worker), ending in a different
 * wait; nothing ever wakes them:
 *
 *   0  worker -> serve_conn -> read_request -> chan recv   "chan receive"
 *   1  worker -> run_job -> publish -> chan send           "chan send"
 *   2  worker -> poll_events -> wait_event -> select(2)    "select"
 *   3  worker -> update_state -> apply_update -> mutex     "sync.Mutex.Lock"
 *
 * bench/go/dump.go has the same functions, mix and order of steps. The
 * functions are noinline and do work after each call, so no call becomes
 * a tail call and every frame is real (meson also builds this file with
 * -fno-optimize-sibling-calls, and -g so frames have file:line, as Go's
 * do from its line tables).
 *
 *  default  prints "ready" on stdout, then sleeps forever (hour-long
 *           weft_sleep calls: a pending timer, so no deadlock report).
 *           dump.sh sends SIGQUIT and times the dump to process exit.
 *  --twice  calls weft_dump(fd, WEFT_DUMP_ALL) twice from the main
 *           coroutine, into two fresh temporary files (mkstemp in $TMPDIR,
 *           else /tmp, removed afterwards), timing each call with
 *           weft_now(). The first dump pays for reading debug information
 *           (symbolization); the second should reuse it. Prints
 *             BenchmarkDumpFirst/impl=weft/n=N  1  <ns> ns/op  <bytes> B
 *             BenchmarkDumpSecond/impl=weft/n=N 1  <ns> ns/op  <bytes> B
 *             dump_twice first_ns=<a> second_ns=<b> first/second=<a/b>
 *           and exits 1 (after printing) when a dump fails or holds fewer
 *           than N "goroutine <id> [" headers.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft.h"

#define MSEC INT64_C(1000000)
#define SEC (1000 * MSEC)
#define DEFAULT_N 100000

#define NOINLINE __attribute__((noinline, noclone))

/* fail - print a message on stderr; returns 1 for the caller to return. */
static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    fputs("bench_dump(weft): ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

/* -------------------------------------------------------- the workers */

static weft_chan_t *req_ch; /* nobody sends */
static weft_chan_t *res_ch; /* nobody receives */
static weft_chan_t *ev_a;   /* nobody sends */
static weft_chan_t *ev_b;   /* nobody sends */
static weft_mutex_t state_mu = WEFT_MUTEX_INIT; /* held by main for good */
static weft_waitgroup_t parked = WEFT_WAITGROUP_INIT;
static _Atomic int64_t sink; /* keeps results alive */

NOINLINE static int64_t read_request(int64_t id)
{
    int64_t v = 0;
    weft_waitgroup_done(&parked);
    if (weft_chan_recv(req_ch, &v) < 0)
        return -1;
    return v + id;
}

NOINLINE static int64_t serve_conn(int64_t id)
{
    int64_t n = read_request(id);
    return n + 1;
}

NOINLINE static int64_t publish(int64_t id)
{
    weft_waitgroup_done(&parked);
    if (weft_chan_send(res_ch, &id) < 0)
        return -1;
    return id;
}

NOINLINE static int64_t run_job(int64_t id)
{
    int64_t n = publish(id);
    return n + 1;
}

NOINLINE static int64_t wait_event(int64_t id)
{
    int64_t a = 0, b = 0;
    weft_select_case_t cases[2] = {
        {.chan = ev_a, .op = WEFT_RECV, .elem = &a},
        {.chan = ev_b, .op = WEFT_RECV, .elem = &b},
    };
    weft_waitgroup_done(&parked);
    int i = weft_select(cases, 2);
    if (i < 0)
        return -1;
    return i == 0 ? a + id : b - id;
}

NOINLINE static int64_t poll_events(int64_t id)
{
    int64_t n = wait_event(id);
    return n + 1;
}

NOINLINE static int64_t apply_update(int64_t id)
{
    weft_waitgroup_done(&parked);
    if (weft_mutex_lock(&state_mu) < 0)
        return -1;
    weft_mutex_unlock(&state_mu);
    return id;
}

NOINLINE static int64_t update_state(int64_t id)
{
    int64_t n = apply_update(id);
    return n + 1;
}

NOINLINE static void worker(void *arg)
{
    int64_t id = (int64_t)(intptr_t)arg;
    int64_t n;
    switch (id % 4) {
    case 0:
        n = serve_conn(id);
        break;
    case 1:
        n = run_job(id);
        break;
    case 2:
        n = poll_events(id);
        break;
    default:
        n = update_state(id);
        break;
    }
    atomic_fetch_add(&sink, n); /* never reached: nothing wakes a worker */
}

/* ------------------------------------------------------------ --twice */

/* count_headers - the number of lines of the file at path that start
 * "goroutine <digits> [" (Go's goroutine header), or -1; *bytes gets
 * the file's size. */
static int64_t count_headers(const char *path, int64_t *bytes)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int64_t n = 0;
    bool bol = true; /* the buffer starts a line */

    *bytes = 0;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        size_t len = strlen(line);
        *bytes += (int64_t)len;
        if (bol && strncmp(line, "goroutine ", 10) == 0) {
            const char *p = line + 10;
            if (*p >= '0' && *p <= '9') {
                while (*p >= '0' && *p <= '9')
                    p++;
                if (p[0] == ' ' && p[1] == '[')
                    n++;
            }
        }
        bol = len > 0 && line[len - 1] == '\n';
    }
    fclose(f);
    return n;
}

/* temp_file - create a temporary file for a dump; returns its fd (its
 * name in path) or -1. */
static int temp_file(char *path, size_t size)
{
    const char *dir = getenv("TMPDIR");
    if (dir == NULL || dir[0] == '\0')
        dir = "/tmp";
    snprintf(path, size, "%s/bench_dump.XXXXXX", dir);
    return mkstemp(path);
}

/* dump_twice - weft_dump(WEFT_DUMP_ALL) twice, each into a fresh file;
 * print both times, sizes and the ratio; check both dumps. */
static int dump_twice(int64_t n)
{
    char path[2][4096];
    int fd[2];
    int64_t ns[2], bytes[2], heads[2];
    int rc[2], bad = 0;

    for (int i = 0; i < 2; i++) {
        fd[i] = temp_file(path[i], sizeof path[i]);
        if (fd[i] < 0) {
            if (i == 1) {
                close(fd[0]);
                unlink(path[0]);
            }
            return fail("mkstemp %s failed", path[i]);
        }
    }
    for (int i = 0; i < 2; i++) {
        int64_t t0 = weft_now();
        rc[i] = weft_dump(fd[i], WEFT_DUMP_ALL);
        ns[i] = weft_now() - t0;
    }
    for (int i = 0; i < 2; i++) {
        close(fd[i]);
        heads[i] = count_headers(path[i], &bytes[i]);
        unlink(path[i]);
    }
    for (int i = 0; i < 2; i++) {
        const char *which = i == 0 ? "First" : "Second";
        printf("BenchmarkDump%s/impl=weft/n=%" PRId64 "\t1\t%" PRId64
               " ns/op\t%" PRId64 " B\t%.1f ns/coro\n",
               which, n, ns[i], bytes[i], (double)ns[i] / (double)n);
        if (rc[i] < 0) {
            bad = fail("dump %d: weft_dump: %s (%s)", i + 1,
                       weft_strerror(rc[i]), weft_err_name(rc[i]));
        } else if (heads[i] < n) {
            bad = fail("dump %d: %" PRId64 " goroutine headers, want >= %" PRId64,
                       i + 1, heads[i], n);
        }
    }
    printf("dump_twice first_ns=%" PRId64 " second_ns=%" PRId64
           " first/second=%.2f headers=%" PRId64 ",%" PRId64 "\n",
           ns[0], ns[1], ns[1] > 0 ? (double)ns[0] / (double)ns[1] : 0.0,
           heads[0], heads[1]);
    fflush(stdout);
    return bad;
}

/* ---------------------------------------------------------------- main */

struct args {
    int64_t n;
    bool twice;
};

static int chan_new(weft_chan_t **c)
{
    int rc = weft_chan_new(c, sizeof(int64_t), 0);
    if (rc < 0)
        return fail("weft_chan_new: %s (%s)", weft_strerror(rc),
                    weft_err_name(rc));
    return 0;
}

static int run(void *arg)
{
    const struct args *a = arg;
    int rc;

    if (chan_new(&req_ch) || chan_new(&res_ch) || chan_new(&ev_a) ||
        chan_new(&ev_b))
        return 1;
    if ((rc = weft_mutex_lock(&state_mu)) < 0 ||
        (rc = weft_waitgroup_add(&parked, a->n)) < 0)
        return fail("setup: %s (%s)", weft_strerror(rc), weft_err_name(rc));
    for (int64_t i = 0; i < a->n; i++) {
        int64_t id = weft_go(worker, (void *)(intptr_t)i);
        if (id <= 0)
            return fail("weft_go: %s (%s)", weft_strerror((int)id),
                        weft_err_name((int)id));
    }
    if ((rc = weft_waitgroup_wait(&parked)) < 0)
        return fail("weft_waitgroup_wait: %s (%s)", weft_strerror(rc),
                    weft_err_name(rc));
    weft_sleep(100 * MSEC); /* the last ones reach their park */

    if (a->twice)
        return dump_twice(a->n); /* shutdown abandons the parked ones */
    printf("ready\n");
    fflush(stdout);
    for (;;)
        weft_sleep(3600 * SEC);
}

int main(int argc, char **argv)
{
    struct args a = {.n = DEFAULT_N};
    int i = 1;

    if (i < argc && strcmp(argv[i], "--twice") == 0) {
        a.twice = true;
        i++;
    }
    if (i < argc) {
        char *end;
        long long v = strtoll(argv[i], &end, 10);
        if (*end != '\0' || v < 1 || v > INT32_MAX)
            return fail("bad count \"%s\"", argv[i]);
        a.n = v;
        i++;
    }
    if (i != argc)
        return fail("usage: bench_dump [--twice] [N]");
    int rc = weft_main(run, &a);
    if (rc < 0)
        return fail("weft_main: %s (%s)", weft_strerror(rc),
                    weft_err_name(rc));
    return rc;
}
