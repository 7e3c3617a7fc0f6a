/*
 * bench_sync.c - channel, select and mutex micro-benchmarks, weft's side of
 * the pairs that bench/run.sh runs against bench/go/bench_sync.go.
 *
 * Usage: bench_sync pingpong|chanbuf|mutex|select2   (Ps from WEFTMAXPROCS)
 *
 * Each benchmark runs once inside weft_main() and prints one benchstat line,
 * "BenchmarkPingPong/impl=weft/procs=1<TAB>1000000<TAB>98.1 ns/op", flushed
 * at once. It checks its own result and exits 1 when the result is wrong
 * (or a weft call fails).
 *
 *  pingpong  coroutines A and B bounce an int over two unbuffered channels:
 *            A sends i on ping and waits for i + 1 on pong, PINGPONG_N
 *            times, then closes ping; B answers every value with value + 1
 *            until ping is closed. A times its loop. Figure: ns per round
 *            trip (two sends, two receives, two wake-ups).
 *  chanbuf   a producer sends 0 .. CHANBUF_N-1 (int64_t) into a channel of
 *            capacity 128 and closes it; a consumer receives until closed,
 *            counting and summing, and stamps the end time. Figure: items
 *            per second (higher is better), from main's start before the
 *            spawns to the consumer's last receive.
 *  mutex     MUTEX_G coroutines each lock a weft_mutex_t, increment a plain
 *            shared counter and unlock, MUTEX_M times; the last to finish
 *            stamps the end. The counter must be MUTEX_G * MUTEX_M.
 *            Figure: ns per lock+unlock (elapsed / (G * M)).
 *  select2   two buffered channels of capacity SELECT_M are each filled with
 *            0 .. SELECT_M-1 before the clock starts; then one coroutine
 *            runs SELECT_M weft_select()s over the two receive cases. Both
 *            cases are always ready, so nothing parks and the figure is
 *            select's own cost: locking the two channels, the random
 *            choice, the copy. Each channel's values must arrive in order
 *            and each case must be chosen 45..55% of the time (the choice
 *            is uniformly random). Figure: ns per select.
 *
 * The Go peer mirrors every step (go f() for weft_go, unbuffered/buffered
 * chan int / chan int64, sync.Mutex, a two-case select, time.Sleep polling
 * for main's wait).
 *
 * BENCH_PROFILE=1 in the environment (both programs) turns on block
 * profiling at rate 1 and mutex profiling at fraction 1 before the
 * benchmark starts (weft_set_block_profile_rate / Go's
 * runtime.SetBlockProfileRate, weft_set_mutex_profile_fraction / Go's
 * runtime.SetMutexProfileFraction): every wait and every contended
 * unlock is recorded, the most a program can ask for. The benchstat name
 * then ends in "/profile=on", and after it comes a comment line
 *     # profile block=N mutex=M
 * with the number of records in each profile at the end, so that a
 * caller can check the profiles did record (bench/profiling.sh compares
 * the figures with and without).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_PROG "bench_sync"
#include "bench.h"

#ifndef PINGPONG_N
#define PINGPONG_N 1000000 /* round trips */
#endif
#ifndef CHANBUF_N
#define CHANBUF_N 10000000 /* items */
#endif
#define CHANBUF_CAP 128
#ifndef MUTEX_G
#define MUTEX_G 4
#endif
#ifndef MUTEX_M
#define MUTEX_M 1000000 /* lock/unlock pairs per coroutine */
#endif
#ifndef SELECT_M
#define SELECT_M 1000000 /* selects */
#endif



/* api_err - report a failed weft call; returns 1. */
static int api_err(const char *bench, const char *call, int64_t rc)
{
    return fail("%s: %s: %s (%s)", bench, call, weft_strerror((int)rc),
                weft_err_name((int)rc));
}

/*
 * A worker coroutine cannot return an error code: it reports the first
 * failure here (printed on stderr at once) and main turns it into exit 1.
 */
static _Atomic int worker_failed;

static void worker_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static void worker_fail(const char *fmt, ...)
{
    va_list ap;
    if (atomic_exchange(&worker_failed, 1) != 0)
        return;
    fputs("bench_sync(weft): ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* worker_api_err - worker_fail() for a failed weft call. */
static void worker_api_err(const char *bench, const char *call, int rc)
{
    worker_fail("%s: %s: %s (%s)", bench, call, weft_strerror(rc),
                weft_err_name(rc));
}

/* Workers count themselves out here; main polls it (1 ms sleeps). */
static _Atomic int64_t finished;
static _Atomic int64_t t_end; /* weft_now() when the timed work ended */

/* wait_finished - park main until n workers have counted themselves out. */
static void wait_finished(int64_t n)
{
    while (atomic_load(&finished) != n)
        weft_sleep(MSEC);
}

/* The benchstat name's suffix: "/profile=on" under BENCH_PROFILE=1. */
static const char *prof_suffix = "";

/* profile_on - under BENCH_PROFILE=1, record every blocking event and
 * every mutex contention from here on. Runs first in each benchmark,
 * inside the runtime, so that nothing weft_main sets up can reset it. */
static void profile_on(void)
{
    const char *e = getenv("BENCH_PROFILE");
    if (e == NULL || strcmp(e, "1") != 0)
        return;
    weft_set_block_profile_rate(1);
    weft_set_mutex_profile_fraction(1);
    prof_suffix = "/profile=on";
}

/* profile_report - under BENCH_PROFILE=1, print how many records each
 * profile holds (after the benchmark line). */
static void profile_report(void)
{
    if (prof_suffix[0] == '\0')
        return;
    printf("# profile block=%" PRId64 " mutex=%" PRId64 "\n",
           weft_profile_count("block"), weft_profile_count("mutex"));
    fflush(stdout);
}

/* spawn - weft_go(fn, arg), reporting a failure; returns 0 or 1. */
static int spawn(const char *bench, weft_fn fn, void *arg)
{
    int64_t id = weft_go(fn, arg);
    return id > 0 ? 0 : api_err(bench, "weft_go", id);
}



/* -------------------------------------------------------------- pingpong */


static weft_chan_t *pp_ping, *pp_pong;
static _Atomic int64_t pp_start; /* weft_now() when A's loop began */

/* pp_a - sends i, expects i + 1 back; times the loop; closes ping. */
static void pp_a(void *arg)
{
    (void)arg;
    int64_t start = weft_now();
    for (int i = 0; i < PINGPONG_N; i++) {
        int v = i, rc;
        if ((rc = weft_chan_send(pp_ping, &v)) != 0) {
            worker_api_err("pingpong", "weft_chan_send", rc);
            break;
        }
        if ((rc = weft_chan_recv(pp_pong, &v)) != 0) {
            worker_api_err("pingpong", "weft_chan_recv", rc);
            break;
        }
        if (v != i + 1) {
            worker_fail("pingpong: round %d: got %d, want %d", i, v, i + 1);
            break;
        }
    }
    atomic_store(&t_end, weft_now());
    atomic_store(&pp_start, start);
    weft_chan_close(pp_ping);
    atomic_fetch_add(&finished, 1);
}

/* pp_b - answers every value with value + 1 until ping is closed. */
static void pp_b(void *arg)
{
    (void)arg;
    int64_t answered = 0;
    for (;;) {
        int v, rc = weft_chan_recv(pp_ping, &v);
        if (rc == WEFT_ECLOSED)
            break;
        if (rc != 0) {
            worker_api_err("pingpong", "weft_chan_recv", rc);
            break;
        }
        v++;
        if ((rc = weft_chan_send(pp_pong, &v)) != 0) {
            worker_api_err("pingpong", "weft_chan_send", rc);
            break;
        }
        answered++;
    }
    if (answered != PINGPONG_N)
        worker_fail("pingpong: B answered %" PRId64 ", want %d", answered,
                    PINGPONG_N);
    weft_chan_close(pp_pong); /* unblock A if B failed */
    weft_chan_close(pp_ping);
    atomic_fetch_add(&finished, 1);
}

static int bench_pingpong(void)
{
    profile_on();
    int rc;
    if ((rc = weft_chan_new(&pp_ping, sizeof(int), 0)) != 0 ||
        (rc = weft_chan_new(&pp_pong, sizeof(int), 0)) != 0)
        return api_err("pingpong", "weft_chan_new", rc);
    if (spawn("pingpong", pp_b, NULL) || spawn("pingpong", pp_a, NULL))
        return 1;
    wait_finished(2);
    weft_chan_free(pp_ping);
    weft_chan_free(pp_pong);
    if (atomic_load(&worker_failed))
        return 1;

    int64_t el = atomic_load(&t_end) - atomic_load(&pp_start);
    printf("BenchmarkPingPong/impl=weft/procs=%d%s\t%d\t%.1f ns/op\n",
           weft_procs(), prof_suffix, PINGPONG_N, (double)el / PINGPONG_N);
    fflush(stdout);
    profile_report();
    return 0;
}

/* --------------------------------------------------------------- chanbuf */

static weft_chan_t *cb_chan;

static void cb_producer(void *arg)
{
    (void)arg;
    for (int64_t i = 0; i < CHANBUF_N; i++) {
        int rc = weft_chan_send(cb_chan, &i);
        if (rc != 0) {
            worker_api_err("chanbuf", "weft_chan_send", rc);
            break;
        }
    }
    weft_chan_close(cb_chan);
    atomic_fetch_add(&finished, 1);
}

static void cb_consumer(void *arg)
{
    (void)arg;
    int64_t n = 0, sum = 0, v;
    int rc;
    while ((rc = weft_chan_recv(cb_chan, &v)) == 0) {
        if (v != n) { /* one producer: values arrive in order */
            worker_fail("chanbuf: item %" PRId64 " is %" PRId64, n, v);
            break;
        }
        sum += v;
        n++;
    }
    atomic_store(&t_end, weft_now());
    if (rc != 0 && rc != WEFT_ECLOSED)
        worker_api_err("chanbuf", "weft_chan_recv", rc);
    weft_chan_close(cb_chan); /* unblock the producer if we stopped early */
    const int64_t want = (int64_t)CHANBUF_N * (CHANBUF_N - 1) / 2;
    if (n != CHANBUF_N || sum != want)
        worker_fail("chanbuf: received %" PRId64 " items summing to %" PRId64
                    ", want %d summing to %" PRId64,
                    n, sum, CHANBUF_N, want);
    atomic_fetch_add(&finished, 1);
}

static int bench_chanbuf(void)
{
    profile_on();
    int rc = weft_chan_new(&cb_chan, sizeof(int64_t), CHANBUF_CAP);
    if (rc != 0)
        return api_err("chanbuf", "weft_chan_new", rc);
    int64_t start = weft_now();
    if (spawn("chanbuf", cb_consumer, NULL) ||
        spawn("chanbuf", cb_producer, NULL))
        return 1;
    wait_finished(2);
    weft_chan_free(cb_chan);
    if (atomic_load(&worker_failed))
        return 1;

    int64_t el = atomic_load(&t_end) - start;
    printf("BenchmarkChanBuf/impl=weft/procs=%d%s\t%d\t%.0f items/s\n",
           weft_procs(), prof_suffix, CHANBUF_N,
           (double)CHANBUF_N * 1e9 / (double)el);
    fflush(stdout);
    profile_report();
    return 0;
}


/* ----------------------------------------------------------------- mutex */


static weft_mutex_t mx_mu = WEFT_MUTEX_INIT;
static int64_t mx_counter; /* guarded by mx_mu */

static void mx_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < MUTEX_M; i++) {
        int rc = weft_mutex_lock(&mx_mu);
        if (rc != 0) {
            worker_api_err("mutex", "weft_mutex_lock", rc);
            break;
        }
        mx_counter++;
        if ((rc = weft_mutex_unlock(&mx_mu)) != 0) {
            worker_api_err("mutex", "weft_mutex_unlock", rc);
            break;
        }
    }
    if (atomic_fetch_add(&finished, 1) + 1 == MUTEX_G)
        atomic_store(&t_end, weft_now());
}

static int bench_mutex(void)
{
    profile_on();
    int64_t start = weft_now();
    for (int i = 0; i < MUTEX_G; i++)
        if (spawn("mutex", mx_worker, NULL))
            return 1;
    wait_finished(MUTEX_G);
    if (atomic_load(&worker_failed))
        return 1;

    /* Every worker has counted itself out after its last unlock: taking
     * the lock once more orders main after all their increments. */
    int rc = weft_mutex_lock(&mx_mu);
    if (rc != 0)
        return api_err("mutex", "weft_mutex_lock", rc);
    int64_t counter = mx_counter;
    weft_mutex_unlock(&mx_mu);
    const int64_t total = (int64_t)MUTEX_G * MUTEX_M;
    if (counter != total)
        return fail("mutex: counter %" PRId64 ", want %" PRId64, counter,
                    total);

    int64_t el = atomic_load(&t_end) - start;
    printf("BenchmarkMutex/impl=weft/procs=%d%s\t%" PRId64 "\t%.1f ns/op\n",
           weft_procs(), prof_suffix, total, (double)el / (double)total);
    fflush(stdout);
    profile_report();
    return 0;
}


/* --------------------------------------------------------------- select2 */


static int bench_select2(void)
{
    profile_on();
    weft_chan_t *ch[2] = {NULL, NULL};
    int rc, ret = 1;

    for (int k = 0; k < 2; k++) {
        if ((rc = weft_chan_new(&ch[k], sizeof(int), SELECT_M)) != 0) {
            api_err("select2", "weft_chan_new", rc);
            goto out;
        }
        for (int i = 0; i < SELECT_M; i++) {
            if ((rc = weft_chan_send(ch[k], &i)) != 0) {
                api_err("select2", "weft_chan_send", rc);
                goto out;
            }
        }
    }

    int v = -1;
    weft_select_case_t cases[2] = {
        {.chan = ch[0], .op = WEFT_RECV, .elem = &v},
        {.chan = ch[1], .op = WEFT_RECV, .elem = &v},
    };
    int next[2] = {0, 0}; /* the value each channel must deliver next */
    int64_t start = weft_now();
    for (int i = 0; i < SELECT_M; i++) {
        int k = weft_select(cases, 2);
        if (k != 0 && k != 1) {
            if (k < 0)
                api_err("select2", "weft_select", k);
            else
                fail("select2: weft_select returned case %d of 2", k);
            goto out;
        }
        if (cases[k].result != 0) {
            api_err("select2", "weft_select case result", cases[k].result);
            goto out;
        }
        if (v != next[k]) {
            fail("select2: select %d: case %d gave %d, want %d", i, k, v,
                 next[k]);
            goto out;
        }
        next[k]++;
    }
    int64_t el = weft_now() - start;

    /* Uniform choice: each case within 45..55% (sd is 0.05% at 1M). */
    for (int k = 0; k < 2; k++) {
        if (next[k] < SELECT_M * 45 / 100 || next[k] > SELECT_M * 55 / 100) {
            fail("select2: case %d chosen %d times of %d: not uniform", k,
                 next[k], SELECT_M);
            goto out;
        }
    }
    printf("BenchmarkSelect2/impl=weft/procs=%d%s\t%d\t%.1f ns/op\n",
           weft_procs(), prof_suffix, SELECT_M, (double)el / SELECT_M);
    fflush(stdout);
    profile_report();
    ret = 0;
out:
    for (int k = 0; k < 2; k++)
        if (ch[k] != NULL)
            weft_chan_free(ch[k]);
    return ret;
}


/* ------------------------------------------------------------------ main */

static const struct bench benches[] = {
    {"pingpong", bench_pingpong},
    {"chanbuf", bench_chanbuf},
    {"mutex", bench_mutex},
    {"select2", bench_select2},
};

int main(int argc, char **argv)
{
    return bench_main(benches, sizeof benches / sizeof benches[0], argc, argv,
                      "bench_sync pingpong|chanbuf|mutex|select2");
}
