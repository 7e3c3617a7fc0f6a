/*
 * runq.c - run queues: each P's lock-free ring plus its runnext slot, and
 * the global queue. Go's runqput/runqget/runqgrab/runqsteal, in C11
 * atomics.
 *
 * The local ring (RUNQ_SIZE slots) is single-producer, multi-consumer:
 *  1. Only the owner P writes slots and advances runqtail (store-release
 *     after writing the slot, so a stealer that load-acquires the tail
 *     sees the slot).
 *  2. Anyone may take from the head, by CAS on runqhead. The owner's
 *     runqget and a stealer's runqgrab race only on that CAS.
 *  3. A stealer copies slots, then CASes the head past them; if the CAS
 *     fails the owner or another stealer took some, and the copy is
 *     discarded. Slots are atomics so the racing read is defined; a slot
 *     is never rewritten while h <= index < t, so a successful CAS means
 *     the copy was of the right Gs.
 *  4. runnext is one G that runs before the ring: the G just readied or
 *     spawned by this P, so a ping-pong pair shares the P's time slice
 *     and cache. The owner swaps it with a CAS, stealers take it with a
 *     CAS and only when the ring is empty, after a short pause while the
 *     owner is running (it is about to run that G itself).
 * A full ring spills half of itself plus the new G to the global queue in
 * one lock acquisition (runqputslow), so the lock is paid once per 128.
 *
 * The global queue is a list through g->schedlink under sched.lock, with
 * runqsize readable without it as a hint.
 */
#include <time.h>

#include "runtime.h"


/* weft__runqputslow - move half the ring and gp to the global queue;
 * false if a stealer made room meanwhile. Owner P only. */
bool weft__runqputslow(struct p *pp, struct g *gp, uint32_t h, uint32_t t)
{
    enum { N = RUNQ_SIZE / 2 };
    struct g *batch[N + 1];
    uint32_t n = (t - h) / 2;
    if (n != N)
        weft__throw("weft: runqputslow - queue is not full");
    for (uint32_t i = 0; i < n; i++)
        batch[i] = LOAD(&pp->runq[(h + i) % RUNQ_SIZE]);
    if (!atomic_compare_exchange_strong_explicit(
            &pp->runqhead, &h, h + n, memory_order_release,
            memory_order_relaxed))
        return false;
    batch[n] = gp;
    for (uint32_t i = 0; i < n; i++)
        batch[i]->schedlink = batch[i + 1];
    weft__lock(&weft__sched.lock);
    weft__globrunqputbatch(batch[0], batch[n], (int32_t)n + 1);
    weft__unlock(&weft__sched.lock);
    return true;
}

/* weft__runqempty - whether pp has nothing queued. Any thread. A G moved
 * from runnext to the ring between our reads must not make it look empty:
 * read tail, runnext, then check tail did not move (Go's runqempty). */
bool weft__runqempty(struct p *pp)
{
    for (;;) {
        uint32_t h = LOADACQ(&pp->runqhead);
        uint32_t t = LOADACQ(&pp->runqtail);
        struct g *next = LOADACQ(&pp->runnext);
        if (LOADACQ(&pp->runqtail) == t)
            return h == t && next == NULL;
    }
}

uint32_t weft__runqlen(struct p *pp)
{
    uint32_t h = LOADACQ(&pp->runqhead);
    uint32_t t = LOADACQ(&pp->runqtail);
    uint32_t n = t - h;
    if (n > RUNQ_SIZE) /* torn read */
        n = 0;
    return n + (LOAD(&pp->runnext) != NULL);
}

/* runqgrab - copy up to half of victim's queue into batch[bh...] (a ring
 * of RUNQ_SIZE). Returns how many. Any thread. */
static uint32_t runqgrab(struct p *victim, struct g *_Atomic *batch,
                         uint32_t bh, bool stealnext)
{
    for (;;) {
        uint32_t h = LOADACQ(&victim->runqhead);
        uint32_t t = LOADACQ(&victim->runqtail);
        uint32_t n = t - h;
        n = n - n / 2;
        if (n == 0) {
            if (!stealnext)
                return 0;
            struct g *next = LOAD(&victim->runnext);
            if (next == NULL)
                return 0;
            if (LOAD(&victim->status) == P_RUNNING) {
                /* The owner is probably about to run it itself (a
                 * ping-pong partner); stealing would bounce it between
                 * Ps. Give the owner a few microseconds. */
                struct timespec ts = {0, 3000};
                nanosleep(&ts, NULL);
            }
            if (!atomic_compare_exchange_strong_explicit(
                    &victim->runnext, &next, NULL, memory_order_acquire,
                    memory_order_relaxed))
                continue;
            STORE(&batch[bh % RUNQ_SIZE], next);
            return 1;
        }
        if (n > RUNQ_SIZE / 2) /* h and t read inconsistently */
            continue;
        for (uint32_t i = 0; i < n; i++)
            STORE(&batch[(bh + i) % RUNQ_SIZE],
                  LOAD(&victim->runq[(h + i) % RUNQ_SIZE]));
        if (atomic_compare_exchange_strong_explicit(
                &victim->runqhead, &h, h + n, memory_order_release,
                memory_order_relaxed))
            return n;
    }
}

/* weft__runqsteal - steal half of victim's Gs into pp's ring and return
 * one of them to run, or NULL. Caller owns pp, whose ring is empty. */
struct g *weft__runqsteal(struct p *pp, struct p *victim, bool stealnext)
{
    uint32_t t = LOAD(&pp->runqtail);
    uint32_t n = runqgrab(victim, pp->runq, t, stealnext);
    if (n == 0)
        return NULL;
    n--;
    struct g *gp = LOAD(&pp->runq[(t + n) % RUNQ_SIZE]);
    if (n == 0)
        return gp;
    uint32_t h = LOADACQ(&pp->runqhead);
    if (t - h + n >= RUNQ_SIZE)
        weft__throw("weft: runqsteal - runq overflow");
    STOREREL(&pp->runqtail, t + n);
    return gp;
}

/* ---------------------------------------------------------------- global */

void weft__globrunqput(struct g *gp)
{
    gp->schedlink = NULL;
    weft__globrunqputbatch(gp, gp, 1);
}

/* Caller holds sched.lock; head..tail linked through schedlink. */
void weft__globrunqputbatch(struct g *head, struct g *tail, int32_t n)
{
    tail->schedlink = NULL;
    if (weft__sched.runqtail != NULL)
        weft__sched.runqtail->schedlink = head;
    else
        weft__sched.runqhead = head;
    weft__sched.runqtail = tail;
    atomic_fetch_add_explicit(&weft__sched.runqsize, n, memory_order_relaxed);
}

/* weft__globrunqget - take a fair share of the global queue: return one
 * G and move up to max-1 more (max 0: no limit but half a ring) into
 * pp's ring. Caller holds sched.lock and owns pp. */
struct g *weft__globrunqget(struct p *pp, int32_t max)
{
    int32_t size = LOAD(&weft__sched.runqsize);
    if (size == 0)
        return NULL;
    int32_t n = size / weft__gomaxprocs + 1;
    if (n > size)
        n = size;
    if (max > 0 && n > max)
        n = max;
    if (n > RUNQ_SIZE / 2)
        n = RUNQ_SIZE / 2;
    atomic_fetch_sub_explicit(&weft__sched.runqsize, n, memory_order_relaxed);
    struct g *gp = weft__sched.runqhead;
    weft__sched.runqhead = gp->schedlink;
    for (int32_t i = 1; i < n; i++) {
        struct g *g2 = weft__sched.runqhead;
        weft__sched.runqhead = g2->schedlink;
        weft__runqput(pp, g2, false);
    }
    if (weft__sched.runqhead == NULL)
        weft__sched.runqtail = NULL;
    return gp;
}
