/*
 * test_sync.c - tests of the sync objects (weft.h "sync"): mutex, rwmutex,
 * cond, waitgroup, once, sem, and the mutex wait-for cycle check.
 *
 * Each test runs in its own forked child (harness.h) and its own
 * weft_main with WEFTMAXPROCS set. Stress tests repeat over seeds and
 * P counts and check invariants (exact counters, exclusion, bounds),
 * never interleavings; their sizes shrink in sanitizer builds. Time
 * bounds are multiplied by slow().
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "weft_test.h"
#include "runtime.h"

/* scale - n, or a quarter of it in sanitizer builds. */
static int scale(int n) { return SANITIZED ? n / 4 : n; }

static int ncpu(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 2 ? 2 : n > 8 ? 8 : (int)n;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ------------------------------------------------------- mutex stress */

static weft_mutex_t st_mu = WEFT_MUTEX_INIT;
static int64_t st_counter; /* guarded by st_mu, deliberately not atomic */
static _Atomic int st_inside;
static _Atomic int64_t st_done;
static int st_iters;
static uint64_t st_seed;

static void st_worker(void *arg)
{
    uint64_t s = st_seed * 0x9e3779b97f4a7c15ull + (uintptr_t)arg + 1;
    for (int i = 0; i < st_iters; i++) {
        EXPECT_OK(weft_mutex_lock(&st_mu));
        ASSERT_EQ(atomic_fetch_add(&st_inside, 1), 0);
        int64_t c = st_counter;
        uint64_t r = rnd(&s);
        if (r % 512 == 0)
            weft_yield();
        else if (r % 4099 == 0)
            weft_sleep(20 * US);
        st_counter = c + 1;
        atomic_fetch_sub(&st_inside, 1);
        EXPECT_OK(weft_mutex_unlock(&st_mu));
        if (r % 61 == 0)
            weft_yield();
    }
    atomic_fetch_add(&st_done, 1);
}

static int st_body(void *arg)
{
    int n = (int)(intptr_t)arg;
    for (int i = 0; i < n; i++)
        ASSERT(weft_go(st_worker, (void *)(intptr_t)i) > 0);
    wait_until(&st_done, n);
    ASSERT_EQ(st_counter, (int64_t)n * st_iters);
    EXPECT_OK(weft_mutex_trylock(&st_mu)); /* free and consistent */
    EXPECT_OK(weft_mutex_unlock(&st_mu));
    return 0;
}

TEST_TIMEOUT(mutex_stress, 240)
{
    int procs[] = {1, 2, 4, ncpu()};
    for (int seed = 0; seed < 6; seed++) {
        st_seed = (uint64_t)seed;
        st_counter = 0;
        st_done = 0;
        st_iters = scale(seed < 2 ? 20000 : 5000);
        run(procs[seed % 4], st_body, (void *)(intptr_t)16);
    }
}

/* ----------------------------------------------------- mutex starvation */

static weft_mutex_t sv_mu = WEFT_MUTEX_INIT;
static _Atomic int sv_stop;
static _Atomic int64_t sv_started, sv_exited, sv_starving;

/* sv_state - the mutex's state word (white box: see sched/mutex.c). */
static int32_t sv_state(void)
{
    return (int32_t)(__atomic_load_n(&sv_mu.opaque_[0], __ATOMIC_RELAXED) >>
                     32);
}

static void sv_hammer(void *arg)
{
    (void)arg;
    atomic_fetch_add(&sv_started, 1);
    while (!atomic_load(&sv_stop)) {
        weft_mutex_lock(&sv_mu);
        if (sv_state() & 4) /* MUTEX_STARVING: a hand-off happened */
            atomic_fetch_add(&sv_starving, 1);
        for (volatile int i = 0; i < 200; i++)
            ;
        weft_mutex_unlock(&sv_mu);
    }
    atomic_fetch_add(&sv_exited, 1);
}

static int sv_body(void *arg)
{
    (void)arg;
    int n = 8;
    for (int i = 0; i < n; i++)
        weft_go(sv_hammer, NULL);
    wait_until(&sv_started, n);
    weft_sleep(5 * MS);
    for (int round = 0; round < 5; round++) {
        int64_t t0 = weft_now();
        EXPECT_OK(weft_mutex_lock(&sv_mu));
        int64_t waited = weft_now() - t0;
        EXPECT_OK(weft_mutex_unlock(&sv_mu));
        ASSERT_LT(waited, (int64_t)(500 * MS * slow()));
        weft_sleep(2 * MS);
    }
    atomic_store(&sv_stop, 1);
    wait_until(&sv_exited, n);
    printf("# starvation-mode acquisitions: %lld\n",
           (long long)atomic_load(&sv_starving));
    return 0;
}

TEST_TIMEOUT(mutex_starvation, 120)
{
    run(ncpu() < 4 ? ncpu() : 4, sv_body, NULL);
}

/* ------------------------------------------------------ deadlines */

static weft_mutex_t dl_mu = WEFT_MUTEX_INIT;
static weft_rwmutex_t dl_rw = WEFT_RWMUTEX_INIT;
static weft_sem_t dl_sem = WEFT_SEM_INIT(0);
static weft_cond_t dl_cv = WEFT_COND_INIT;
static weft_waitgroup_t dl_wg = WEFT_WAITGROUP_INIT;
static _Atomic int64_t dl_done;

static void check_late(int64_t dl, int r)
{
    EXPECT_ERR(r, WEFT_ETIMEDOUT);
    ASSERT_GE(weft_now(), dl);
}

static void dl_waiter(void *arg)
{
    int64_t d = (int64_t)(intptr_t)arg * MS;
    int64_t dl = weft_now() + d;
    check_late(dl, weft_mutex_lock_dl(&dl_mu, dl));
    dl = weft_now() + d;
    check_late(dl, weft_rwmutex_lock_dl(&dl_rw, dl));
    dl = weft_now() + d;
    check_late(dl, weft_rwmutex_rlock_dl(&dl_rw, dl));
    dl = weft_now() + d;
    check_late(dl, weft_sem_acquire_dl(&dl_sem, dl));
    dl = weft_now() + d;
    check_late(dl, weft_waitgroup_wait_dl(&dl_wg, dl));
    weft_mutex_t m = WEFT_MUTEX_INIT;
    EXPECT_OK(weft_mutex_lock(&m));
    dl = weft_now() + d;
    check_late(dl, weft_cond_wait_dl(&dl_cv, &m, dl));
    EXPECT_OK(weft_mutex_unlock(&m)); /* relocked on timeout */
    /* A deadline already past: no wait at all. */
    EXPECT_ERR(weft_mutex_lock_dl(&dl_mu, weft_now() - 1), WEFT_ETIMEDOUT);
    atomic_fetch_add(&dl_done, 1);
}

static int dl_body(void *arg)
{
    (void)arg;
    EXPECT_OK(weft_mutex_lock(&dl_mu));
    EXPECT_OK(weft_rwmutex_lock(&dl_rw));
    EXPECT_OK(weft_waitgroup_add(&dl_wg, 1));
    int n = 0;
    for (int ms = 1; ms <= 20; ms += 3, n++)
        weft_go(dl_waiter, (void *)(intptr_t)ms);
    wait_until(&dl_done, n);
    /* Everything is consistent after the timeouts. */
    EXPECT_OK(weft_mutex_unlock(&dl_mu));
    EXPECT_OK(weft_mutex_trylock(&dl_mu));
    EXPECT_OK(weft_mutex_unlock(&dl_mu));
    EXPECT_OK(weft_rwmutex_unlock(&dl_rw));
    EXPECT_OK(weft_rwmutex_trylock(&dl_rw));
    EXPECT_OK(weft_rwmutex_unlock(&dl_rw));
    EXPECT_OK(weft_rwmutex_tryrlock(&dl_rw));
    EXPECT_OK(weft_rwmutex_runlock(&dl_rw));
    EXPECT_ERR(weft_sem_tryacquire(&dl_sem), WEFT_EAGAIN);
    EXPECT_OK(weft_waitgroup_done(&dl_wg));
    return 0;
}

TEST(deadlines_never_early)
{
    run(2, dl_body, NULL);
    dl_done = 0;
    run(1, dl_body, NULL);
}

/* Timeouts racing with wake-ups: counters stay exact, objects usable. */
static weft_mutex_t tr_mu = WEFT_MUTEX_INIT;
static weft_rwmutex_t tr_rw = WEFT_RWMUTEX_INIT;
static int64_t tr_counter; /* plain: only the mutex protects it */
static _Atomic int64_t tr_ok, tr_inside;
static _Atomic int tr_readers, tr_writers;
static _Atomic int64_t tr_done;
static int tr_iters;

static void tr_worker(void *arg)
{
    uint64_t s = (uintptr_t)arg * 7919 + 3;
    for (int i = 0; i < tr_iters; i++) {
        uint64_t r = rnd(&s);
        int64_t dl = weft_now() + (int64_t)(r % 200) * US;
        if (r % 3 == 0) {
            int e = weft_mutex_lock_dl(&tr_mu, (r & 8) ? dl : WEFT_FOREVER);
            if (e == 0) {
                ASSERT_EQ(atomic_fetch_add(&tr_inside, 1), 0);
                tr_counter++;
                atomic_fetch_add(&tr_ok, 1);
                if (r % 5 == 0)
                    weft_sleep(30 * US);
                atomic_fetch_sub(&tr_inside, 1);
                EXPECT_OK(weft_mutex_unlock(&tr_mu));
            } else {
                EXPECT_ERR(e, WEFT_ETIMEDOUT);
            }
        } else if (r % 3 == 1) {
            int e = weft_rwmutex_lock_dl(&tr_rw, (r & 8) ? dl : WEFT_FOREVER);
            if (e == 0) {
                ASSERT_EQ(atomic_fetch_add(&tr_writers, 1), 0);
                ASSERT_EQ(atomic_load(&tr_readers), 0);
                if (r % 5 == 0)
                    weft_sleep(30 * US);
                atomic_fetch_sub(&tr_writers, 1);
                EXPECT_OK(weft_rwmutex_unlock(&tr_rw));
            } else {
                EXPECT_ERR(e, WEFT_ETIMEDOUT);
            }
        } else {
            int e = weft_rwmutex_rlock_dl(&tr_rw, (r & 8) ? dl : WEFT_FOREVER);
            if (e == 0) {
                atomic_fetch_add(&tr_readers, 1);
                ASSERT_EQ(atomic_load(&tr_writers), 0);
                if (r % 5 == 0)
                    weft_sleep(50 * US);
                else
                    weft_yield();
                atomic_fetch_sub(&tr_readers, 1);
                EXPECT_OK(weft_rwmutex_runlock(&tr_rw));
            } else {
                EXPECT_ERR(e, WEFT_ETIMEDOUT);
            }
        }
    }
    atomic_fetch_add(&tr_done, 1);
}

static int tr_body(void *arg)
{
    (void)arg;
    for (int i = 0; i < 16; i++)
        weft_go(tr_worker, (void *)(intptr_t)i);
    wait_until(&tr_done, 16);
    ASSERT_EQ(tr_counter, atomic_load(&tr_ok));
    EXPECT_OK(weft_mutex_trylock(&tr_mu));
    EXPECT_OK(weft_mutex_unlock(&tr_mu));
    EXPECT_OK(weft_rwmutex_trylock(&tr_rw));
    EXPECT_OK(weft_rwmutex_unlock(&tr_rw));
    return 0;
}

TEST_TIMEOUT(timeouts_stress, 180)
{
    for (int seed = 0; seed < 4; seed++) {
        tr_done = 0;
        tr_iters = scale(3000);
        run(seed % 2 ? ncpu() : 2, tr_body, NULL);
    }
}

/* ---------------------------------------------------------- rwmutex */

static weft_rwmutex_t rw_rw = WEFT_RWMUTEX_INIT;
static _Atomic int rw_stop;
static _Atomic int rw_in;
static _Atomic int64_t rw_exited;

static void rw_reader(void *arg)
{
    (void)arg;
    while (!atomic_load(&rw_stop)) {
        EXPECT_OK(weft_rwmutex_rlock(&rw_rw));
        atomic_fetch_add(&rw_in, 1);
        weft_sleep(200 * US);
        atomic_fetch_sub(&rw_in, 1);
        EXPECT_OK(weft_rwmutex_runlock(&rw_rw));
    }
    atomic_fetch_add(&rw_exited, 1);
}

static int rw_progress_body(void *arg)
{
    (void)arg;
    int n = 16;
    for (int i = 0; i < n; i++)
        weft_go(rw_reader, NULL);
    weft_sleep(5 * MS);
    for (int k = 0; k < 20; k++) {
        int64_t t0 = weft_now();
        EXPECT_OK(weft_rwmutex_lock(&rw_rw));
        ASSERT_EQ(atomic_load(&rw_in), 0);
        weft_sleep(100 * US);
        ASSERT_EQ(atomic_load(&rw_in), 0);
        EXPECT_OK(weft_rwmutex_unlock(&rw_rw));
        ASSERT_LT(weft_now() - t0, (int64_t)(200 * MS * slow()));
        weft_sleep(1 * MS);
    }
    atomic_store(&rw_stop, 1);
    wait_until(&rw_exited, n);
    return 0;
}

TEST(rwmutex_writer_progress)
{
    run(ncpu(), rw_progress_body, NULL);
}

static _Atomic int64_t rp_holding, rp_done;
static void rp_reader(void *arg)
{
    (void)arg;
    EXPECT_OK(weft_rwmutex_rlock(&rw_rw));
    atomic_fetch_add(&rp_holding, 1);
    /* All readers hold it at once, or this never ends (timeout). */
    wait_until(&rp_holding, 8);
    EXPECT_OK(weft_rwmutex_runlock(&rw_rw));
    atomic_fetch_add(&rp_done, 1);
}

static int rp_body(void *arg)
{
    (void)arg;
    for (int i = 0; i < 8; i++)
        weft_go(rp_reader, NULL);
    wait_until(&rp_done, 8);
    EXPECT_ERR(weft_rwmutex_runlock(&rw_rw), WEFT_EPERM);
    EXPECT_ERR(weft_rwmutex_unlock(&rw_rw), WEFT_EPERM);
    EXPECT_OK(weft_rwmutex_rlock(&rw_rw));
    EXPECT_ERR(weft_rwmutex_trylock(&rw_rw), WEFT_EAGAIN);
    EXPECT_OK(weft_rwmutex_tryrlock(&rw_rw));
    EXPECT_ERR(weft_rwmutex_unlock(&rw_rw), WEFT_EPERM);
    EXPECT_OK(weft_rwmutex_runlock(&rw_rw));
    EXPECT_OK(weft_rwmutex_runlock(&rw_rw));
    EXPECT_OK(weft_rwmutex_lock(&rw_rw));
    EXPECT_ERR(weft_rwmutex_tryrlock(&rw_rw), WEFT_EAGAIN);
    EXPECT_ERR(weft_rwmutex_runlock(&rw_rw), WEFT_EPERM);
    EXPECT_OK(weft_rwmutex_unlock(&rw_rw));
    return 0;
}

TEST(rwmutex_readers_parallel)
{
    run(1, rp_body, NULL);
    rp_holding = rp_done = 0;
    run(ncpu(), rp_body, NULL);
}

/* ------------------------------------------------------------- cond */

static weft_mutex_t cv_mu = WEFT_MUTEX_INIT;
static weft_cond_t cv_cv = WEFT_COND_INIT;
static int64_t cv_items, cv_consumed; /* cv_mu */
static _Atomic int64_t cv_cdone;
static int cv_per, cv_timed;

static void cv_consumer(void *arg)
{
    uint64_t s = (uintptr_t)arg + 77;
    for (int i = 0; i < cv_per; i++) {
        EXPECT_OK(weft_mutex_lock(&cv_mu));
        while (cv_items == 0) {
            if (!cv_timed) {
                EXPECT_OK(weft_cond_wait(&cv_cv, &cv_mu));
                continue;
            }
            /* Timeouts racing with signals must not lose any. */
            int64_t dl = weft_now() + (int64_t)(rnd(&s) % 50) * US;
            int r = weft_cond_wait_dl(&cv_cv, &cv_mu, dl);
            if (r != 0)
                EXPECT_ERR(r, WEFT_ETIMEDOUT);
        }
        cv_items--;
        cv_consumed++;
        EXPECT_OK(weft_mutex_unlock(&cv_mu));
    }
    atomic_fetch_add(&cv_cdone, 1);
}

static void cv_producer(void *arg)
{
    uint64_t s = (uintptr_t)arg + 11;
    for (int i = 0; i < cv_per; i++) {
        EXPECT_OK(weft_mutex_lock(&cv_mu));
        cv_items++;
        EXPECT_OK(weft_mutex_unlock(&cv_mu));
        EXPECT_OK(weft_cond_signal(&cv_cv));
        if (rnd(&s) % 16 == 0)
            weft_yield();
    }
}

static int cv_body(void *arg)
{
    (void)arg;
    int n = 8;
    for (int i = 0; i < n; i++) {
        weft_go(cv_consumer, (void *)(intptr_t)i);
        weft_go(cv_producer, (void *)(intptr_t)i);
    }
    wait_until(&cv_cdone, n);
    ASSERT_EQ(cv_consumed, (int64_t)n * cv_per);
    ASSERT_EQ(cv_items, 0);
    return 0;
}

TEST(cond_signal_no_lost_wakeup)
{
    for (int seed = 0; seed < 4; seed++) {
        cv_items = cv_consumed = 0;
        cv_cdone = 0;
        cv_per = scale(5000);
        cv_timed = seed >= 2;
        run(seed % 2 ? ncpu() : 1, cv_body, NULL);
    }
}

static int bc_flag; /* cv_mu */
static _Atomic int64_t bc_waiting, bc_woken;

static void bc_waiter(void *arg)
{
    (void)arg;
    EXPECT_OK(weft_mutex_lock(&cv_mu));
    atomic_fetch_add(&bc_waiting, 1);
    while (!bc_flag)
        EXPECT_OK(weft_cond_wait(&cv_cv, &cv_mu));
    EXPECT_OK(weft_mutex_unlock(&cv_mu));
    atomic_fetch_add(&bc_woken, 1);
}

static int bc_body(void *arg)
{
    (void)arg;
    int n = 50;
    for (int i = 0; i < n; i++)
        weft_go(bc_waiter, NULL);
    wait_until(&bc_waiting, n);
    weft_sleep(2 * MS);
    EXPECT_OK(weft_mutex_lock(&cv_mu));
    bc_flag = 1;
    EXPECT_OK(weft_mutex_unlock(&cv_mu));
    EXPECT_OK(weft_cond_broadcast(&cv_cv));
    wait_until(&bc_woken, n);
    return 0;
}

TEST(cond_broadcast_wakes_all)
{
    run(ncpu(), bc_body, NULL);
}

/* -------------------------------------------------------- waitgroup */

static weft_waitgroup_t wg_wg = WEFT_WAITGROUP_INIT;
static _Atomic int64_t wg_count;

static void wg_worker(void *arg)
{
    weft_sleep((int64_t)(uintptr_t)arg % 7 * 100 * US);
    atomic_fetch_add(&wg_count, 1);
    EXPECT_OK(weft_waitgroup_done(&wg_wg));
}

static _Atomic int64_t wg_waiters_done;
static int wg_n;
static void wg_waiter(void *arg)
{
    (void)arg;
    EXPECT_OK(weft_waitgroup_wait(&wg_wg));
    ASSERT_EQ(atomic_load(&wg_count), wg_n);
    atomic_fetch_add(&wg_waiters_done, 1);
}

static int wg_body(void *arg)
{
    (void)arg;
    weft_waitgroup_t z = WEFT_WAITGROUP_INIT;
    EXPECT_OK(weft_waitgroup_wait(&z)); /* zero: at once */
    EXPECT_ERR(weft_waitgroup_add(&z, -1), WEFT_EINVAL);
    EXPECT_ERR(weft_waitgroup_done(&z), WEFT_EINVAL);
    EXPECT_OK(weft_waitgroup_add(&z, 2));
    EXPECT_ERR(weft_waitgroup_add(&z, -3), WEFT_EINVAL); /* unchanged */
    EXPECT_OK(weft_waitgroup_add(&z, -2));
    EXPECT_OK(weft_waitgroup_wait(&z));
    for (int round = 0; round < 5; round++) {
        wg_n = 1000;
        wg_count = 0;
        wg_waiters_done = 0;
        EXPECT_OK(weft_waitgroup_add(&wg_wg, wg_n));
        for (int i = 0; i < 4; i++)
            weft_go(wg_waiter, NULL);
        for (int i = 0; i < wg_n; i++)
            weft_go(wg_worker, (void *)(intptr_t)i);
        EXPECT_OK(weft_waitgroup_wait(&wg_wg));
        ASSERT_EQ(atomic_load(&wg_count), wg_n);
        wait_until(&wg_waiters_done, 4);
    }
    return 0;
}

TEST(waitgroup)
{
    run(ncpu(), wg_body, NULL);
}

/* A waiter may free the waitgroup as soon as wait returns, while the
 * coroutine whose done released it is still inside the call: ASan (a
 * use after free) and TSan (a race with free) catch an adder that
 * touches the waitgroup after its counter reached zero. */
static void wgf_done(void *arg)
{
    EXPECT_OK(weft_waitgroup_done(arg));
}

static int wgf_body(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3000; i++) {
        weft_waitgroup_t *wg = malloc(sizeof *wg);
        ASSERT(wg != NULL);
        *wg = (weft_waitgroup_t)WEFT_WAITGROUP_INIT;
        int n = 1 + i % 3;
        EXPECT_OK(weft_waitgroup_add(wg, n));
        for (int k = 0; k < n; k++)
            weft_go(wgf_done, wg);
        EXPECT_OK(weft_waitgroup_wait(wg));
        memset(wg, 0xa5, sizeof *wg);
        free(wg);
    }
    return 0;
}

TEST(waitgroup_free_after_wait)
{
    run(2, wgf_body, NULL);
    run(1, wgf_body, NULL);
}

/* ------------------------------------------------------------- once */

static weft_once_t on_once = WEFT_ONCE_INIT;
static _Atomic int on_runs, on_finished;
static _Atomic int64_t on_done;

static void on_fn(void *arg)
{
    (void)arg;
    atomic_fetch_add(&on_runs, 1);
    weft_sleep(5 * MS);
    atomic_store(&on_finished, 1);
}

static void on_caller(void *arg)
{
    (void)arg;
    EXPECT_OK(weft_once_do(&on_once, on_fn, NULL));
    ASSERT_EQ(atomic_load(&on_finished), 1);
    atomic_fetch_add(&on_done, 1);
}

static void on_recursive(void *arg)
{
    EXPECT_ERR(weft_once_do((weft_once_t *)arg, on_recursive, arg),
               WEFT_EDEADLK);
}

static int on_body(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100; i++)
        weft_go(on_caller, NULL);
    wait_until(&on_done, 100);
    ASSERT_EQ(atomic_load(&on_runs), 1);
    EXPECT_OK(weft_once_do(&on_once, on_fn, NULL));
    ASSERT_EQ(atomic_load(&on_runs), 1);
    weft_once_t o2 = WEFT_ONCE_INIT;
    int fd = dup(2), nul = open("/dev/null", O_WRONLY);
    dup2(nul, 2); /* the cycle report */
    EXPECT_OK(weft_once_do(&o2, on_recursive, &o2));
    dup2(fd, 2);
    close(fd);
    close(nul);
    return 0;
}

TEST(once)
{
    run(ncpu(), on_body, NULL);
}

/* -------------------------------------------------------------- sem */

static weft_sem_t sm_sem = WEFT_SEM_INIT(3);
static _Atomic int sm_in, sm_max;
static _Atomic int64_t sm_done;

static void sm_worker(void *arg)
{
    uint64_t s = (uintptr_t)arg + 5;
    for (int i = 0; i < scale(2000); i++) {
        EXPECT_OK(weft_sem_acquire(&sm_sem));
        int v = atomic_fetch_add(&sm_in, 1) + 1;
        ASSERT_LE(v, 3);
        int m = atomic_load(&sm_max);
        while (v > m && !atomic_compare_exchange_weak(&sm_max, &m, v))
            ;
        if (rnd(&s) % 8 == 0)
            weft_sleep(10 * US);
        else
            weft_yield();
        atomic_fetch_sub(&sm_in, 1);
        EXPECT_OK(weft_sem_release(&sm_sem, 1));
    }
    atomic_fetch_add(&sm_done, 1);
}

static int sm_body(void *arg)
{
    (void)arg;
    for (int i = 0; i < 32; i++)
        weft_go(sm_worker, (void *)(intptr_t)i);
    wait_until(&sm_done, 32);
    ASSERT_EQ(atomic_load(&sm_max), 3);
    for (int i = 0; i < 3; i++)
        EXPECT_OK(weft_sem_tryacquire(&sm_sem));
    EXPECT_ERR(weft_sem_tryacquire(&sm_sem), WEFT_EAGAIN);
    EXPECT_OK(weft_sem_release(&sm_sem, 3));
    return 0;
}

TEST(sem_count_never_exceeded)
{
    run(ncpu(), sm_body, NULL);
}

/* --------------------------------------------------- wait-for cycles */

static weft_mutex_t dk_m1 = WEFT_MUTEX_INIT, dk_m2 = WEFT_MUTEX_INIT;
static _Atomic int64_t dk_holding, dk_done;
static _Atomic int64_t dk_ids[2];
static int dk_fd = -1; /* stderr of the runtime under test */

/* dk_reported - the captured stderr so far contains what. */
static bool dk_reported(const char *what)
{
    char buf[8192];
    ssize_t n = pread(dk_fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return strstr(buf, what) != NULL;
}

/* Worker 0 holds m1 and waits for m2, worker 1 holds m2 and waits for m1:
 * a cycle. The breaker unlocks m1 for worker 0 (Go allows unlocking from
 * another coroutine), which is why weft reports the cycle and waits
 * rather than failing the lock: worker 1 then gets m1, releases both,
 * and worker 0 gets m2. */
static void dk_worker(void *arg)
{
    int i = (int)(intptr_t)arg;
    weft_mutex_t *first = i == 0 ? &dk_m1 : &dk_m2;
    weft_mutex_t *second = i == 0 ? &dk_m2 : &dk_m1;
    dk_ids[i] = weft_self();
    EXPECT_OK(weft_mutex_lock(first));
    atomic_fetch_add(&dk_holding, 1);
    while (atomic_load(&dk_holding) < 2)
        weft_yield();
    EXPECT_OK(weft_mutex_lock(second));
    EXPECT_OK(weft_mutex_unlock(second));
    if (i == 1)
        EXPECT_OK(weft_mutex_unlock(first)); /* worker 0's m1 was unlocked
                                              * by the breaker */
    atomic_fetch_add(&dk_done, 1);
}

static void dk_breaker(void *arg)
{
    (void)arg;
    int64_t give_up = weft_now() + (int64_t)(5000 * MS * slow());
    while (!dk_reported("wait-for cycle of 2") && weft_now() < give_up)
        weft_sleep(100 * US);
    EXPECT_OK(weft_mutex_unlock(&dk_m1));
}

static int dk_body(void *arg)
{
    (void)arg;
    weft_go(dk_worker, (void *)0);
    weft_go(dk_worker, (void *)1);
    weft_go(dk_breaker, NULL);
    wait_until(&dk_done, 2);
    return 0;
}

/* Lock here, unlock there (a self-owned wait), and waits with a deadline,
 * are not cycles: no report, normal results. */
static weft_mutex_t nr_m = WEFT_MUTEX_INIT;

static void nr_unlocker(void *arg)
{
    (void)arg;
    weft_sleep(10 * MS);
    EXPECT_OK(weft_mutex_unlock(&nr_m));
}

static int nr_body(void *arg)
{
    (void)arg;
    EXPECT_OK(weft_mutex_lock(&nr_m));
    weft_go(nr_unlocker, NULL);
    EXPECT_OK(weft_mutex_lock(&nr_m)); /* waits 10 ms, then gets it */
    EXPECT_OK(weft_mutex_unlock(&nr_m));
    /* a deadline wait on a mutex one holds just times out */
    EXPECT_OK(weft_mutex_lock(&nr_m));
    EXPECT_ERR(weft_mutex_lock_dl(&nr_m, weft_now() + MS), WEFT_ETIMEDOUT);
    EXPECT_OK(weft_mutex_unlock(&nr_m));
    return 0;
}

/* capture - run body in a runtime with stderr going to a temporary file;
 * returns its text in out. */
static void capture(weft_main_fn body, int procs, char *out, size_t cap)
{
    char path[] = "/tmp/weft_sync_XXXXXX";
    dk_fd = mkstemp(path);
    ASSERT(dk_fd >= 0);
    unlink(path);
    int saved = dup(2);
    dup2(dk_fd, 2);
    int r = run_ret(procs, body, NULL);
    dup2(saved, 2);
    close(saved);
    EXPECT_OK(r);
    ssize_t len = pread(dk_fd, out, cap - 1, 0);
    close(dk_fd);
    dk_fd = -1;
    out[len > 0 ? len : 0] = '\0';
}

TEST(mutex_cycle_reported)
{
    for (int rep = 0; rep < 10; rep++) {
        dk_holding = dk_done = 0;
        char out[8192];
        capture(dk_body, rep % 2 ? ncpu() : 1, out, sizeof out);
        ASSERT_EQ(harness_count_lines(out, "wait-for cycle of 2"), 1);
        char a[64], b[64];
        snprintf(a, sizeof a, "coroutine %lld [", (long long)dk_ids[0]);
        snprintf(b, sizeof b, "coroutine %lld [", (long long)dk_ids[1]);
        ASSERT_CONTAINS(out, a);
        ASSERT_CONTAINS(out, b);
        ASSERT_CONTAINS(out, "sync.Mutex.Lock");
    }
}

TEST(mutex_no_false_cycle)
{
    for (int rep = 0; rep < 4; rep++) {
        char out[8192];
        capture(nr_body, rep % 2 ? ncpu() : 1, out, sizeof out);
        if (strstr(out, "wait-for cycle") != NULL)
            FAIL("a false cycle report: %s", out);
    }
}

/* ---------------------------------------------------------- bad input */

static weft_sem_t bi_sem = WEFT_SEM_INIT(0);
static weft_cond_t bi_cv = WEFT_COND_INIT;
static weft_mutex_t bi_mu = WEFT_MUTEX_INIT;
static weft_waitgroup_t bi_wg = WEFT_WAITGROUP_INIT;
static int bi_flag; /* bi_mu */

static void check_notcoro(void)
{
    weft_mutex_t m = WEFT_MUTEX_INIT;
    weft_rwmutex_t rw = WEFT_RWMUTEX_INIT;
    weft_cond_t cv = WEFT_COND_INIT;
    weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
    weft_once_t o = WEFT_ONCE_INIT;
    weft_sem_t s = WEFT_SEM_INIT(1);
    EXPECT_ERR(weft_mutex_lock(&m), WEFT_ENOTCORO);
    EXPECT_ERR(weft_mutex_lock_dl(&m, WEFT_FOREVER), WEFT_ENOTCORO);
    EXPECT_ERR(weft_rwmutex_lock(&rw), WEFT_ENOTCORO);
    EXPECT_ERR(weft_rwmutex_rlock(&rw), WEFT_ENOTCORO);
    EXPECT_ERR(weft_cond_wait(&cv, &m), WEFT_ENOTCORO);
    EXPECT_ERR(weft_waitgroup_wait(&wg), WEFT_ENOTCORO);
    EXPECT_ERR(weft_sem_acquire(&s), WEFT_ENOTCORO);
    EXPECT_ERR(weft_once_do(&o, on_fn, NULL),
               WEFT_ENOTCORO);
    /* The non-blocking forms work anywhere. */
    EXPECT_OK(weft_mutex_trylock(&m));
    EXPECT_ERR(weft_mutex_trylock(&m), WEFT_EAGAIN);
    EXPECT_OK(weft_mutex_unlock(&m));
    EXPECT_ERR(weft_mutex_unlock(&m), WEFT_EPERM);
    EXPECT_OK(weft_rwmutex_trylock(&rw));
    EXPECT_OK(weft_rwmutex_unlock(&rw));
    EXPECT_OK(weft_sem_tryacquire(&s));
    EXPECT_OK(weft_sem_release(&s, 1));
    EXPECT_OK(weft_cond_signal(&cv));
    EXPECT_OK(weft_cond_broadcast(&cv));
    EXPECT_OK(weft_waitgroup_add(&wg, 1));
    EXPECT_OK(weft_waitgroup_done(&wg));
}

static void *bi_thread(void *arg)
{
    (void)arg;
    check_notcoro();
    usleep(20000);
    EXPECT_OK(weft_sem_release(&bi_sem, 1));
    usleep(20000);
    EXPECT_ERR(weft_mutex_lock_dl(&bi_mu, 0), WEFT_ENOTCORO);
    while (weft_mutex_trylock(&bi_mu) != 0)
        usleep(100);
    bi_flag = 1;
    EXPECT_OK(weft_mutex_unlock(&bi_mu));
    EXPECT_OK(weft_cond_signal(&bi_cv));
    usleep(20000);
    EXPECT_OK(weft_waitgroup_done(&bi_wg));
    EXPECT_OK(weft_external_unref());
    return NULL;
}

static intptr_t bi_join(void *arg)
{
    return pthread_join(*(pthread_t *)arg, NULL);
}

static int bi_body(void *arg)
{
    (void)arg;
    EXPECT_ERR(weft_mutex_lock(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_mutex_lock_dl(NULL, 0), WEFT_EINVAL);
    EXPECT_ERR(weft_mutex_trylock(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_mutex_unlock(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_rwmutex_rlock(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_rwmutex_rlock_dl(NULL, 0), WEFT_EINVAL);
    EXPECT_ERR(weft_rwmutex_tryrlock(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_rwmutex_runlock(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_rwmutex_lock(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_rwmutex_lock_dl(NULL, 0), WEFT_EINVAL);
    EXPECT_ERR(weft_rwmutex_trylock(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_rwmutex_unlock(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_cond_wait(NULL, &bi_mu), WEFT_EINVAL);
    EXPECT_ERR(weft_cond_wait(&bi_cv, NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_cond_wait_dl(NULL, NULL, 0), WEFT_EINVAL);
    EXPECT_ERR(weft_cond_signal(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_cond_broadcast(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_waitgroup_add(NULL, 1), WEFT_EINVAL);
    EXPECT_ERR(weft_waitgroup_done(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_waitgroup_wait(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_waitgroup_wait_dl(NULL, 0), WEFT_EINVAL);
    EXPECT_ERR(weft_once_do(NULL, on_fn, NULL), WEFT_EINVAL);
    weft_once_t o = WEFT_ONCE_INIT;
    EXPECT_ERR(weft_once_do(&o, NULL, NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_sem_acquire(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_sem_acquire_dl(NULL, 0), WEFT_EINVAL);
    EXPECT_ERR(weft_sem_tryacquire(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_sem_release(NULL, 1), WEFT_EINVAL);
    EXPECT_ERR(weft_sem_release(&bi_sem, 0), WEFT_EINVAL);
    weft_mutex_t m = WEFT_MUTEX_INIT;
    EXPECT_ERR(weft_mutex_unlock(&m), WEFT_EPERM);
    EXPECT_ERR(weft_cond_wait(&bi_cv, &m), WEFT_EPERM); /* not locked */

    /* A plain thread wakes coroutines. */
    EXPECT_OK(weft_waitgroup_add(&bi_wg, 1));
    EXPECT_OK(weft_external_ref());
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, bi_thread, NULL), 0);
    EXPECT_OK(weft_sem_acquire(&bi_sem));
    EXPECT_OK(weft_mutex_lock(&bi_mu));
    while (!bi_flag)
        EXPECT_OK(weft_cond_wait(&bi_cv, &bi_mu));
    EXPECT_OK(weft_mutex_unlock(&bi_mu));
    EXPECT_OK(weft_waitgroup_wait(&bi_wg));
    EXPECT_OK(weft_blocking(bi_join, &t));
    return 0;
}

TEST(bad_input_and_plain_threads)
{
    check_notcoro(); /* no runtime at all */
    run(2, bi_body, NULL);
    run(1, bi_body, NULL);
}

/* ---------------------------------------------------- contention hook */

static _Atomic int64_t hk_events, hk_unlocker_events;
static weft_mutex_t hk_mu = WEFT_MUTEX_INIT;
static _Atomic int64_t hk_done;

static void hk_hook(struct g *gp, int reason, int64_t start, int64_t end,
                    const void *obj, struct g *unlocker)
{
    ASSERT(gp != NULL);
    ASSERT_LE(start, end);
    if (obj == (const void *)&hk_mu) {
        ASSERT_EQ(reason, WR_SYNC_MUTEX_LOCK);
        atomic_fetch_add(&hk_events, 1);
        if (unlocker != NULL) {
            ASSERT(unlocker != gp);
            atomic_fetch_add(&hk_unlocker_events, 1);
        }
    }
}

static void hk_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200; i++) {
        EXPECT_OK(weft_mutex_lock(&hk_mu));
        weft_sleep(20 * US);
        EXPECT_OK(weft_mutex_unlock(&hk_mu));
    }
    atomic_fetch_add(&hk_done, 1);
}

static int hk_body(void *arg)
{
    (void)arg;
    weft__contention_hook = hk_hook;
    for (int i = 0; i < 4; i++)
        weft_go(hk_worker, NULL);
    wait_until(&hk_done, 4);
    weft__contention_hook = NULL;
    ASSERT_GT(atomic_load(&hk_events), 0);
    ASSERT_GT(atomic_load(&hk_unlocker_events), 0);
    return 0;
}

TEST(contention_hook_reports_unlocker)
{
    run(2, hk_body, NULL);
}

/* ------------------------------------ mutex deadline in starvation mode */

/* mx_state - a mutex's state word (white box: sched/mutex.c). */
static int32_t mx_state(weft_mutex_t *m)
{
    return (int32_t)(__atomic_load_n(&m->opaque_[0], __ATOMIC_RELAXED) >>
                     32);
}

static weft_mutex_t sx_mu = WEFT_MUTEX_INIT;
static _Atomic int64_t sx_done;
static _Atomic int sx_rc;

static void sx_waiter(void *arg)
{
    (void)arg;
    /* After the holder's 2 ms (> the 1 ms starvation threshold), with
     * room for a slow build to wake it before the deadline. */
    int64_t dl = weft_now() + 2 * MS + (int64_t)(3 * MS * slow());
    atomic_store(&sx_rc, weft_mutex_lock_dl(&sx_mu, dl));
    atomic_fetch_add(&sx_done, 1);
}

/* The last deadline waiter of a starving mutex times out while the mutex
 * is held: once it is unlocked, the mutex must be free for trylock, not
 * "starving" with a hand-off nobody will take. The holder unlocks and
 * relocks at once after 2 ms so the waiter wakes, has waited > 1 ms, finds
 * the mutex taken and sets STARVING (checked: otherwise the test would
 * not test the bug), then holds it until the waiter has timed out. */
static int sx_body(void *arg)
{
    (void)arg;
    EXPECT_OK(weft_mutex_lock(&sx_mu));
    weft_go(sx_waiter, NULL);
    weft_sleep(2 * MS);
    EXPECT_OK(weft_mutex_unlock(&sx_mu));
    EXPECT_OK(weft_mutex_lock(&sx_mu)); /* barge past the woken waiter */
    bool starving = false;
    while (atomic_load(&sx_done) == 0) { /* hold it until it gave up */
        starving = starving || (mx_state(&sx_mu) & 4) != 0;
        weft_sleep(100 * US);
    }
    EXPECT_ERR(atomic_load(&sx_rc), WEFT_ETIMEDOUT);
    EXPECT_OK(weft_mutex_unlock(&sx_mu));
    EXPECT_OK(weft_mutex_trylock(&sx_mu));
    EXPECT_OK(weft_mutex_unlock(&sx_mu));
    ASSERT_EQ(mx_state(&sx_mu), 0);
    sx_done = 0;
    return starving ? 0 : 1;
}

TEST(mutex_deadline_leaves_starvation)
{
    int starved = 0;
    for (int rep = 0; rep < 10; rep++) {
        starved += run_ret(rep % 2 ? 2 : 1, sx_body, NULL) == 0;
    }
    /* On one P the waiter always wakes behind the barging relock. */
    ASSERT_GE(starved, 5);
}

/* Deadline waiters, blocking lockers and trylock racing on one mutex that
 * keeps going in and out of starvation mode: exclusion holds (a plain
 * counter), every success is counted, the mutex ends free, and nothing
 * hangs (the harness timeout). Critical sections sometimes sleep past
 * 1 ms so waiters starve; deadlines are 0..3 ms so they time out around
 * hand-offs. */
static weft_mutex_t ms_mu = WEFT_MUTEX_INIT;
static int64_t ms_counter; /* ms_mu */
static _Atomic int64_t ms_ok, ms_timeouts, ms_busy, ms_starving, ms_done;
static _Atomic int ms_inside;
static int ms_iters;
static uint64_t ms_seed;

/* ms_check - STARVING only with waiters counted, at any time (white box,
 * sched/mutex.c invariant 2: a starving mutex without waiters would hand
 * off to nobody); count: we hold ms_mu, so it says LOCKED too. */
static void ms_check(bool count)
{
    int32_t st = mx_state(&ms_mu);
    ASSERT(!count || (st & 1));
    if (st & 4) {
        if (count)
            atomic_fetch_add(&ms_starving, 1);
        if ((st >> 3) == 0)
            FAIL("starving mutex without waiters: state %#x", (unsigned)st);
    }
}

static void ms_worker(void *arg)
{
    uint64_t s = ms_seed * 0x9e3779b97f4a7c15ull + (uintptr_t)arg * 31 + 7;
    for (int i = 0; i < ms_iters; i++) {
        uint64_t r = rnd(&s);
        int e;
        switch (r % 4) {
        case 0:
            e = weft_mutex_lock(&ms_mu);
            break;
        case 1:
            e = weft_mutex_trylock(&ms_mu);
            break;
        default:
            e = weft_mutex_lock_dl(&ms_mu,
                                   weft_now() + (int64_t)(r >> 8) % 3000 * US);
            break;
        }
        if (e == WEFT_ETIMEDOUT) {
            ms_check(false);
            atomic_fetch_add(&ms_timeouts, 1);
            continue;
        }
        if (e == WEFT_EAGAIN && r % 4 == 1) {
            atomic_fetch_add(&ms_busy, 1);
            weft_yield();
            continue;
        }
        EXPECT_OK(e);
        ASSERT_EQ(atomic_fetch_add(&ms_inside, 1), 0);
        ms_check(true);
        int64_t c = ms_counter;
        if ((r >> 20) % 64 == 0)
            weft_sleep((int64_t)((r >> 30) % 1500) * US);
        else if ((r >> 20) % 4 == 0)
            weft_yield();
        ms_check(true);
        ms_counter = c + 1;
        atomic_fetch_sub(&ms_inside, 1);
        atomic_fetch_add(&ms_ok, 1);
        EXPECT_OK(weft_mutex_unlock(&ms_mu));
    }
    atomic_fetch_add(&ms_done, 1);
}

static int ms_body(void *arg)
{
    int n = (int)(intptr_t)arg;
    for (int i = 0; i < n; i++)
        ASSERT(weft_go(ms_worker, (void *)(intptr_t)i) > 0);
    wait_until(&ms_done, n);
    ASSERT_EQ(ms_counter, atomic_load(&ms_ok));
    /* No hand-off unit left over in the semaphore word. */
    ASSERT_EQ((uint32_t)__atomic_load_n(&ms_mu.opaque_[0], __ATOMIC_RELAXED),
              0u);
    EXPECT_OK(weft_mutex_trylock(&ms_mu)); /* free, not "starving" */
    ASSERT_EQ(mx_state(&ms_mu), 1);       /* locked, no waiters */
    EXPECT_OK(weft_mutex_unlock(&ms_mu));
    return 0;
}

TEST_TIMEOUT(mutex_deadline_stress, 240)
{
    int procs[] = {1, 2, ncpu(), 4};
    int64_t timeouts = 0, starving = 0;
    for (int seed = 0; seed < 12; seed++) {
        ms_seed = (uint64_t)seed;
        ms_counter = 0;
        ms_ok = ms_done = ms_timeouts = ms_starving = 0;
        ms_iters = scale(1200);
        run(procs[seed % 4], ms_body, (void *)(intptr_t)(3 + seed % 3 * 4));
        timeouts += atomic_load(&ms_timeouts);
        starving += atomic_load(&ms_starving);
    }
    printf("# timeouts %lld, starvation-mode holds %lld, trylock busy %lld\n",
           (long long)timeouts, (long long)starving,
           (long long)atomic_load(&ms_busy));
    ASSERT_GT(timeouts, 0);
    ASSERT_GT(starving, 0);
}

/* ----------------------------------- rwmutex reader deadline, next era */

/* A reader blocked behind writer 1 is released by its unlock, but before
 * it runs, writer 2 (counting it as an active reader) and a reader of
 * writer 2's era arrive. The later reader must not take the first one's
 * release (it would hold a read lock "for" it, and the first reader, now
 * stuck behind writer 2, would wait past its deadline). On one P the
 * order is forced: unlock readies A in runnext, spawning B pushes A to
 * the tail, so B runs first; B also waits until writer 2 is pending, so
 * a preemption of the main coroutine cannot put B ahead of writer 2. */
static weft_rwmutex_t re_rw = WEFT_RWMUTEX_INIT;
static _Atomic int64_t re_a_done, re_b_in;
static _Atomic int re_a_rc = 1, re_b_rc = 1;
static _Atomic int64_t re_a_took;
static int64_t re_hold; /* how long writer 2 holds the lock */

static void re_reader_a(void *arg)
{
    (void)arg;
    /* Half of writer 2's hold: a reader stuck behind writer 2 times out,
     * one released by writer 1 is in long before, even in slow builds. */
    int64_t t0 = weft_now();
    int rc = weft_rwmutex_rlock_dl(&re_rw, t0 + re_hold / 2);
    atomic_store(&re_a_took, weft_now() - t0);
    atomic_store(&re_a_rc, rc);
    if (rc == 0)
        EXPECT_OK(weft_rwmutex_runlock(&re_rw));
    atomic_fetch_add(&re_a_done, 1);
}

/* re_readers - the rwmutex word's reader count (white box: its low 24
 * bits, sign-extended; -2^22 added while a writer is pending). */
static int32_t re_readers(void)
{
    return (int32_t)((uint32_t)__atomic_load_n(&re_rw.opaque_[2],
                                               __ATOMIC_RELAXED)
                     << 8) >> 8;
}

static void re_reader_b(void *arg)
{
    (void)arg;
    /* Of writer 2's era by construction: arrive once it is pending (a
     * preemption of the main coroutine at its spawn of us would
     * otherwise let us in first, legitimately). */
    while (re_readers() >= 0)
        weft_sleep(50 * US);
    int rc = weft_rwmutex_rlock_dl(&re_rw, weft_now() + 4 * re_hold);
    if (rc == 0) {
        atomic_fetch_add(&re_b_in, 1);
        EXPECT_OK(weft_rwmutex_runlock(&re_rw));
    }
    atomic_store(&re_b_rc, rc);
}

static int re_body(void *arg)
{
    (void)arg;
    re_a_done = re_b_in = 0;
    re_a_rc = re_b_rc = 1;
    re_hold = (int64_t)(40 * MS * slow());
    EXPECT_OK(weft_rwmutex_lock(&re_rw));
    weft_go(re_reader_a, NULL);
    /* A blocks behind us: counted as a blocked reader (white box: the
     * rwmutex word's low 24 bits are R, -2^22 + 1 with one blocked). */
    while (re_readers() != -(1 << 22) + 1)
        weft_sleep(50 * US);
    weft_sleep(1 * MS); /* and sleeps */
    EXPECT_OK(weft_rwmutex_unlock(&re_rw)); /* releases A */
    weft_go(re_reader_b, NULL);
    EXPECT_OK(weft_rwmutex_lock(&re_rw)); /* waits for A's read lock */
    /* B is of our era: it cannot have had a read lock. */
    int64_t b_in = atomic_load(&re_b_in);
    ASSERT_EQ(b_in, 0);
    weft_sleep(re_hold);
    EXPECT_OK(weft_rwmutex_unlock(&re_rw));
    wait_until(&re_a_done, 1);
    /* A was released by the first unlock: it got the lock before writer
     * 2 let go (its deadline is half of writer 2's hold). */
    int a_rc = atomic_load(&re_a_rc), b_rc;
    int64_t a_took = atomic_load(&re_a_took);
    EXPECT_OK(a_rc);
    ASSERT_LT(a_took, re_hold / 2);
    while ((b_rc = atomic_load(&re_b_rc)) == 1)
        weft_sleep(100 * US);
    EXPECT_OK(b_rc);
    EXPECT_OK(weft_rwmutex_trylock(&re_rw));
    EXPECT_OK(weft_rwmutex_unlock(&re_rw));
    return 0;
}

TEST(rwmutex_reader_release_not_stolen)
{
    for (int rep = 0; rep < 4; rep++)
        run(rep % 2 ? 2 : 1, re_body, NULL);
}

/* A cycle through an rwmutex: A holds rw for writing and waits for m, B
 * holds m and waits for a read lock of rw. Reported whichever blocks
 * last; the breaker then unlocks m for B (Go allows it): A gets m and
 * lets go of both, B gets its read lock. */
static weft_mutex_t rc_m = WEFT_MUTEX_INIT;
static weft_rwmutex_t rc_rw = WEFT_RWMUTEX_INIT;
static _Atomic int64_t rc_holding, rc_done;
static _Atomic int64_t rc_ids[2];
static int rc_order;

static void rc_a(void *arg)
{
    (void)arg;
    rc_ids[0] = weft_self();
    EXPECT_OK(weft_rwmutex_lock(&rc_rw));
    atomic_fetch_add(&rc_holding, 1);
    while (atomic_load(&rc_holding) < 2)
        weft_yield();
    if (rc_order == 0)
        weft_sleep(2 * MS); /* B blocks first */
    EXPECT_OK(weft_mutex_lock(&rc_m));
    EXPECT_OK(weft_mutex_unlock(&rc_m));
    EXPECT_OK(weft_rwmutex_unlock(&rc_rw));
    atomic_fetch_add(&rc_done, 1);
}

static void rc_b(void *arg)
{
    (void)arg;
    rc_ids[1] = weft_self();
    EXPECT_OK(weft_mutex_lock(&rc_m));
    atomic_fetch_add(&rc_holding, 1);
    while (atomic_load(&rc_holding) < 2)
        weft_yield();
    if (rc_order == 1)
        weft_sleep(2 * MS); /* A blocks first */
    EXPECT_OK(weft_rwmutex_rlock(&rc_rw));
    EXPECT_OK(weft_rwmutex_runlock(&rc_rw));
    atomic_fetch_add(&rc_done, 1); /* rc_m was unlocked by the breaker */
}

static void rc_breaker(void *arg)
{
    (void)arg;
    int64_t give_up = weft_now() + (int64_t)(5000 * MS * slow());
    while (!dk_reported("wait-for cycle of 2") && weft_now() < give_up)
        weft_sleep(100 * US);
    EXPECT_OK(weft_mutex_unlock(&rc_m));
}

static int rc_body(void *arg)
{
    (void)arg;
    weft_go(rc_a, NULL);
    weft_go(rc_b, NULL);
    weft_go(rc_breaker, NULL);
    wait_until(&rc_done, 2);
    return 0;
}

TEST(rwmutex_cycle_reported)
{
    for (int rep = 0; rep < 8; rep++) {
        rc_holding = rc_done = 0;
        rc_order = rep % 2;
        char out[8192];
        capture(rc_body, rep % 4 < 2 ? 1 : ncpu(), out, sizeof out);
        ASSERT_EQ(harness_count_lines(out, "wait-for cycle of 2"), 1);
        char a[128], b[128];
        snprintf(a, sizeof a,
                 "coroutine %lld [sync.Mutex.Lock]: waits for mutex %p "
                 "held by coroutine %lld",
                 (long long)rc_ids[0], (void *)&rc_m, (long long)rc_ids[1]);
        snprintf(b, sizeof b,
                 "coroutine %lld [sync.RWMutex.RLock]: waits for a read "
                 "lock of rwmutex %p held by coroutine %lld",
                 (long long)rc_ids[1], (void *)&rc_rw, (long long)rc_ids[0]);
        ASSERT_CONTAINS(out, a);
        ASSERT_CONTAINS(out, b);
    }
}
