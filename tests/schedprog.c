/*
 * schedprog.c - programs for test_schedtrace.c to run in a subprocess
 * with WEFTDEBUG / WEFTTRACEBACK / WEFTMAXPROCS set in their environment:
 * `schedprog <scenario>`. What the runtime prints goes to stderr, what
 * the test needs to know goes to stdout.
 *
 *  work   ~600 ms of mixed work: two CPU spinners (weft_checkpoint), two
 *         sleepers, a channel ping-pong pair and one coroutine parked on
 *         a channel for good. Prints "id N" for main and each of them
 *         once all have started; none of them ends before the runtime
 *         does (main returns and the runtime stops with them alive), so
 *         every report after that must list them all, none dead.
 *  idle   main sleeps 600 ms in one call: every P idles, sysmon sleeps
 *         deeply, and reports must still come on time.
 *  yield  main yields in a loop for 1 s: one P busy, its schedtick
 *         moving, nothing queued, no timer: sysmon finds nothing to do
 *         and its tick grows to 10 ms; reports must still come on time.
 *  debug  prints what weft__debug holds (white box), from coroutine 1:
 *         "schedtrace=N scheddetail=N sigquitcontinue=N traceback=N",
 *         sleeps 250 ms (so a schedtrace setting has time to show) and
 *         prints "ok".
 *
 * Exit status 0 on success; 1 if weft_main failed (message on stderr).
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"

#include "runtime.h" /* white box: weft__debug */

#define MS ((int64_t)1000 * 1000)

static _Atomic int started;

static void spinner(void *arg)
{
    (void)arg;
    atomic_fetch_add(&started, 1);
    for (;;) {
        for (volatile int i = 0; i < 1000; i++)
            ;
        weft_checkpoint();
    }
}

static void sleeper(void *arg)
{
    (void)arg;
    atomic_fetch_add(&started, 1);
    for (;;)
        weft_sleep(3 * MS);
}

struct pingpong {
    weft_chan_t *in, *out;
};

static void ponger(void *arg)
{
    struct pingpong *pp = arg;
    atomic_fetch_add(&started, 1);
    int v;
    while (weft_chan_recv(pp->in, &v) == 0) {
        v++;
        if (weft_chan_send(pp->out, &v) != 0)
            return;
        weft_sleep(1 * MS);
    }
}

static void parked(void *arg)
{
    atomic_fetch_add(&started, 1);
    int v;
    weft_chan_recv((weft_chan_t *)arg, &v); /* nobody ever sends */
}

static int work_main(void *arg)
{
    (void)arg;
    static struct pingpong a, b;
    static weft_chan_t *never;
    if (weft_chan_new(&a.in, sizeof(int), 0) < 0 ||
        weft_chan_new(&a.out, sizeof(int), 0) < 0 ||
        weft_chan_new(&never, sizeof(int), 0) < 0)
        return 2;
    b.in = a.out;
    b.out = a.in;
    int64_t ids[7];
    int n = 0;
    ids[n++] = weft_go(spinner, NULL);
    ids[n++] = weft_go(spinner, NULL);
    ids[n++] = weft_go(sleeper, NULL);
    ids[n++] = weft_go(sleeper, NULL);
    ids[n++] = weft_go(ponger, &a);
    ids[n++] = weft_go(ponger, &b);
    ids[n++] = weft_go(parked, never);
    while (atomic_load(&started) < n)
        weft_sleep(100 * 1000);
    int v = 0;
    weft_chan_send(a.in, &v); /* serve */
    printf("id %lld\n", (long long)weft_self());
    for (int i = 0; i < n; i++)
        printf("id %lld\n", (long long)ids[i]);
    fflush(stdout);
    weft_sleep(600 * MS);
    /* The runtime stops with every coroutine above still alive. */
    return 0;
}

static int idle_main(void *arg)
{
    (void)arg;
    weft_sleep(600 * MS);
    return 0;
}

static int yield_main(void *arg)
{
    (void)arg;
    int64_t end = weft_now() + 1000 * MS;
    while (weft_now() < end)
        weft_yield();
    return 0;
}

static int debug_main(void *arg)
{
    (void)arg;
    printf("schedtrace=%d scheddetail=%d sigquitcontinue=%d traceback=%d\n",
           (int)weft__debug.schedtrace, (int)weft__debug.scheddetail,
           (int)weft__debug.sigquitcontinue, weft__debug.traceback);
    fflush(stdout);
    weft_sleep(250 * MS);
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: schedprog work|idle|yield|debug\n");
        return 64;
    }
    weft_main_fn fn = NULL;
    if (strcmp(argv[1], "work") == 0)
        fn = work_main;
    else if (strcmp(argv[1], "idle") == 0)
        fn = idle_main;
    else if (strcmp(argv[1], "yield") == 0)
        fn = yield_main;
    else if (strcmp(argv[1], "debug") == 0)
        fn = debug_main;
    if (fn == NULL) {
        fprintf(stderr, "schedprog: unknown scenario %s\n", argv[1]);
        return 64;
    }
    int r = weft_main(fn, NULL);
    if (r != 0)
        fprintf(stderr, "schedprog: weft_main returned %d (%s)\n", r,
                weft_err_name(r));
    return r == 0 ? 0 : 1;
}
