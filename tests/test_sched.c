/*
 * test_sched.c - black-box tests of the scheduler through the public API
 * (weft.h): lifecycle, spawn, yield, sleep/timers, syscall hand-off,
 * preemption, stacks, bad input.
 *
 * Each test runs in its own forked child (harness.h), so a test may set
 * WEFTMAXPROCS with setenv() before it calls weft_main(). Bodies are
 * `static int body(void *)` functions run with run() (weft_test.h: under
 * the leak gate) or, when they leave coroutines on purpose, weft_main();
 * they assert from any coroutine (a failed assertion ends the child at
 * once).
 *
 * Timing: assertions are about ordering, ratios and loose sanity bounds,
 * never exact interleavings. Bounds are multiplied by slow(): the harness's
 * HARNESS_TIMEOUT_SCALE, times 4 in sanitizer builds.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "weft_test.h"

/* wait_yield - yield until *c >= n. */
static void wait_yield(_Atomic int64_t *c, int64_t n)
{
    while (atomic_load(c) < n)
        weft_yield();
}

/* incr - a coroutine that adds 1 to the int64 counter arg. */
static void incr(void *arg)
{
    atomic_fetch_add((_Atomic int64_t *)arg, 1);
}

static pid_t my_tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* ------------------------------------------------------------ lifecycle */

static int ret_arg(void *arg)
{
    return (int)(intptr_t)arg;
}

/* weft_main itself below, not run(): the call made while a runtime runs
 * is what nested_main_is_busy tests. */
static void try_nested(void *arg)
{
    _Atomic int64_t *done = arg;
    EXPECT_ERR(weft_main(ret_arg, NULL), WEFT_EBUSY);
    atomic_fetch_add(done, 1);
}

static void *nested_thread(void *arg)
{
    EXPECT_ERR(weft_main(ret_arg, NULL), WEFT_EBUSY);
    atomic_fetch_add((_Atomic int64_t *)arg, 1);
    return NULL;
}

static int nested_body(void *arg)
{
    _Atomic int64_t done = 0;
    /* From coroutine 1 itself, from another coroutine, from a pthread. */
    EXPECT_ERR(weft_main(ret_arg, NULL), WEFT_EBUSY);
    EXPECT_ERR(weft_main(NULL, NULL), WEFT_EINVAL);
    EXPECT_OK(weft_go(try_nested, &done));
    wait_yield(&done, 1);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, nested_thread, &done), 0);
    wait_until(&done, 2);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    return 0;
}

TEST(main_returns_result)
{
    /* A NULL fn: weft_main's own argument check, no runtime to gate. */
    EXPECT_ERR(weft_main(NULL, NULL), WEFT_EINVAL);
    ASSERT_EQ(run_ret(0, ret_arg, (void *)(intptr_t)0), 0);
    ASSERT_EQ(run_ret(0, ret_arg, (void *)(intptr_t)42), 42);
    ASSERT_EQ(run_ret(0, ret_arg, (void *)(intptr_t)-7), -7);
    ASSERT_EQ(run_ret(0, ret_arg, (void *)(intptr_t)INT32_MAX), INT32_MAX);
    ASSERT_EQ(weft_procs(), 0);
    EXPECT_ERR(weft_main(NULL, NULL), WEFT_EINVAL);
}

TEST(nested_main_is_busy)
{
    run(0, nested_body, NULL);
    /* And the runtime still starts afterwards. */
    ASSERT_EQ(run_ret(0, ret_arg, (void *)(intptr_t)3), 3);
}

static int self_is_one(void *arg)
{
    ASSERT_EQ(weft_self(), 1);
    ASSERT_GE(weft_procs(), 1);
    return 0;
}

TEST(main_is_coroutine_1)
{
    ASSERT_EQ(weft_self(), 0);
    run(0, self_is_one, NULL);
    ASSERT_EQ(weft_self(), 0);
}

/* Shutdown with parked and runnable coroutines left behind. */
static _Atomic int64_t sd_started;
static _Atomic int64_t sd_ret_at;

static void sleep_forever(void *arg)
{
    atomic_fetch_add(&sd_started, 1);
    weft_sleep_until(WEFT_FOREVER);
    FAIL("a WEFT_FOREVER sleeper woke up");
}

static void sleep_10min(void *arg)
{
    atomic_fetch_add(&sd_started, 1);
    weft_sleep(600000 * MS);
    FAIL("a 10 min sleeper woke up before shutdown");
}

static void yield_forever(void *arg)
{
    atomic_fetch_add(&sd_started, 1);
    for (;;)
        weft_yield();
}

static void spin_checkpoint_forever(void *arg)
{
    atomic_fetch_add(&sd_started, 1);
    for (;;)
        weft_checkpoint();
}

static int shutdown_body(void *arg)
{
    int n = 0;
    for (int i = 0; i < 1000; i++, n++)
        EXPECT_OK(weft_go(sleep_forever, NULL));
    for (int i = 0; i < 100; i++, n++)
        EXPECT_OK(weft_go(sleep_10min, NULL));
    for (int i = 0; i < 3; i++, n++)
        EXPECT_OK(weft_go(yield_forever, NULL));
    if (arg != NULL) /* also a spinner that only checkpoints */
        for (int i = 0; i < 2; i++, n++)
            EXPECT_OK(weft_go(spin_checkpoint_forever, NULL));
    wait_yield(&sd_started, n);
    atomic_store(&sd_ret_at, weft_now());
    return 42;
}

static int small_work(void *arg)
{
    _Atomic int64_t *c = arg;
    for (int i = 0; i < 100; i++)
        EXPECT_OK(weft_go(incr, c));
    wait_yield(c, 100);
    return 0;
}

TEST(shutdown_with_parked_coroutines)
{
    for (int procs = 1; procs <= 2; procs++) {
        atomic_store(&sd_started, 0);
        set_procs(procs);
        /* Not run(): the body leaves its sleepers and spinners on purpose. */
        int r = weft_main(shutdown_body, procs == 2 ? (void *)1 : NULL);
        int64_t took = weft_now() - atomic_load(&sd_ret_at);
        ASSERT_EQ(r, 42);
        /* The sleepers (10 minutes) must not be waited for. */
        ASSERT_LT(took, (int64_t)(5000 * MS * slow()));
        ASSERT_EQ(weft_procs(), 0);
        ASSERT_EQ(weft_self(), 0);
        /* Restartable: a second runtime in the same process works. */
        _Atomic int64_t c = 0;
        run(procs, small_work, &c);
        ASSERT_EQ(atomic_load(&c), 100);
    }
}

/* ----------------------------------------------------------------- spawn */


#define SPAWN_N 1000000

static _Atomic int64_t spawn_count;

static int64_t *spawn_ids;

/* spawn_body - spawn n coroutines that each add 1 to spawn_count, keeping
 * the ids weft_go returned in spawn_ids; wait until all have run. */
static int spawn_body(void *arg)
{
    int n = (int)(intptr_t)arg;
    ASSERT_GT(weft_self(), 0);
    for (int i = 0; i < n; i++) {
        int64_t id = weft_go(incr, &spawn_count);
        if (id <= 0) /* not ASSERT_GT: it costs nothing when it holds */
            HARNESS_FAIL("spawn %d: weft_go returned %" PRId64 " (%s)", i, id,
                         weft_err_name((int)id));
        spawn_ids[i] = id;
    }
    wait_yield(&spawn_count, n);
    ASSERT_EQ(atomic_load(&spawn_count), n);
    return 0;
}

/* check_ids - spawn_ids[0..n) are unique; returns the index of the first
 * id not greater than its predecessor, or -1. */
static int check_ids(int n)
{
    int first_down = -1;
    for (int i = 1; i < n && first_down < 0; i++)
        if (spawn_ids[i] <= spawn_ids[i - 1])
            first_down = i;
    int64_t *sorted = malloc((size_t)n * sizeof *sorted);
    ASSERT(sorted != NULL);
    memcpy(sorted, spawn_ids, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_i64);
    for (int i = 1; i < n; i++)
        if (sorted[i] == sorted[i - 1])
            HARNESS_FAIL("weft_go returned id %" PRId64 " twice", sorted[i]);
    free(sorted);
    return first_down;
}

TEST_TIMEOUT(spawn_1m, 120)
{
    spawn_ids = malloc(SPAWN_N * sizeof *spawn_ids);
    ASSERT(spawn_ids != NULL);
    run(0, spawn_body, (void *)(intptr_t)SPAWN_N);
    ASSERT_EQ(atomic_load(&spawn_count), SPAWN_N);
    check_ids(SPAWN_N);
    free(spawn_ids);
}

/* Ids are unique and never reused (weft.h). They come from per-P batches
 * of 16, as Go's goids do, so they increase along one P's spawns but not
 * across Ps: a spawner that migrates draws from another P's batch. */
TEST(spawn_ids_unique)
{
    const int n = 200000;
    spawn_ids = malloc((size_t)n * sizeof *spawn_ids);
    ASSERT(spawn_ids != NULL);
    for (int procs = 1; procs <= 2; procs++) {
        atomic_store(&spawn_count, 0);
        run(procs, spawn_body, (void *)(intptr_t)n);
        int bad = check_ids(n); /* fails the test on a duplicate */
        if (procs == 1 && bad >= 0)
            FAIL("procs=1: spawn %d got id %" PRId64 " after %" PRId64, bad,
                 spawn_ids[bad], spawn_ids[bad - 1]);
    }
    free(spawn_ids);
}

#define SELF_N 2000

struct self_rec {
    int64_t spawned_as; /* weft_go's result, written by the spawner */
    _Atomic int64_t seen; /* weft_self() inside */
};

static _Atomic int64_t self_done;

static void record_self(void *arg)
{
    struct self_rec *r = arg;
    atomic_store(&r->seen, weft_self());
    weft_yield(); /* and the id is still the same after a switch */
    ASSERT_EQ(weft_self(), atomic_load(&r->seen));
    weft_sleep(10 * US);
    ASSERT_EQ(weft_self(), atomic_load(&r->seen));
    atomic_fetch_add(&self_done, 1);
}

static int self_body(void *arg)
{
    static struct self_rec recs[SELF_N];
    int64_t me = weft_self();
    for (int i = 0; i < SELF_N; i++) {
        recs[i].spawned_as = weft_go(record_self, &recs[i]);
        ASSERT_GT(recs[i].spawned_as, 0);
    }
    wait_yield(&self_done, SELF_N);
    ASSERT_EQ(weft_self(), me);
    static int64_t ids[SELF_N + 1];
    for (int i = 0; i < SELF_N; i++) {
        ASSERT_EQ(atomic_load(&recs[i].seen), recs[i].spawned_as);
        ids[i] = recs[i].spawned_as;
    }
    ids[SELF_N] = me;
    qsort(ids, SELF_N + 1, sizeof ids[0], cmp_i64);
    for (int i = 1; i <= SELF_N; i++)
        ASSERT_LT(ids[i - 1], ids[i]);
    return 0;
}

TEST(self_unique_per_coroutine)
{
    run(2, self_body, NULL);
    atomic_store(&self_done, 0);
    run(1, self_body, NULL);
}

/* ------------------------------------------------------------- fairness */

/* Each counter on its own cache line: shared, the two yielders would
 * fight over the line and the split would measure that, not weft. */
struct fair {
    _Atomic int stop;
    struct {
        _Alignas(64) _Atomic int64_t v;
    } n[2];
    _Atomic int64_t done;
};

struct fair_arg {
    struct fair *f;
    int i;
};

static void yielder(void *arg)
{
    struct fair_arg *a = arg;
    while (!atomic_load(&a->f->stop)) {
        atomic_fetch_add_explicit(&a->f->n[a->i].v, 1, memory_order_relaxed);
        weft_yield();
    }
    atomic_fetch_add(&a->f->done, 1);
}

/* fairness_body - two yielders for 200 ms; returns 1 if their progress is
 * within 2x of each other, 0 if not. Both must make progress in any case.
 * With 1 P the split is the scheduler's alone: that is what the ratio
 * checks. With 2 Ps each yielder usually has a P of its own and the split
 * is the OS's CPU share of two threads, not weft's: there only progress
 * is asserted. */
static int fairness_body(void *arg)
{
    (void)arg;
    struct fair f = {0};
    struct fair_arg a[2] = {{&f, 0}, {&f, 1}};
    EXPECT_OK(weft_go(yielder, &a[0]));
    EXPECT_OK(weft_go(yielder, &a[1]));
    weft_sleep(200 * MS);
    atomic_store(&f.stop, 1);
    wait_until(&f.done, 2);
    int64_t n0 = atomic_load(&f.n[0].v), n1 = atomic_load(&f.n[1].v);
    printf("procs=%d: %" PRId64 " vs %" PRId64 " yields\n", weft_procs(), n0,
           n1);
    ASSERT_GT(n0, 100);
    ASSERT_GT(n1, 100);
    return n0 <= 2 * n1 && n1 <= 2 * n0;
}

TEST(yield_fairness)
{
    ASSERT_EQ(run_ret(1, fairness_body, NULL), 1);
    int r = run_ret(2, fairness_body, NULL);
    ASSERT(r == 0 || r == 1); /* both made progress (asserted inside) */
}

/* --------------------------------------------------------------- timers */

#define TIMER_N 1000

struct timer_rec {
    int64_t deadline;
    _Atomic int64_t woke;
};

static struct timer_rec trecs[TIMER_N];
static _Atomic int64_t timer_done;

static void timed_sleeper(void *arg)
{
    struct timer_rec *r = arg;
    EXPECT_OK(weft_sleep_until(r->deadline));
    atomic_store(&r->woke, weft_now());
    atomic_fetch_add(&timer_done, 1);
}

static int cmp_deadline(const void *a, const void *b)
{
    const struct timer_rec *x = *(struct timer_rec *const *)a;
    const struct timer_rec *y = *(struct timer_rec *const *)b;
    return (x->deadline > y->deadline) - (x->deadline < y->deadline);
}

static int timers_body(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    int64_t start = weft_now() + 2 * MS;
    atomic_store(&timer_done, 0);
    for (int i = 0; i < TIMER_N; i++) {
        trecs[i].deadline = start + (int64_t)(rand_r(&seed) % 50000) * US;
        atomic_store(&trecs[i].woke, 0);
        EXPECT_OK(weft_go(timed_sleeper, &trecs[i]));
    }
    wait_until(&timer_done, TIMER_N);

    static struct timer_rec *by_dl[TIMER_N];
    for (int i = 0; i < TIMER_N; i++)
        by_dl[i] = &trecs[i];
    qsort(by_dl, TIMER_N, sizeof by_dl[0], cmp_deadline);
    const int64_t slack = (int64_t)(50 * MS * slow());
    const int64_t max_late = (int64_t)(500 * MS * slow());
    int64_t maxlate = 0, worst_inv = 0;
    /* Never early, never absurdly late. */
    for (int i = 0; i < TIMER_N; i++) {
        int64_t late = atomic_load(&by_dl[i]->woke) - by_dl[i]->deadline;
        if (late < 0)
            HARNESS_FAIL("timer %d woke %" PRId64 " ns before its deadline", i,
                         -late);
        if (late > maxlate)
            maxlate = late;
    }
    ASSERT_LT(maxlate, max_late);
    /* Order: whoever's deadline is earlier by more than slack woke no later:
     * k walks the prefix of deadlines < dl[j] - slack, m is its latest wake. */
    int64_t m = INT64_MIN;
    for (int j = 0, k = 0; j < TIMER_N; j++) {
        while (k < j && by_dl[k]->deadline < by_dl[j]->deadline - slack) {
            int64_t w = atomic_load(&by_dl[k]->woke);
            if (w > m)
                m = w;
            k++;
        }
        int64_t inv = k > 0 ? m - atomic_load(&by_dl[j]->woke) : 0;
        if (inv > worst_inv)
            worst_inv = inv;
    }
    printf("seed %u procs %d: max lateness %.3f ms, worst inversion "
           "%.3f ms\n",
           (unsigned)(uintptr_t)arg, weft_procs(), maxlate / 1e6,
           worst_inv / 1e6);
    if (worst_inv > 0)
        HARNESS_FAIL("timers out of order: a coroutine whose deadline was "
                     "more than %" PRId64 " ms earlier woke %.3f ms later",
                     slack / MS, worst_inv / 1e6);
    return 0;
}

TEST(timers_in_order_never_early)
{
    for (int procs = 1; procs <= 2; procs++)
        for (unsigned seed = 1; seed <= 4; seed++)
            run(procs, timers_body, (void *)(uintptr_t)(seed * 7919));
}

static int sleep_zero_body(void *arg)
{
    int64_t t0 = weft_now();
    for (int i = 0; i < 1000; i++) {
        EXPECT_OK(weft_sleep(0));
        EXPECT_OK(weft_sleep(-1));
        EXPECT_OK(weft_sleep(INT64_MIN));
        EXPECT_OK(weft_sleep_until(0));
        EXPECT_OK(weft_sleep_until(INT64_MIN));
        EXPECT_OK(weft_sleep_until(weft_now() - 1));
    }
    /* 6000 calls that return at once: far below one timer tick each. */
    ASSERT_LT(weft_now() - t0, (int64_t)(1000 * MS * slow()));
    /* A real sleep does sleep, at least as long as asked. */
    int64_t t1 = weft_now();
    EXPECT_OK(weft_sleep(20 * MS));
    ASSERT_GE(weft_now() - t1, 20 * MS);
    t1 = weft_now();
    EXPECT_OK(weft_sleep_until(t1 + 5 * MS));
    ASSERT_GE(weft_now(), t1 + 5 * MS);
    return 0;
}

TEST(sleep_nonpositive_returns_at_once)
{
    run(1, sleep_zero_body, NULL);
    run(2, sleep_zero_body, NULL);
}

static void *now_thread(void *arg)
{
    int64_t prev = weft_now();
    for (int i = 0; i < 100000; i++) {
        int64_t t = weft_now();
        ASSERT_GE(t, prev);
        prev = t;
    }
    return NULL;
}

TEST(now_is_monotonic)
{
    struct timespec ts;
    int64_t a = weft_now();
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t b = weft_now();
    int64_t mono = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    ASSERT_GT(a, 0);
    /* Same clock as CLOCK_MONOTONIC (within 1 s: the API only promises a
     * monotonic clock, but a different epoch would break deadlines computed
     * by users from clock_gettime). */
    ASSERT_LE(a, b);
    ASSERT_LT(mono - a, 1000 * MS);
    ASSERT_LT(b - mono, 1000 * MS);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, now_thread, NULL), 0);
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
}

/* ------------------------------------------------------ syscall hand-off */

struct handoff {
    _Atomic int64_t ticks;      /* the other coroutine's progress */
    _Atomic int64_t blocked_done;
    _Atomic int64_t ticker_done;
    _Atomic int64_t during;     /* ticks while the thread was blocked */
    _Atomic int64_t blocked_ns;
    int use_blocking;
};

static intptr_t usleep_200ms(void *arg)
{
    struct handoff *h = arg;
    int64_t t0 = weft_now(), n0 = atomic_load(&h->ticks);
    struct timespec ts = {0, 200 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0)
        ;
    atomic_store(&h->during, atomic_load(&h->ticks) - n0);
    atomic_store(&h->blocked_ns, weft_now() - t0);
    return 1234;
}

static void blocker(void *arg)
{
    struct handoff *h = arg;
    /* Let the ticker get going first. */
    while (atomic_load(&h->ticks) < 10)
        weft_yield();
    if (h->use_blocking) {
        ASSERT_EQ(weft_blocking(usleep_200ms, h), 1234);
    } else {
        EXPECT_OK(weft_syscall_enter());
        usleep_200ms(h);
        EXPECT_OK(weft_syscall_exit());
    }
    /* Back in the runtime: weft calls work again. */
    EXPECT_OK(weft_yield());
    atomic_store(&h->blocked_done, 1);
}

static void ticker(void *arg)
{
    struct handoff *h = arg;
    while (!atomic_load(&h->blocked_done)) {
        atomic_fetch_add(&h->ticks, 1);
        if (atomic_load(&h->ticks) & 1)
            weft_yield();
        else
            weft_sleep(100 * US);
    }
    atomic_store(&h->ticker_done, 1);
}

static int handoff_body(void *arg)
{
    struct handoff *h = arg;
    ASSERT_EQ(weft_procs(), 1);
    EXPECT_OK(weft_go(ticker, h));
    EXPECT_OK(weft_go(blocker, h));
    wait_until(&h->blocked_done, 1);
    wait_until(&h->ticker_done, 1);
    printf("ticks while blocked %" PRId64 " ms: %" PRId64 "\n",
           atomic_load(&h->blocked_ns) / MS, atomic_load(&h->during));
    ASSERT_GE(atomic_load(&h->blocked_ns), 200 * MS);
    /* 200 ms of ~100 us sleeps and yields: hundreds of ticks when the P was
     * handed off, none when it was not (a slow build ticks less). */
    ASSERT_GE(atomic_load(&h->during), 3);
    return 0;
}

TEST(syscall_hands_off_p)
{
    struct handoff h = {0};
    run(1, handoff_body, &h);
}

TEST(blocking_hands_off_p)
{
    struct handoff h = {0};
    h.use_blocking = 1;
    run(1, handoff_body, &h);
}

/* Many coroutines in syscalls at once, with procs=2: every one comes back,
 * and the runtime keeps running others meanwhile. */
static _Atomic int64_t sc_done, sc_ticks, sc_during;

/* short_block - 2 ms in a blocking call; counts the main coroutine's ticks
 * meanwhile, which only a P handed to another M can run. */
static intptr_t short_block(void *arg)
{
    int64_t t0 = atomic_load(&sc_ticks);
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
    atomic_fetch_add(&sc_during, atomic_load(&sc_ticks) - t0);
    return (intptr_t)arg;
}

static void syscaller(void *arg)
{
    for (int i = 0; i < 5; i++) {
        if (i & 1) {
            ASSERT_EQ(weft_blocking(short_block, (void *)(intptr_t)i), i);
        } else {
            EXPECT_OK(weft_syscall_enter());
            short_block(NULL);
            EXPECT_OK(weft_syscall_exit());
        }
        weft_yield();
    }
    atomic_fetch_add(&sc_done, 1);
}

static int many_syscalls_body(void *arg)
{
    for (int i = 0; i < 64; i++)
        EXPECT_OK(weft_go(syscaller, NULL));
    while (atomic_load(&sc_done) < 64) {
        atomic_fetch_add(&sc_ticks, 1);
        weft_sleep(500 * US);
    }
    ASSERT_GT(atomic_load(&sc_during), 0);
    return 0;
}

TEST(many_concurrent_syscalls)
{
    for (int procs = 2; procs >= 1; procs--) {
        atomic_store(&sc_done, 0);
        atomic_store(&sc_ticks, 0);
        atomic_store(&sc_during, 0);
        run(procs, many_syscalls_body, NULL);
    }
}

/* ----------------------------------------------------------- preemption */

struct preempt {
    _Atomic int stop;
    _Atomic int64_t spinning;
    _Atomic int64_t done;
};

static void spinner(void *arg)
{
    struct preempt *p = arg;
    atomic_fetch_add(&p->spinning, 1);
    while (!atomic_load_explicit(&p->stop, memory_order_relaxed))
        weft_checkpoint();
    atomic_fetch_add(&p->done, 1);
}

static void stopper(void *arg)
{
    struct preempt *p = arg;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->done, 1);
}

static int preempt_body(void *arg)
{
    struct preempt *p = arg;
    int nspin = weft_procs(); /* one spinner per P: nobody is left idle */
    for (int i = 0; i < nspin; i++)
        EXPECT_OK(weft_go(spinner, p));
    /* Only preemption of a spinner lets coroutine 1 past this loop. */
    wait_yield(&p->spinning, nspin);
    int64_t t0 = weft_now();
    EXPECT_OK(weft_go(stopper, p));
    wait_yield(&p->done, nspin + 1);
    printf("procs=%d: stop took %.3f ms\n", weft_procs(),
           (weft_now() - t0) / 1e6);
    return 0;
}

TEST_TIMEOUT(sysmon_preempts_spinner, 30)
{
    struct preempt p = {0};
    run(1, preempt_body, &p);
    struct preempt q = {0};
    run(2, preempt_body, &q);
}

/* A spinner that calls weft_go (which honours a pending preemption request)
 * instead of weft_checkpoint. */
static void spawning_spinner(void *arg)
{
    struct preempt *p = arg;
    atomic_fetch_add(&p->spinning, 1);
    while (!atomic_load_explicit(&p->stop, memory_order_relaxed)) {
        for (volatile int i = 0; i < 100000; i++)
            ;
        EXPECT_OK(weft_go(incr, &p->done)); /* counted below */
    }
}

static int preempt_go_body(void *arg)
{
    struct preempt *p = arg;
    EXPECT_OK(weft_go(spawning_spinner, p));
    wait_yield(&p->spinning, 1);
    atomic_store(&p->stop, 1);
    return 0;
}

TEST_TIMEOUT(preempt_honoured_by_weft_go, 30)
{
    struct preempt p = {0};
    run(1, preempt_go_body, &p);
}

/* Ping-pong pairs on one P: each hand-off puts the partner in runnext,
 * which always runs next, so without time-slice inheritance a pair held
 * the P for as long as it talked (8 pairs: one did 1.6 M round trips,
 * the others none after the first). The partner inherits the slice,
 * sysmon preempts it after 10 ms, and every pair gets turns. Nothing
 * else may rotate the P here (no timers, main parked on a wait group):
 * a plain thread watches. */
enum { NPAIRS = 8 };
struct pingpair {
    weft_chan_t *ping, *pong;
    _Atomic int64_t trips;
};
static _Atomic int pp_stop;
static weft_waitgroup_t pp_wg = WEFT_WAITGROUP_INIT;

static void pp_ponger(void *arg)
{
    struct pingpair *pp = arg;
    int v;
    while (weft_chan_recv(pp->ping, &v) == 0)
        EXPECT_OK(weft_chan_send(pp->pong, &v));
    weft_waitgroup_done(&pp_wg);
}

static void pp_pinger(void *arg)
{
    struct pingpair *pp = arg;
    for (int v = 0; !atomic_load(&pp_stop); v++) {
        EXPECT_OK(weft_chan_send(pp->ping, &v));
        int w;
        EXPECT_OK(weft_chan_recv(pp->pong, &w));
        ASSERT_EQ(w, v);
        atomic_fetch_add_explicit(&pp->trips, 1, memory_order_relaxed);
    }
    weft_chan_close(pp->ping);
    weft_waitgroup_done(&pp_wg);
}

static int pingpairs_body(void *arg)
{
    struct pingpair *pairs = arg;
    EXPECT_OK(weft_waitgroup_add(&pp_wg, 2 * NPAIRS));
    for (int i = 0; i < NPAIRS; i++) {
        EXPECT_OK(weft_chan_new(&pairs[i].ping, sizeof(int), 0));
        EXPECT_OK(weft_chan_new(&pairs[i].pong, sizeof(int), 0));
        EXPECT_OK(weft_go(pp_ponger, &pairs[i]));
        EXPECT_OK(weft_go(pp_pinger, &pairs[i]));
    }
    EXPECT_OK(weft_waitgroup_wait(&pp_wg));
    for (int i = 0; i < NPAIRS; i++) {
        weft_chan_free(pairs[i].ping);
        weft_chan_free(pairs[i].pong);
    }
    return 0;
}

/* pp_watch - after a warm-up, wait until every pair has moved on from
 * where it stood, or 5 s (x slow()); then stop them. */
static void *pp_watch(void *arg)
{
    struct pingpair *pairs = arg;
    int64_t was[NPAIRS];
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 50; i++)
        nanosleep(&ms, NULL);
    for (int i = 0; i < NPAIRS; i++)
        was[i] = atomic_load(&pairs[i].trips);
    int moved = 0;
    for (int k = 0; k < 5000 * slow() && moved < NPAIRS; k++) {
        nanosleep(&ms, NULL);
        moved = 0;
        for (int i = 0; i < NPAIRS; i++)
            moved += atomic_load(&pairs[i].trips) > was[i];
    }
    atomic_store(&pp_stop, 1);
    return (void *)(intptr_t)moved;
}

TEST_TIMEOUT(pingpong_pairs_share_p, 120)
{
    static struct pingpair pairs[NPAIRS];
    memset(pairs, 0, sizeof pairs);
    atomic_store(&pp_stop, 0);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, pp_watch, pairs), 0);
    run(1, pingpairs_body, pairs);
    void *moved;
    ASSERT_EQ(pthread_join(t, &moved), 0);
    for (int i = 0; i < NPAIRS; i++)
        printf("pair %d: %lld round trips\n", i,
               (long long)atomic_load(&pairs[i].trips));
    ASSERT_EQ((intptr_t)moved, NPAIRS);
}

/* ----------------------------------------------------------- bad input */

static void nop(void *arg)
{
}

static intptr_t ret_plus_one(void *arg)
{
    return (intptr_t)arg + 1;
}

/* outside_checks - every call that needs a coroutine, from a non-coroutine
 * thread (before weft_main, or a plain pthread while it runs). */
static void outside_checks(void)
{
    EXPECT_ERR(weft_go(nop, NULL), WEFT_ENOTCORO);
    weft_go_opts_t o = {0};
    EXPECT_ERR(weft_go_opts(nop, NULL, &o), WEFT_ENOTCORO);
    EXPECT_ERR(weft_yield(), WEFT_ENOTCORO);
    EXPECT_ERR(weft_sleep(1000), WEFT_ENOTCORO);
    EXPECT_ERR(weft_sleep_until(weft_now() + 1000), WEFT_ENOTCORO);
    EXPECT_ERR(weft_syscall_enter(), WEFT_ENOTCORO);
    int r = weft_syscall_exit();
    if (r != WEFT_ENOTCORO && r != WEFT_EINVAL)
        FAIL("weft_syscall_exit() outside a coroutine returned %d (%s)", r,
             weft_err_name(r));
    ASSERT_EQ(weft_self(), 0);
    /* Outside a coroutine weft_blocking simply calls fn. */
    ASSERT_EQ(weft_blocking(ret_plus_one, (void *)(intptr_t)41), 42);
    EXPECT_ERR(weft_blocking(NULL, NULL), WEFT_EINVAL);
    weft_checkpoint(); /* harmless anywhere */
}

static void *outside_thread(void *arg)
{
    outside_checks();
    atomic_store((_Atomic int64_t *)arg, 1);
    return NULL;
}

static int bad_input_body(void *arg)
{
    EXPECT_ERR(weft_go(NULL, NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_go_opts(NULL, NULL, NULL), WEFT_EINVAL);
    weft_go_opts_t o = {0};
    o.stack_size = 4096;
    EXPECT_ERR(weft_go_opts(nop, NULL, &o), WEFT_EINVAL);
    o.stack_size = WEFT_STACK_MIN / 2;
    EXPECT_ERR(weft_go_opts(nop, NULL, &o), WEFT_EINVAL);
    o.stack_size = WEFT_STACK_MAX + 1;
    EXPECT_ERR(weft_go_opts(nop, NULL, &o), WEFT_EINVAL);
    o.stack_size = WEFT_STACK_MAX * 2;
    EXPECT_ERR(weft_go_opts(nop, NULL, &o), WEFT_EINVAL);
    o.stack_size = SIZE_MAX; /* rounding up must not wrap */
    EXPECT_ERR(weft_go_opts(nop, NULL, &o), WEFT_EINVAL);
    o.stack_size = SIZE_MAX - 100;
    EXPECT_ERR(weft_go_opts(nop, NULL, &o), WEFT_EINVAL);
    /* The edges and the defaults are fine. */
    o.stack_size = WEFT_STACK_MIN;
    EXPECT_OK(weft_go_opts(nop, NULL, &o));
    o.stack_size = 0;
    EXPECT_OK(weft_go_opts(nop, NULL, &o));
    EXPECT_OK(weft_go_opts(nop, NULL, NULL));
    o.stack_size = 20000; /* not page-aligned: rounded up */
    o.name = "a name that is much longer than thirty-one bytes, truncated";
    EXPECT_OK(weft_go_opts(nop, NULL, &o));

    /* Syscall bracket misuse. */
    EXPECT_ERR(weft_syscall_exit(), WEFT_EINVAL);
    EXPECT_OK(weft_syscall_enter());
    EXPECT_ERR(weft_syscall_enter(), WEFT_EINVAL);
    EXPECT_OK(weft_syscall_exit());
    EXPECT_ERR(weft_syscall_exit(), WEFT_EINVAL);
    EXPECT_ERR(weft_blocking(NULL, NULL), WEFT_EINVAL);
    ASSERT_EQ(weft_blocking(ret_plus_one, (void *)(intptr_t)1), 2);

    /* A plain pthread while the runtime runs is still outside. */
    _Atomic int64_t done = 0;
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, outside_thread, &done), 0);
    wait_until(&done, 1);
    ASSERT_EQ(pthread_join(t, NULL), 0);

    /* And the runtime is intact after all that. */
    _Atomic int64_t c = 0;
    for (int i = 0; i < 10; i++)
        EXPECT_OK(weft_go(incr, &c));
    wait_yield(&c, 10);
    return 0;
}

TEST(bad_input)
{
    outside_checks();
    ASSERT_EQ(weft_procs(), 0);
    run(0, bad_input_body, NULL);
    /* After the runtime ended: outside again. */
    outside_checks();
    ASSERT_EQ(weft_procs(), 0);
}

TEST(error_names)
{
    ASSERT_STR_EQ(weft_err_name(WEFT_EINVAL), "WEFT_EINVAL");
    ASSERT_STR_EQ(weft_err_name(WEFT_ETIMEDOUT), "WEFT_ETIMEDOUT");
    ASSERT_STR_EQ(weft_err_name(WEFT_EBUSY), "WEFT_EBUSY");
    ASSERT_STR_EQ(weft_err_name(WEFT_ENOMEM), "WEFT_ENOMEM");
    ASSERT_STR_EQ(weft_err_name(WEFT_ENOTCORO), "WEFT_ENOTCORO");
    ASSERT_STR_EQ(weft_err_name(WEFT_ENORUNTIME), "WEFT_ENORUNTIME");
    ASSERT_STR_EQ(weft_err_name(-987654), "WEFT_EUNKNOWN");
    ASSERT_STR_EQ(weft_err_name(INT32_MIN), "WEFT_EUNKNOWN");
    ASSERT_STR_EQ(weft_strerror(-987654), "unknown error");
    const int codes[] = {WEFT_EPERM,     WEFT_EINVAL,    WEFT_ENOMEM,
                         WEFT_EAGAIN,    WEFT_EBUSY,     WEFT_ETIMEDOUT,
                         WEFT_ECANCELED, WEFT_ENOTCORO, WEFT_ENORUNTIME};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = weft_strerror(codes[i]);
        ASSERT(s != NULL && *s != '\0');
        if (strcmp(s, "unknown error") == 0)
            FAIL("weft_strerror(%s) is \"unknown error\"",
                 weft_err_name(codes[i]));
        ASSERT(strncmp(weft_err_name(codes[i]), "WEFT_E", 6) == 0);
    }
}

/* --------------------------------------------------------------- procs */

static int procs_body(void *arg)
{
    ASSERT_EQ(weft_procs(), (int)(intptr_t)arg);
    return 0;
}

TEST(procs_from_env)
{
    for (int n = 1; n <= 4; n++)
        run(n, procs_body, (void *)(intptr_t)n);
    /* Default: the CPUs this process may run on. */
    cpu_set_t set;
    ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    run(0, procs_body, (void *)(intptr_t)CPU_COUNT(&set));
}

/* --------------------------------------------------------------- stacks */

/* use_stack - recurse until frames span `want` bytes below `top`; returns
 * the depth. Each frame touches a buffer so pages are really used. */
static int __attribute__((noinline)) use_stack(uintptr_t top, size_t want)
{
    volatile char buf[256];
    buf[0] = 1;
    buf[sizeof buf - 1] = 1;
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    if (top - sp >= want)
        return 1;
    return use_stack(top, want) + buf[0];
}

struct stack_arg {
    size_t size;
    _Atomic int64_t done;
};

static void stack_user(void *arg)
{
    struct stack_arg *a = arg;
    uintptr_t top = (uintptr_t)__builtin_frame_address(0);
    int depth = use_stack(top, a->size * 3 / 4);
    ASSERT_GT(depth, 1);
    /* A switch in the middle of a deep stack, then again. */
    weft_yield();
    depth = use_stack(top, a->size * 3 / 4);
    ASSERT_GT(depth, 1);
    atomic_store(&a->done, 1);
}

static int stacks_body(void *arg)
{
    const size_t sizes[] = {WEFT_STACK_MIN, 64 * 1024, WEFT_STACK_DEFAULT,
                            8 * 1024 * 1024, 64 * 1024 * 1024};
    size_t first = 0, end = sizeof sizes / sizeof sizes[0];
#if defined(__SANITIZE_THREAD__)
    /* TSan's runtime runs on the coroutine's stack too (fiber switches,
     * interceptors) and needs more than the quarter of 16 KiB left; and
     * its shadow call stack cannot follow the million-frame recursion
     * that fills 64 MiB. */
    first = 1;
    end = 3;
#endif
    for (size_t i = first; i < end; i++) {
        struct stack_arg a = {sizes[i], 0};
        weft_go_opts_t o = {0};
        o.stack_size = sizes[i];
        o.name = "stack_user";
        EXPECT_OK(weft_go_opts(stack_user, &a, &o));
        wait_yield(&a.done, 1);
    }
    /* The default (opts NULL, and stack_size 0) is 256 KiB. */
    struct stack_arg d = {WEFT_STACK_DEFAULT, 0};
    EXPECT_OK(weft_go(stack_user, &d));
    wait_yield(&d.done, 1);
    struct stack_arg d2 = {WEFT_STACK_DEFAULT, 0};
    weft_go_opts_t z = {0};
    EXPECT_OK(weft_go_opts(stack_user, &d2, &z));
    wait_yield(&d2.done, 1);
    return 0;
}

TEST(custom_stack_sizes)
{
    run(1, stacks_body, NULL);
    run(2, stacks_body, NULL);
}

/* Many live coroutines with big, partly used stacks at once. */
static void deep_then_sleep(void *arg)
{
    struct stack_arg *a = arg;
    uintptr_t top = (uintptr_t)__builtin_frame_address(0);
    use_stack(top, 32 * 1024);
    weft_sleep(5 * MS);
    atomic_fetch_add(&a->done, 1);
}

static int many_stacks_body(void *arg)
{
    struct stack_arg a = {0, 0};
    weft_go_opts_t o = {0};
    o.stack_size = 1024 * 1024;
    for (int i = 0; i < 2000; i++)
        EXPECT_OK(weft_go_opts(deep_then_sleep, &a, &o));
    wait_until(&a.done, 2000);
    return 0;
}

TEST(many_big_stacks)
{
    run(0, many_stacks_body, NULL);
}

/* -------------------------------------------------------- work spreads */

#define SPREAD_G 8
#define SPREAD_SAMPLES 64

struct spread {
    _Atomic pid_t tids[SPREAD_G][SPREAD_SAMPLES];
    _Atomic int64_t done;
    _Atomic int64_t started;
};

struct spread_arg {
    struct spread *s;
    int i;
};

static void cpu_worker(void *arg)
{
    struct spread_arg *a = arg;
    atomic_fetch_add(&a->s->started, 1);
    int64_t until = weft_now() + 100 * MS;
    int k = 0;
    while (weft_now() < until) {
        for (volatile int j = 0; j < 20000; j++)
            ;
        atomic_store(&a->s->tids[a->i][k % SPREAD_SAMPLES], my_tid());
        k++;
        weft_checkpoint();
    }
    atomic_fetch_add(&a->s->done, 1);
}

static int spread_body(void *arg)
{
    struct spread *s = arg;
    static struct spread_arg args[SPREAD_G];
    for (int i = 0; i < SPREAD_G; i++) {
        args[i] = (struct spread_arg){s, i};
        EXPECT_OK(weft_go(cpu_worker, &args[i]));
    }
    wait_until(&s->done, SPREAD_G);
    return 0;
}

TEST(work_spreads_across_ps)
{
    static struct spread s;
    run(2, spread_body, &s);
    pid_t seen[SPREAD_G * SPREAD_SAMPLES];
    int n = 0;
    for (int i = 0; i < SPREAD_G; i++)
        for (int k = 0; k < SPREAD_SAMPLES; k++) {
            pid_t t = atomic_load(&s.tids[i][k]);
            int dup = 0;
            for (int j = 0; j < n && !dup; j++)
                dup = seen[j] == t;
            if (t != 0 && !dup)
                seen[n++] = t;
        }
    printf("CPU-bound coroutines ran on %d threads\n", n);
    ASSERT_GE(n, 2);
}

/* --------------------------------------------------------------- stress */

#define STRESS_N 10000
#define STRESS_ROOTS 1000

struct stress {
    unsigned seed;
    _Atomic int64_t next;    /* next free index */
    _Atomic int64_t created; /* successful spawns (indices < created) */
    _Atomic int64_t done;
    _Atomic int32_t flag[STRESS_N];
};

static struct stress st;

static void stress_g(void *arg)
{
    int64_t idx = (int64_t)(intptr_t)arg;
    unsigned r = st.seed ^ (unsigned)(idx * 2654435761u);
    int ops = (int)(rand_r(&r) % 9);
    for (int i = 0; i < ops; i++) {
        switch (rand_r(&r) % 3) {
        case 0:
            EXPECT_OK(weft_yield());
            break;
        case 1:
            EXPECT_OK(weft_sleep((int64_t)(rand_r(&r) % 101) * US));
            break;
        case 2: {
            int64_t c = atomic_fetch_add(&st.next, 1);
            if (c < STRESS_N) { /* indices are handed out in order */
                atomic_fetch_add(&st.created, 1);
                EXPECT_OK(weft_go(stress_g, (void *)(intptr_t)c));
            }
            break;
        }
        }
    }
    if (atomic_fetch_add(&st.flag[idx], 1) != 0)
        FAIL("coroutine %" PRId64 " ran twice", idx);
    atomic_fetch_add(&st.done, 1);
}

static int stress_body(void *arg)
{
    /* Indices [0, STRESS_ROOTS) are the roots', reserved up front. */
    atomic_store(&st.next, STRESS_ROOTS);
    for (int i = 0; i < STRESS_ROOTS; i++) {
        atomic_fetch_add(&st.created, 1);
        EXPECT_OK(weft_go(stress_g, (void *)(intptr_t)i));
        if (i % 64 == 0)
            weft_yield();
    }
    /* Read done before created: if they match, nothing was running when
     * done was read, so nothing can create more. */
    for (;;) {
        int64_t d = atomic_load(&st.done);
        if (d == atomic_load(&st.created))
            break;
        weft_sleep(100 * US);
    }
    return 0;
}

static void stress_run(int procs, unsigned seed)
{
    memset(&st, 0, sizeof st);
    st.seed = seed;
    run(procs, stress_body, NULL);
    int64_t created = atomic_load(&st.created);
    ASSERT_GE(created, STRESS_ROOTS);
    ASSERT_LE(created, STRESS_N);
    ASSERT_EQ(atomic_load(&st.done), created);
    for (int64_t i = 0; i < STRESS_N; i++) {
        int32_t f = atomic_load(&st.flag[i]);
        if (f != (i < created ? 1 : 0))
            FAIL("seed %u procs %d: coroutine %" PRId64 " ran %d times "
                 "(%" PRId64 " created)",
                 seed, procs, i, f, created);
    }
}

TEST_TIMEOUT(stress_procs1, 180)
{
    for (unsigned seed = 1; seed <= 20; seed++)
        stress_run(1, seed);
}

TEST_TIMEOUT(stress_procs2, 180)
{
    for (unsigned seed = 1; seed <= 20; seed++)
        stress_run(2, seed);
}
