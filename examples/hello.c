/*
 * hello.c - weft on one screen: ten thousand cheap coroutines, a CPU-bound
 * fan-out over every processor, and a blocking call that does not stop the
 * other coroutines.
 *
 * Run it twice to see the fan-out use all the CPUs:
 *
 *     WEFTMAXPROCS=1 build/examples/hello
 *     build/examples/hello
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <weft.h>

#define MS (1000 * 1000LL) /* one millisecond in nanoseconds */

#define NSLEEPERS 10000
#define NCHUNKS 64
#define PRIMES_BELOW 2000000

/* splitmix64: a cheap, well-mixed pseudo-random number from a seed. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/*
 * Counting the threads that ran coroutines. Each thread remembers the round
 * it last counted itself in. A coroutine may resume on another thread after
 * any call that parks, so a thread-local is only touched in a function of
 * its own (noinline) that cannot park: its address is never reused across
 * a park.
 */
static atomic_int round_no;
static atomic_int nthreads;
static __thread int counted_round;

__attribute__((noinline)) static void count_thread(void)
{
    int r = atomic_load(&round_no);

    if (counted_round != r) {
        counted_round = r;
        atomic_fetch_add(&nthreads, 1);
    }
}

static void new_round(void)
{
    atomic_fetch_add(&round_no, 1);
    atomic_store(&nthreads, 0);
}

/* Park the calling coroutine until *done reaches want, checking each ms. */
static void wait_for(atomic_int *done, int want)
{
    while (atomic_load(done) < want)
        weft_sleep(1 * MS);
}

static const char *plural(int n)
{
    return n == 1 ? "" : "s";
}

static double ms_since(int64_t t0)
{
    return (double)(weft_now() - t0) / MS;
}

/* ------------------------------------------- 1: many sleeping coroutines */

static atomic_int sleepers_done;
static atomic_llong slept_ns;
static atomic_ullong sleepers_sum;

static void sleeper(void *arg)
{
    uint64_t seed = (uintptr_t)arg;
    int64_t ns = 1 * MS + (int64_t)(mix(seed) % (4 * MS)); /* 1-5 ms */
    uint64_t h = seed;

    weft_sleep(ns); /* parks this coroutine; its thread runs others */

    for (int i = 0; i < 1000; i++) /* a little work once awake */
        h = mix(h);
    count_thread();
    atomic_fetch_add(&slept_ns, ns);
    atomic_fetch_add(&sleepers_sum, h);
    atomic_fetch_add(&sleepers_done, 1);
}

static int run_sleepers(void)
{
    int64_t t0 = weft_now();

    new_round();
    for (uintptr_t i = 0; i < NSLEEPERS; i++) {
        int64_t id = weft_go(sleeper, (void *)i);
        if (id < 0) {
            fprintf(stderr, "weft_go: %s\n", weft_strerror((int)id));
            return 1;
        }
    }
    wait_for(&sleepers_done, NSLEEPERS);
    printf("sleepers: %d coroutines slept 1-5 ms each (%.1f s in all), "
           "all done in %.0f ms, on %d thread%s\n",
           atomic_load(&sleepers_done), (double)atomic_load(&slept_ns) / 1e9,
           ms_since(t0), atomic_load(&nthreads),
           plural(atomic_load(&nthreads)));
    return 0;
}

/* ----------------------------------------------- 2: a CPU-bound fan-out */

struct chunk {
    uint32_t lo, hi; /* count the primes in [lo, hi) */
    uint32_t primes;
};

static atomic_int chunks_done;

static int is_prime(uint32_t n)
{
    if (n < 2)
        return 0;
    for (uint32_t d = 2; d * d <= n; d++)
        if (n % d == 0)
            return 0;
    return 1;
}

static void count_primes(void *arg)
{
    struct chunk *c = arg;

    for (uint32_t n = c->lo; n < c->hi; n++) {
        c->primes += is_prime(n);
        weft_checkpoint(); /* lets a long loop be preempted; nearly free */
    }
    count_thread();
    atomic_fetch_add(&chunks_done, 1);
}

static int run_fanout(void)
{
    static struct chunk chunks[NCHUNKS];
    uint32_t step = PRIMES_BELOW / NCHUNKS, total = 0;
    int64_t t0 = weft_now();

    new_round();
    for (int i = 0; i < NCHUNKS; i++) {
        chunks[i].lo = (uint32_t)i * step;
        chunks[i].hi = i == NCHUNKS - 1 ? PRIMES_BELOW : chunks[i].lo + step;
        int64_t id = weft_go(count_primes, &chunks[i]);
        if (id < 0) {
            fprintf(stderr, "weft_go: %s\n", weft_strerror((int)id));
            return 1;
        }
    }
    wait_for(&chunks_done, NCHUNKS);
    for (int i = 0; i < NCHUNKS; i++)
        total += chunks[i].primes;
    printf("fan-out : %d coroutines counted %u primes below %d "
           "in %.0f ms, on %d thread%s\n",
           NCHUNKS, total, PRIMES_BELOW, ms_since(t0), atomic_load(&nthreads),
           plural(atomic_load(&nthreads)));
    if (total != 148933) { /* the known count: a check, not a guess */
        fprintf(stderr, "fan-out: expected 148933 primes\n");
        return 1;
    }
    return 0;
}

/* --------------------------------- 3: a blocking call, others keep going */

static atomic_int ticks;

static void ticker(void *arg)
{
    for (;;) {
        weft_sleep(10 * MS);
        atomic_fetch_add(&ticks, 1);
    }
}

/* Stands in for any call that blocks its thread: a read() of a pipe, a
 * DNS lookup, a database client library. */
static intptr_t slow_call(void *arg)
{
    struct timespec ts = {0, 200 * MS};

    nanosleep(&ts, NULL);
    return 42;
}

static int run_blocking(void)
{
    int64_t id = weft_go(ticker, NULL);
    if (id < 0) {
        fprintf(stderr, "weft_go: %s\n", weft_strerror((int)id));
        return 1;
    }
    weft_sleep(15 * MS); /* let the ticker get going */

    int before = atomic_load(&ticks);
    int64_t t0 = weft_now();
    /* Without weft_blocking(), with one P the ticker would not run at all
     * until slow_call returned: its P would be stuck in nanosleep(). */
    intptr_t r = weft_blocking(slow_call, NULL);
    double took = ms_since(t0);
    int woke = atomic_load(&ticks) - before;

    printf("blocking: a %.0f ms blocking call in weft_blocking() "
           "returned %ld; meanwhile a 10 ms ticker woke %d times\n",
           took, (long)r, woke);
    return 0; /* the ticker is parked; returning from main ends it */
}

/* ------------------------------------------------------------------ main */

static int hello(void *arg)
{
    const char *env = getenv("WEFTMAXPROCS");

    printf("weft: %d P%s (WEFTMAXPROCS=%s)\n", weft_procs(),
           plural(weft_procs()), env ? env : "unset, one per CPU");
    if (run_sleepers() != 0 || run_fanout() != 0 || run_blocking() != 0)
        return 1;
    return 0;
}

int main(void)
{
    int rc = weft_main(hello, NULL);

    if (rc < 0) {
        fprintf(stderr, "weft_main: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
