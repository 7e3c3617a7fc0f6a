/*
 * sema.c - the one parking mechanism of the sync objects (mutex.c), after
 * Go's runtime/sema.go: coroutines wait on the address of a 32-bit word,
 * in hashed buckets, FIFO per address, on top of park.c's wait protocol.
 *
 * Two disciplines share the buckets and queues:
 *  - semaphore (weft__semacquire / weft__semrelease): *addr counts units;
 *    acquire takes one or parks until a release wakes it. A release may
 *    hand its unit straight to the waiter it wakes (handoff), so a woken
 *    waiter cannot be overtaken (mutex starvation mode, weft_sem_t).
 *  - futex (weft__futexsleep / weft__futexwakeup): park while *addr
 *    still holds a value, checked under the bucket lock; a waker changes
 *    the word first, then wakes. Used where a wake-up means "look again"
 *    (cond, waitgroup) and a lost or stolen unit would be wrong.
 *
 * Structure: SEMTABSZ buckets (semaroot), each a wlock, a count of
 * waiters (nwait) and a list of "head" waiters, one per distinct address
 * that has waiters. The head's q holds every waiter of that address in
 * order. When the head itself leaves, its queue moves to the next waiter
 * (waiters live on their own stacks), as Go's treap node does.
 *
 * Invariants:
 *  1. A waiter is counted in root->nwait from just before it rechecks the
 *     word under the lock until whoever dequeues it (waker or the waiter
 *     itself after a timeout) uncounts it. Releasers change the word
 *     (seq-cst) before reading nwait (seq-cst), waiters count themselves
 *     before rechecking the word: one of the two sees the other, so the
 *     releaser may skip the lock when nwait is 0 (Go's Dekker pair).
 *  2. The word of a waiter's address is rechecked under the bucket lock
 *     before it queues, and the lock is released only after the switch
 *     (park.c), so a release between the check and the park finds it.
 *  3. A waker dequeues a sudog and claims it (park.c). If the claim fails
 *     the waiter is timing out: a unit taken for it is given back and the
 *     next waiter is tried, so a timeout never swallows a wake-up.
 *  4. A claimed G is readied after the bucket lock is dropped, through
 *     gp->schedlink (the claimer owns the parked G), with
 *     weft__ready_any so plain threads can release.
 *
 * Locking: a bucket lock nests inside nothing of the sync objects (they
 * are lock-free words) and takes nothing while held except, for the
 * contention hook, whatever the hook takes. Never held across a switch.
 *
 * Rejected: Go's treap of addresses per bucket. It matters only when many
 * distinct addresses with waiters share a bucket; with 251 buckets a
 * list of heads is shorter code and as fast for the usual one or two.
 * Rejected: one queue per object embedded in the object (no hashing): the
 * public objects are small fixed-size words (weft.h), and a queue there
 * would need its own lock in every mutex.
 */
#include <string.h>

#include "runtime.h"


#define SEMTABSZ 251

struct semawaiter {
    struct sudog s;                   /* s.obj: the address; s.ticket: 1 if
                                       * a unit was handed to it (semrelease
                                       * writes before its claim) */
    struct semawaiter *hnext, *hprev; /* root lock: the bucket's heads */
    struct waitq q;                   /* root lock; head only: waiters of
                                       * the address, in wake order */
    int64_t t0;                       /* when it queued, if a hook was on */
    int reason;                       /* immutable while queued */
};

struct semaroot {
    _Alignas(CACHELINE) wlock lock;
    _Atomic uint32_t nwait;      /* atomic; see invariant 1 */
    struct semawaiter *heads;    /* lock */
};

static struct semaroot semtable[SEMTABSZ];

/* weft__sema_reset - forget every waiter: a new runtime starts, and the
 * Gs an earlier one abandoned (and their stacks, where the waiters live)
 * are gone. No G runs. */
void weft__sema_reset(void)
{
    memset(semtable, 0, sizeof semtable);
}

static inline struct semaroot *semroot(const void *addr)
{
    return &semtable[((uintptr_t)addr >> 3) % SEMTABSZ];
}

/* findhead - the head waiter of addr in r, or NULL. Caller holds r->lock. */
static struct semawaiter *findhead(struct semaroot *r, const void *addr)
{
    struct semawaiter *h = r->heads;
    while (h != NULL && h->s.obj != addr)
        h = h->hnext;
    return h;
}

/* enqueue - queue w (w->s.obj set) at the tail of its address's queue, or
 * at the head if lifo. Caller holds r->lock. */
static void enqueue(struct semaroot *r, struct semawaiter *w, bool lifo)
{
    struct semawaiter *h = findhead(r, w->s.obj);
    if (h == NULL) {
        w->q.first = w->q.last = NULL;
        weft__waitq_push(&w->q, &w->s);
        w->hprev = NULL;
        w->hnext = r->heads;
        if (r->heads != NULL)
            r->heads->hprev = w;
        r->heads = w;
        return;
    }
    if (!lifo) {
        weft__waitq_push(&h->q, &w->s);
        return;
    }
    struct waitq *q = &h->q;
    w->s.prev = NULL;
    w->s.next = q->first;
    if (q->first != NULL)
        q->first->prev = &w->s;
    else
        q->last = &w->s;
    q->first = &w->s;
    w->s.queued = true;
}

/* dequeue - take queued w off its address's queue; if w held the queue,
 * pass it to the next waiter. Caller holds r->lock. */
static void dequeue(struct semaroot *r, struct semawaiter *w)
{
    struct semawaiter *h = findhead(r, w->s.obj);
    if (h == NULL)
        weft__throw("weft: sema - queued waiter without a head");
    weft__waitq_remove(&h->q, &w->s);
    if (h != w)
        return;
    struct semawaiter *nh = (struct semawaiter *)h->q.first;
    if (nh != NULL) {
        nh->q = h->q;
        nh->hnext = h->hnext;
        nh->hprev = h->hprev;
    }
    struct semawaiter *repl = nh != NULL ? nh : h->hnext;
    if (h->hprev != NULL)
        h->hprev->hnext = repl;
    else
        r->heads = repl;
    if (h->hnext != NULL)
        h->hnext->hprev = nh != NULL ? nh : h->hprev;
}

/* popfirst - dequeue and return the first waiter of addr, or NULL.
 * Caller holds r->lock. Uncounts it from nwait. */
static struct semawaiter *popfirst(struct semaroot *r, const void *addr)
{
    struct semawaiter *h = findhead(r, addr);
    if (h == NULL)
        return NULL;
    struct semawaiter *w = (struct semawaiter *)h->q.first;
    dequeue(r, w);
    atomic_fetch_sub(&r->nwait, 1);
    return w;
}

/* semunlock - park.c's unlock function: arg is the address, so the
 * contention hook reports the object waited on. */
static void semunlock(void *addr) { weft__unlock(&semroot(addr)->lock); }

/* readylist - ready every G of a list linked through schedlink. */
static void readylist(struct g *list)
{
    while (list != NULL) {
        struct g *next = list->schedlink;
        list->schedlink = NULL;
        weft__ready_any(list);
        list = next;
    }
}

/* weft__cansemacquire - take a unit of *addr if there is one. Any thread. */
bool weft__cansemacquire(_Atomic uint32_t *addr)
{
    /* seq_cst: after a waiter's nwait increment this load is one half of
     * the Dekker pair with semrelease (invariant 1); a plain mov on x86. */
    uint32_t v = atomic_load(addr);
    while (v > 0) {
        if (atomic_compare_exchange_weak(addr, &v, v - 1))
            return true;
    }
    return false;
}

/* startwait - fill in w for the current G gp waiting on addr. */
static void startwait(struct semawaiter *w, struct g *gp, void *addr,
                      int reason)
{
    w->s.g = gp;
    w->s.obj = addr;
    w->s.elem = NULL;
    w->s.idx = 0;
    w->s.queued = false;
    w->s.success = false;
    w->s.ticket = 0;
    w->reason = reason;
    w->t0 = 0;
}

/* timedout - after a timeout: remove w if it is still queued. */
static void timedout(struct semaroot *r, struct semawaiter *w)
{
    weft__lock(&r->lock);
    if (w->s.queued) {
        dequeue(r, w);
        atomic_fetch_sub(&r->nwait, 1);
    }
    weft__unlock(&r->lock);
}

/* weft__semacquire - take a unit of *addr, parking the current G (reason)
 * until a release gives one or deadline passes. lifo queues it first
 * (a mutex waiter that already waited). Caller is a coroutine.
 * Returns 0 or WEFT_ETIMEDOUT (no unit taken). */
int weft__semacquire(_Atomic uint32_t *addr, int64_t deadline, int reason,
                     bool lifo)
{
    if (weft__cansemacquire(addr))
        return 0;
    struct g *gp = weft__getg();
    struct semaroot *r = semroot(addr);
    struct semawaiter w;
    startwait(&w, gp, addr, reason);
    for (;;) {
        if (deadline != WEFT_FOREVER && weft__nanotime() >= deadline)
            return WEFT_ETIMEDOUT;
        weft__lock(&r->lock);
        atomic_fetch_add(&r->nwait, 1);
        if (weft__cansemacquire(addr)) {
            atomic_fetch_sub(&r->nwait, 1);
            weft__unlock(&r->lock);
            return 0;
        }
        w.s.seq = weft__wait_prepare(gp);
        w.s.ticket = 0;
        if (unlikely(CONTENTION_HOOK() != NULL))
            w.t0 = weft__nanotime();
        enqueue(r, &w, lifo);
        if (weft__wait_park(reason, deadline, semunlock, addr) != 0) {
            timedout(r, &w);
            return WEFT_ETIMEDOUT;
        }
        if (w.s.ticket == 1 || weft__cansemacquire(addr))
            return 0;
        /* Woken without a unit: someone barged in. Queue again. */
    }
}

/* weft__semrelease - add n units to *addr and wake up to n waiters, FIFO.
 * flags: SEMA_HANDOFF gives each woken waiter its unit directly (nobody
 * can barge in); SEMA_YIELD then yields so the waiter runs at once on
 * this P (Go's starvation-mode hand-off). unlocker: the G releasing a
 * mutex (for the contention hook's mutex events), else NULL. Any thread.
 * The caller guarantees *addr + n does not overflow. */
void weft__semrelease(_Atomic uint32_t *addr, uint32_t n, int flags,
                      struct g *unlocker)
{
    atomic_fetch_add(addr, n);
    struct semaroot *r = semroot(addr);
    if (atomic_load(&r->nwait) == 0)
        return;
    struct g *list = NULL, **tail = &list;
    /* A mutex event (unlocker set, a hook on): reported after the lock
     * is dropped, as Go's semrelease1 does, since the hook unwinds. The
     * woken G stays parked (ours) until readylist. A mutex releases one
     * unit, so one event is all there is. */
    struct g *evg = NULL;
    int64_t evt0 = 0;
    int evreason = 0;
    weft__lock(&r->lock);
    while (n > 0 && atomic_load(&r->nwait) > 0) {
        struct semawaiter *w = popfirst(r, addr);
        if (w == NULL)
            break;
        bool took = (flags & SEMA_HANDOFF) && weft__cansemacquire(addr);
        w->s.ticket = took;
        struct g *gp = w->s.g;
        int64_t t0 = w->t0;
        int reason = w->reason;
        if (!weft__wait_claim(&w->s)) {
            if (took)
                atomic_fetch_add(addr, 1); /* invariant 3 */
            continue;
        }
        /* w is ours until gp is readied. */
        if (unlikely(unlocker != NULL) && t0 != 0 && evg == NULL) {
            evg = gp;
            evt0 = t0;
            evreason = reason;
            /* The next waiter's delay counts from now: each unlocker is
             * charged only for its own hold (Go resets acquiretime). */
            struct semawaiter *h = findhead(r, addr);
            if (h != NULL && ((struct semawaiter *)h->q.first)->t0 != 0)
                ((struct semawaiter *)h->q.first)->t0 = weft__nanotime();
        }
        gp->schedlink = NULL;
        *tail = gp;
        tail = &gp->schedlink;
        n--;
    }
    weft__unlock(&r->lock);
    if (list == NULL)
        return;
    weft__contention_fn hook = CONTENTION_HOOK();
    if (unlikely(evg != NULL) && hook != NULL)
        hook(evg, evreason, evt0, weft__nanotime(), addr, unlocker);
    readylist(list);
    if (flags & SEMA_YIELD) {
        struct g *me = weft__getg();
        if (me != NULL && !me->syscallp)
            weft_yield();
    }
}

/* weft__futexsleep - park the current G (reason) while *addr == val,
 * until weft__futexwakeup or deadline. Returns 0 (woken, or the word had
 * changed already; the caller looks again) or WEFT_ETIMEDOUT. */
int weft__futexsleep(_Atomic uint32_t *addr, uint32_t val, int64_t deadline,
                     int reason)
{
    struct g *gp = weft__getg();
    struct semaroot *r = semroot(addr);
    struct semawaiter w;
    startwait(&w, gp, addr, reason);
    if (deadline != WEFT_FOREVER && weft__nanotime() >= deadline)
        return atomic_load(addr) == val ? WEFT_ETIMEDOUT : 0;
    weft__lock(&r->lock);
    atomic_fetch_add(&r->nwait, 1);
    if (atomic_load(addr) != val) {
        atomic_fetch_sub(&r->nwait, 1);
        weft__unlock(&r->lock);
        return 0;
    }
    w.s.seq = weft__wait_prepare(gp);
    if (unlikely(CONTENTION_HOOK() != NULL))
        w.t0 = weft__nanotime();
    enqueue(r, &w, false);
    if (weft__wait_park(reason, deadline, semunlock, addr) != 0) {
        timedout(r, &w);
        return WEFT_ETIMEDOUT;
    }
    return 0;
}

/* weft__futexwakeup - wake up to n (UINT32_MAX: all) sleepers of addr,
 * oldest first. The caller changed *addr (seq-cst) before. unlocker: the
 * G releasing a lock the sleepers wanted (an rwmutex's writer waking its
 * readers), for a mutex event per sleeper, else NULL. Any thread. */
void weft__futexwakeup(_Atomic uint32_t *addr, uint32_t n,
                       struct g *unlocker)
{
    struct semaroot *r = semroot(addr);
    if (atomic_load(&r->nwait) == 0)
        return;
    struct g *list = NULL, **tail = &list;
    /* Claimed waiters to report, chained through their dequeued sudogs:
     * a waiter's record lives on its stack, valid until it is readied,
     * so the hook (which unwinds) runs after the lock, before readylist. */
    struct semawaiter *ev = NULL;
    weft__lock(&r->lock);
    while (n > 0) {
        struct semawaiter *w = popfirst(r, addr);
        if (w == NULL)
            break;
        struct g *gp = w->s.g;
        if (!weft__wait_claim(&w->s))
            continue;
        if (unlikely(unlocker != NULL) && w->t0 != 0) {
            w->s.next = ev != NULL ? &ev->s : NULL;
            ev = w;
        }
        gp->schedlink = NULL;
        *tail = gp;
        tail = &gp->schedlink;
        n--;
    }
    weft__unlock(&r->lock);
    weft__contention_fn hook = CONTENTION_HOOK();
    if (unlikely(ev != NULL) && hook != NULL) {
        int64_t now = weft__nanotime();
        for (struct semawaiter *e = ev; e != NULL;
             e = (struct semawaiter *)e->s.next)
            hook(e->s.g, e->reason, e->t0, now, addr, unlocker);
    }
    readylist(list);
}

/* weft__canspin - Go's sync_runtime_canSpin: spin only a few rounds, on a
 * multi-P runtime where another P is busy (the holder may be running)
 * and this P has nothing else to run. Caller is a coroutine. */
bool weft__canspin(int iter)
{
    if (iter >= 4 || weft__gomaxprocs <= 1 ||
        weft__gomaxprocs <= LOAD(&weft__sched.npidle) +
                                LOAD(&weft__sched.nmspinning) + 1)
        return false;
    struct m *mp = weft__getm();
    return mp->p != NULL && weft__runqempty(mp->p);
}

/* weft__dospin - one round of active spinning, Go's procyield(30) but
 * with 100 PAUSEs: on the AMD EPYC VM this was measured on a PAUSE takes
 * ~23 ns, and polling the mutex word every 30 PAUSEs pulls its cache line
 * away from the holder often enough to cost ~25% in the contended
 * benchmark (4 coroutines, 2 Ps: 16.1 -> 13.1 ns per lock/unlock at 100;
 * 200+ gains little more and spins longer before parking). */
void weft__dospin(void)
{
    for (int i = 0; i < 100; i++) {
#if defined(__x86_64__)
        __asm__ volatile("pause");
#elif defined(__aarch64__)
        __asm__ volatile("yield");
#endif
    }
}
