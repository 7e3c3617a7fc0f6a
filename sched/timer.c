/*
 * timer.c - per-P timer heaps: sleeps now, deadlines of later modules.
 *
 * Each P keeps a binary min-heap of timers ordered by when, guarded by
 * pp->timerlock. pp->timer0when mirrors the earliest when (0: empty) so
 * the scheduler can skip the lock when nothing is due. Timers are run by
 * whichever M holds a P and looks: the owner in schedule(), a stealer in
 * findrunnable() (expired timers of other Ps, idle ones included), and the
 * M that slept in netpoll until the earliest timer. A timer's function
 * runs without the lock, on an M that holds a P, so it may ready Gs.
 *
 * Invariants:
 *  1. A timer is on at most one heap; t->pp says which (NULL: none) and
 *     changes only under that heap's lock. Timers never move between
 *     heaps, so a deleter locks t->pp and rechecks it.
 *  2. A timer is removed from its heap before its function runs; a
 *     delete that finds it gone returns false (it ran or is running).
 *     The firing copies f, arg and seq under the lock first: the owner
 *     may re-arm the timer while the old firing is still in flight.
 *  3. Adding a timer earlier than the netpoll sleeper's wake-up breaks
 *     that sleep (wakenetpoller), so no timer fires late for want of a
 *     thread.
 */
#include <stdlib.h>

#include "runtime.h"

static inline bool less(struct timer *a, struct timer *b)
{
    return a->when < b->when;
}

static void siftup(struct timer **h, int32_t i)
{
    struct timer *t = h[i];
    while (i > 0) {
        int32_t parent = (i - 1) / 2;
        if (!less(t, h[parent]))
            break;
        h[i] = h[parent];
        h[i]->idx = i;
        i = parent;
    }
    h[i] = t;
    t->idx = i;
}

static void siftdown(struct timer **h, int32_t n, int32_t i)
{
    struct timer *t = h[i];
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && less(h[c + 1], h[c]))
            c++;
        if (!less(h[c], t))
            break;
        h[i] = h[c];
        h[i]->idx = i;
        i = c;
    }
    h[i] = t;
    t->idx = i;
}

/* Caller holds pp->timerlock. */
static void removeat(struct p *pp, int32_t i)
{
    struct timer **h = pp->timers;
    struct timer *t = h[i];
    int32_t last = --pp->ntimers;
    t->idx = -1;
    if (i != last) {
        h[i] = h[last];
        h[i]->idx = i;
        siftdown(h, last, i);
        siftup(h, h[i]->idx);
    }
    STORE(&pp->timer0when, pp->ntimers ? h[0]->when : 0);
    /* Last, with release: a re-arm under another P's lock acquires it
     * before rewriting the fields the firing read just before. */
    STOREREL(&t->pp, NULL);
}

static void wakenetpoller(int64_t when)
{
    if (LOAD(&weft__sched.lastpoll) == 0) {
        int64_t until = LOAD(&weft__sched.polluntil);
        if (until == 0 || until > when)
            weft__netpoll_break();
    } else {
        weft__wakep();
    }
}

/* weft__timer_add - queue t on pp's heap to call f(arg, seq, now) at
 * when. t must not be queued. f, arg and seq are stored under the heap
 * lock: an earlier firing of t may still be reading them (invariant 2).
 * Aborts on out-of-memory: a lost timer would hang its G. */
void weft__timer_add(struct p *pp, struct timer *t, int64_t when, timer_fn f,
                     void *arg, uint64_t seq)
{
    weft__lock(&pp->timerlock);
    if (LOADACQ(&t->pp) != NULL)
        weft__throw("weft: timer_add - timer already queued");
    t->f = f;
    t->arg = arg;
    t->seq = seq;
    if (pp->ntimers == pp->timerscap) {
        int32_t cap = pp->timerscap ? pp->timerscap * 2 : 64;
        struct timer **nt = realloc(pp->timers, sizeof *nt * (size_t)cap);
        if (nt == NULL)
            weft__throw("weft: timer_add - out of memory");
        pp->timers = nt;
        pp->timerscap = cap;
    }
    t->when = when;
    STORE(&t->pp, pp);
    pp->timers[pp->ntimers] = t;
    siftup(pp->timers, pp->ntimers++);
    bool first = pp->timers[0] == t;
    if (first)
        STORE(&pp->timer0when, when);
    weft__unlock(&pp->timerlock);
    if (first)
        wakenetpoller(when);
}

/* weft__timer_del - take t off its heap. Returns true if it was queued
 * (it will not run), false if it already ran, is running or never was. */
bool weft__timer_del(struct timer *t)
{
    for (;;) {
        struct p *pp = LOAD(&t->pp);
        if (pp == NULL)
            return false;
        weft__lock(&pp->timerlock);
        if (LOAD(&t->pp) == pp) {
            removeat(pp, t->idx);
            weft__unlock(&pp->timerlock);
            return true;
        }
        weft__unlock(&pp->timerlock);
    }
}

int64_t weft__checktimers(struct p *pp, int64_t now)
{
    int64_t next = LOAD(&pp->timer0when);
    if (next == 0 || next > now)
        return next;
    weft__lock(&pp->timerlock);
    while (pp->ntimers > 0 && pp->timers[0]->when <= now) {
        struct timer *t = pp->timers[0];
        timer_fn f = t->f;
        void *arg = t->arg;
        uint64_t seq = t->seq;
        removeat(pp, 0);
        weft__unlock(&pp->timerlock);
        f(arg, seq, now); /* t may be re-armed from here on */
        weft__lock(&pp->timerlock);
    }
    next = LOAD(&pp->timer0when);
    weft__unlock(&pp->timerlock);
    return next;
}

int64_t weft__timersleep_until(void)
{
    int64_t min = 0;
    for (int32_t i = 0; i < weft__gomaxprocs; i++) {
        int64_t w = LOAD(&weft__allp[i]->timer0when);
        if (w != 0 && (min == 0 || w < min))
            min = w;
    }
    return min;
}

/* Shutdown: the timers belong to abandoned Gs; just drop the heap. */
void weft__timers_free(struct p *pp)
{
    for (int32_t i = 0; i < pp->ntimers; i++) {
        STORE(&pp->timers[i]->pp, NULL);
        pp->timers[i]->idx = -1;
    }
    free(pp->timers);
    pp->timers = NULL;
    pp->ntimers = pp->timerscap = 0;
    STORE(&pp->timer0when, 0);
}

/* ----------------------------------------------------------------- sleep */

/* Only its own timer wakes a sleeper, so a firing cannot be stale. */
static void sleepfire(void *arg, uint64_t seq, int64_t now)
{
    (void)seq;
    (void)now;
    weft__ready(arg);
}

/* Runs after the G's context is saved, so the timer cannot fire (on
 * another P) before the G is fully parked. */
static bool sleepcommit(struct g *gp, void *arg)
{
    int64_t deadline = *(int64_t *)arg; /* on gp's stack: read first */
    weft__timer_add(weft__getm()->p, &gp->timer, deadline, sleepfire, gp, 0);
    return true;
}

WEFT_EXTERN int weft_sleep_until(int64_t deadline)
{
    struct g *gp = weft__getg();
    if (gp == NULL || gp->syscallp)
        return WEFT_ENOTCORO;
    if (deadline <= weft__nanotime()) {
        weft_checkpoint();
        return 0;
    }
    if (deadline == WEFT_FOREVER) {
        weft__park(NULL, NULL, WR_SLEEP);
        return 0;
    }
    weft__park(sleepcommit, &deadline, WR_SLEEP);
    return 0;
}

WEFT_EXTERN int weft_sleep(int64_t ns)
{
    int64_t now = weft__nanotime();
    if (ns <= 0)
        return weft_sleep_until(now);
    return weft_sleep_until(ns > WEFT_FOREVER - now - 1 ? WEFT_FOREVER - 1
                                                         : now + ns);
}
