/*
 * lock.c - the runtime's own low-level blocking: a futex mutex (wlock) and
 * a one-shot wakeup (note), as Go's lock_futex.go. They block the thread,
 * not a coroutine, so they are for short critical sections in the
 * scheduler and for parking idle Ms.
 *
 * wlock: key 0 free, 1 locked, 2 locked and maybe waited on. Lock spins
 * briefly (the holder is usually running on another CPU), then sets 2
 * and sleeps in the futex; unlock wakes one sleeper only if it saw 2.
 *
 * note: key 0 clear, 1 woken. notewakeup may come before notesleep; the
 * sleeper then returns at once. A note is cleared by its owner before
 * it is reused; one sleeper at a time.
 *
 * The lock's uncontended paths are inline in runtime.h; the rest is here.
 *
 * TSan cannot see through futexes, so the lock and the note tell it
 * about the happens-before edges they create (no-ops in other builds).
 */
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "runtime.h"
#include "sanitizer.h"

void weft__futexwait_os(_Atomic uint32_t *addr, uint32_t val, int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, ns < 0 ? NULL : &ts,
            NULL, 0);
}

void weft__futexwake_os(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static void futexwait(_Atomic uint32_t *addr, uint32_t val)
{
    weft__futexwait_os(addr, val, -1);
}

static void futexwake(_Atomic uint32_t *addr, int n)
{
    weft__futexwake_os(addr, n);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__)
    __asm__ volatile("pause");
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* weft__lock_slow - weft__lock's first CAS failed: spin, then sleep. */
void weft__lock_slow(wlock *l)
{
    uint32_t v;
    for (int i = 0; i < 100; i++) {
        cpu_relax();
        v = 0;
        if (LOAD(&l->key) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->key, &v, 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed)) {
            weft__tsan_acquire(l);
            return;
        }
    }
    /* Mark contended; whoever unlocks will wake us. */
    while (atomic_exchange_explicit(&l->key, 2, memory_order_acquire) != 0)
        futexwait(&l->key, 2);
    weft__tsan_acquire(l);
}

/* weft__unlock_wake - weft__unlock found sleepers: wake one. */
void weft__unlock_wake(wlock *l) { futexwake(&l->key, 1); }

void weft__notesleep(note *n)
{
    while (LOADACQ(&n->key) == 0)
        futexwait(&n->key, 0);
    weft__tsan_acquire(n);
}

bool weft__notetsleep(note *n, int64_t ns)
{
    int64_t end = weft__nanotime() + ns;
    while (LOADACQ(&n->key) == 0) {
        int64_t left = end - weft__nanotime();
        if (left <= 0)
            return false;
        weft__futexwait_os(&n->key, 0, left);
    }
    weft__tsan_acquire(n); /* pairs with notewakeup's release */
    return true;
}

void weft__notewakeup(note *n)
{
    weft__tsan_release(n);
    uint32_t old = atomic_exchange_explicit(&n->key, 1, memory_order_release);
    if (old != 0)
        weft__throw("weft: notewakeup - double wakeup");
    futexwake(&n->key, 1);
}

int64_t weft__nanotime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* weft__walltime - ns since the epoch (profiles' time_nanos). */
int64_t weft__walltime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* wyrand: fast, good enough for victim selection and select fairness. */
uint32_t weft__fastrand(struct m *mp)
{
    mp->fastrand += 0xa0761d6478bd642full;
    __uint128_t r = (__uint128_t)mp->fastrand *
                    (mp->fastrand ^ 0xe7037ed1a0b428dbull);
    return (uint32_t)((uint64_t)(r >> 64) ^ (uint64_t)r);
}
