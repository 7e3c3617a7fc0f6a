/*
 * bench_sched.c - scheduler micro-benchmarks, weft's side of the pairs that
 * bench/run.sh runs against bench/go/bench_sched.go.
 *
 * Usage: bench_sched spawn|yield|parked|fanout   (Ps from WEFTMAXPROCS)
 *
 * Each benchmark runs once inside weft_main() and prints one benchstat line,
 * "BenchmarkSpawn/impl=weft/procs=2<TAB>1000000<TAB>61.2 ns/op", flushed at
 * once so that it survives a crash in runtime shutdown. It checks its own
 * result and exits 1 when the result is wrong.
 *
 *  spawn   N coroutines that each bump an atomic counter; the main coroutine
 *          spawns them all, then weft_yield()s until the counter reaches N.
 *          Figure: ns per spawn+complete (elapsed / N).
 *  yield   2 coroutines each calling weft_yield() M times while main sleeps.
 *          The last one to finish stamps the end time, so main's sleep
 *          granularity does not count. Figure: elapsed / (2 * M) ns.
 *  parked  N coroutines that count themselves, then park for good with
 *          weft_sleep_until(WEFT_FOREVER). VmRSS is read before spawning
 *          and once all have parked. Figure: RSS growth / N bytes. Returning
 *          from main then abandons them (documented shutdown behaviour).
 *  fanout  T CPU-bound tasks of integer hashing (weft_checkpoint() every
 *          1024 rounds), summed into an atomic and checked against the
 *          constant the Go peer checks. Figure: total ns until the last
 *          task ends; run.sh divides the 1-P time by the 2-P time.
 *
 * The Go peer mirrors every step (go f() for weft_go, runtime.Gosched for
 * weft_yield, time.Sleep for weft_sleep, a channel receive for the park).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_PROG "bench_sched"
#include "bench.h"

#ifndef SPAWN_N
#define SPAWN_N 1000000
#endif
#ifndef YIELD_M
#define YIELD_M 5000000 /* weft_yield() calls per yielder */
#endif
#ifndef PARKED_N
#define PARKED_N 1000000
#endif
#define FANOUT_T 10000
#define FANOUT_K 40000 /* hashing rounds per fan-out task */
/* The sum of every task's hash; bench/go/bench_sched.go checks the same. */
#define FANOUT_SUM UINT64_C(0x35965451c4518a43)


/* spawn_err - report a failed weft_go(); returns 1. */
static int spawn_err(const char *bench, int64_t rc)
{
    return fail("%s: weft_go: %s (%s)", bench, weft_strerror((int)rc),
                weft_err_name((int)rc));
}

/* vm_rss - the process's resident set size in bytes, or -1. */
static int64_t vm_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int64_t kb = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtoll(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* ----------------------------------------------------------------- spawn */

static _Atomic int64_t spawn_done;

static void spawn_one(void *arg)
{
    (void)arg;
    atomic_fetch_add(&spawn_done, 1);
}

static int bench_spawn(void)
{
    int64_t start = weft_now();
    for (int i = 0; i < SPAWN_N; i++) {
        int64_t id = weft_go(spawn_one, NULL);
        if (id <= 0)
            return spawn_err("spawn", id);
    }
    while (atomic_load(&spawn_done) != SPAWN_N)
        weft_yield();
    int64_t el = weft_now() - start;

    int64_t n = atomic_load(&spawn_done);
    if (n != SPAWN_N)
        return fail("spawn: done=%" PRId64 ", want %d", n, SPAWN_N);
    printf("BenchmarkSpawn/impl=weft/procs=%d\t%d\t%.1f ns/op\n", weft_procs(),
           SPAWN_N, (double)el / SPAWN_N);
    fflush(stdout);
    return 0;
}

/* ----------------------------------------------------------------- yield */

static _Atomic int64_t yield_calls;
static _Atomic int64_t yield_finished;
static _Atomic int64_t yield_end; /* weft_now() when the last one ended */

static void yielder(void *arg)
{
    (void)arg;
    for (int i = 0; i < YIELD_M; i++)
        weft_yield();
    atomic_fetch_add(&yield_calls, YIELD_M);
    if (atomic_fetch_add(&yield_finished, 1) + 1 == 2)
        atomic_store(&yield_end, weft_now());
}

static int bench_yield(void)
{
    int64_t start = weft_now();
    for (int i = 0; i < 2; i++) {
        int64_t id = weft_go(yielder, NULL);
        if (id <= 0)
            return spawn_err("yield", id);
    }
    while (atomic_load(&yield_finished) != 2)
        weft_sleep(MSEC);

    int64_t calls = atomic_load(&yield_calls);
    if (calls != (int64_t)2 * YIELD_M)
        return fail("yield: %" PRId64 " calls, want %d", calls, 2 * YIELD_M);
    int64_t el = atomic_load(&yield_end) - start;
    printf("BenchmarkYield/impl=weft/procs=%d\t%" PRId64 "\t%.1f ns/op\n",
           weft_procs(), calls, (double)el / (double)calls);
    fflush(stdout);
    return 0;
}

/* ---------------------------------------------------------------- parked */

static _Atomic int64_t parked_count;

static void parker(void *arg)
{
    (void)arg;
    atomic_fetch_add(&parked_count, 1);
    weft_sleep_until(WEFT_FOREVER);
}

static int bench_parked(void)
{
    int64_t before = vm_rss();
    if (before < 0)
        return fail("parked: cannot read VmRSS from /proc/self/status");
    for (int i = 0; i < PARKED_N; i++) {
        int64_t id = weft_go(parker, NULL);
        if (id <= 0)
            return spawn_err("parked", id);
    }
    while (atomic_load(&parked_count) != PARKED_N)
        weft_sleep(MSEC);
    weft_sleep(50 * MSEC); /* let the last ones reach the park */
    int64_t after = vm_rss();
    if (after < 0)
        return fail("parked: cannot read VmRSS from /proc/self/status");

    printf("BenchmarkParkedRSS/impl=weft\t%d\t%" PRId64 " B/op\n", PARKED_N,
           (after - before) / PARKED_N);
    fflush(stdout);
    return 0;
}

/* ---------------------------------------------------------------- fanout */

/*
 * fanout_hash - the work of one fan-out task: a dependent chain of
 * multiply-xorshift rounds (splitmix64's finaliser). The Go peer's
 * fanoutHash is the same arithmetic.
 */
static uint64_t fanout_hash(uint64_t seed)
{
    uint64_t x = seed * UINT64_C(0x9e3779b97f4a7c15) + 1;
    for (uint64_t k = 0; k < FANOUT_K; k++) {
        if ((k & 1023) == 0)
            weft_checkpoint();
        x ^= x >> 31;
        x *= UINT64_C(0xbf58476d1ce4e5b9);
        x ^= x >> 29;
        x += k;
    }
    return x;
}

static _Atomic uint64_t fanout_acc;
static _Atomic int64_t fanout_finished;
static _Atomic int64_t fanout_end; /* weft_now() when the last one ended */

static void fanout_task(void *arg)
{
    atomic_fetch_add(&fanout_acc, fanout_hash((uint64_t)(uintptr_t)arg));
    if (atomic_fetch_add(&fanout_finished, 1) + 1 == FANOUT_T)
        atomic_store(&fanout_end, weft_now());
}

static int bench_fanout(void)
{
    int64_t start = weft_now();
    for (int i = 0; i < FANOUT_T; i++) {
        int64_t id = weft_go(fanout_task, (void *)(uintptr_t)i);
        if (id <= 0)
            return spawn_err("fanout", id);
    }
    while (atomic_load(&fanout_finished) != FANOUT_T)
        weft_sleep(MSEC);

    uint64_t sum = atomic_load(&fanout_acc);
    if (sum != FANOUT_SUM)
        return fail("fanout: checksum %#" PRIx64 ", want %#" PRIx64, sum,
                    FANOUT_SUM);
    printf("BenchmarkFanout/impl=weft/procs=%d\t1\t%" PRId64 " ns/op\n",
           weft_procs(), atomic_load(&fanout_end) - start);
    fflush(stdout);
    return 0;
}

/* ------------------------------------------------------------------ main */

static const struct bench benches[] = {
    {"spawn", bench_spawn},
    {"yield", bench_yield},
    {"parked", bench_parked},
    {"fanout", bench_fanout},
};

int main(int argc, char **argv)
{
    return bench_main(benches, sizeof benches / sizeof benches[0], argc, argv,
                      "bench_sched spawn|yield|parked|fanout");
}
