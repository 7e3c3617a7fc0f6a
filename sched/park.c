/*
 * park.c - waiting with a deadline: the one protocol every blocking
 * primitive (sema, channels, select, fds) uses on top of
 * weft__park/weft__ready. See struct sudog in runtime.h.
 *
 * Each G has a wait-state word: seq << 2 | WS_*. weft__wait_prepare starts
 * a new wait (seq + 1, WS_WAITING). Two parties may end it: a waker that
 * found one of the G's sudogs on a queue, and the deadline timer. Both
 * CAS (seq, WS_WAITING) to their state; exactly one wins and readies the
 * G. The timer carries the seq it was armed with (timer.c copies it as it
 * fires), so a firing left over from an earlier wait can never claim a
 * later one.
 *
 * Invariants:
 *  1. The G is readied only by the winner of the CAS, and only once it
 *     has parked: the timer is armed, and the object lock released (so
 *     wakers can find the sudog), by the park's unlock function, which
 *     runs after the switch.
 *  2. The winner fills in the sudog's results (success, elem) after its
 *     claim and before weft__ready, which publishes them to the woken G
 *     (a loser must not touch them: a timed-out receiver's buffer stays
 *     as it was).
 *  3. A G that timed out may still be on queues: it retakes the objects'
 *     locks and removes its sudogs (s->queued says whether). A waker that
 *     pops a sudog whose claim fails just drops it.
 *  4. commit() copies its own arguments off the parked G's stack before
 *     arming the timer. The unlock function it then calls may still read
 *     the G's stack (select's lock list) because the G, once woken, must
 *     retake those same locks before its frame changes.
 *
 * A wait without a sudog (netpoll's fd waits, netpoll/fd.c) names its G
 * by a token of the G's registry index and the low 32 bits of seq, and is
 * claimed with weft__wait_claim_g; its deadline is armed by
 * weft__wait_arm from its own park commit.
 *
 * Rejected: removing the sudog from inside the timer callback. It would
 * need every lock of the wait (all channels of a select), in order, on
 * whatever M runs the timer; the woken G does it instead, as Go's select
 * dequeues itself after wake-up.
 */
#include "runtime.h"

_Atomic(weft__contention_fn) weft__contention_hook;

struct parkarg {
    int64_t deadline;
    void (*unlock)(void *);
    void *arg;
};

static void timeout(void *arg, uint64_t seq, int64_t now)
{
    (void)now;
    struct g *gp = arg;
    uint64_t want = seq << 2 | WS_WAITING;
    if (atomic_compare_exchange_strong(&gp->waitstate, &want,
                                       seq << 2 | WS_TIMEDOUT))
        weft__ready(gp);
}

/* Runs after the switch away from gp (weft__park's unlock function). */
static bool commit(struct g *gp, void *argp)
{
    struct parkarg *pa = argp;
    /* pa is on gp's stack: once the timer is armed it may fire on another
     * P and gp may run and reuse that frame. Copy out first. */
    void (*unlock)(void *) = pa->unlock;
    void *arg = pa->arg;
    weft__wait_arm(gp, pa->deadline);
    if (unlock != NULL)
        unlock(arg);
    return true;
}

/* weft__wait_prepare - begin a new wait of gp (the current G): returns its
 * seq, to store in every sudog queued for this wait. */
uint64_t weft__wait_prepare(struct g *gp)
{
    uint64_t seq = (LOAD(&gp->waitstate) >> 2) + 1;
    atomic_store(&gp->waitstate, seq << 2 | WS_WAITING);
    return seq;
}

/* weft__wait_park - park the current G, whose sudogs are queued under a
 * lock that unlock(arg) releases, until a waker claims it or deadline
 * (WEFT_FOREVER: none) passes. Returns 0 (woken) or WEFT_ETIMEDOUT; on
 * timeout the caller removes its sudogs (invariant 3). */
int weft__wait_park(int reason, int64_t deadline, void (*unlock)(void *),
                    void *arg)
{
    struct g *gp = weft__getg();
    struct parkarg pa = {deadline, unlock, arg};
    int64_t t0 = 0;
    if (unlikely(CONTENTION_HOOK() != NULL))
        t0 = weft__nanotime();
    weft__park(commit, &pa, reason);
    uint64_t st = atomic_load(&gp->waitstate);
    if ((st & 3) == WS_TIMEDOUT)
        return WEFT_ETIMEDOUT;
    if (deadline != WEFT_FOREVER)
        weft__timer_del(&gp->timer); /* a late firing fails its CAS */
    /* t0 says whether a hook was on at the start: no second load of the
     * global on the common path. Then one load: the profile may have
     * been switched off meanwhile. */
    if (unlikely(t0 != 0)) {
        weft__contention_fn hook = CONTENTION_HOOK();
        if (hook != NULL)
            hook(gp, reason, t0, weft__nanotime(), arg, NULL);
    }
    return 0;
}

/* weft__wait_claim - a waker holding the queue's lock, with s already
 * dequeued and its results filled in: true if it now owns the wake-up
 * (then weft__ready(s->g)), false if s's G is woken or timing out. */
bool weft__wait_claim(struct sudog *s)
{
    uint64_t want = s->seq << 2 | WS_WAITING;
    return atomic_compare_exchange_strong(&s->g->waitstate, &want,
                                          s->seq << 2 | WS_WOKEN);
}

/* weft__wait_arm - arm gp's deadline timer for its current wait on this
 * M's P. For waits that park with their own commit function (fd.c): call
 * it there, before the G is published to its wakers. */
void weft__wait_arm(struct g *gp, int64_t deadline)
{
    if (deadline != WEFT_FOREVER)
        weft__timer_add(weft__getm()->p, &gp->timer, deadline, timeout, gp,
                        LOAD(&gp->waitstate) >> 2);
}

/* weft__wait_claim_g - weft__wait_claim for a waker that knows the G and
 * the low 32 bits of its wait's seq: a wait 2^32 waits older cannot be
 * told apart, which needs a waker stalled for minutes between reading
 * the token and this CAS. */
bool weft__wait_claim_g(struct g *gp, uint32_t seq32)
{
    uint64_t st = atomic_load(&gp->waitstate);
    if ((st & 3) != WS_WAITING || (uint32_t)(st >> 2) != seq32)
        return false;
    return atomic_compare_exchange_strong(&gp->waitstate, &st,
                                          (st & ~(uint64_t)3) | WS_WOKEN);
}
