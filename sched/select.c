/*
 * select.c - Go's select (runtime/select.go) over weft channels: wait
 * until one of n send/receive cases can proceed, do it, return its index.
 *
 * selectgo, as in Go:
 *  1. Poll order: a random permutation of the cases with a channel (a
 *     NULL channel is never ready, as a nil channel in Go). Lock order:
 *     the same cases sorted by channel address.
 *  2. Lock every distinct channel in lock order (sellock).
 *  3. Pass 1: in poll order, the first case that needs no waiting is
 *     done with chan.c's *_locked helpers; unlock and return it. Hence a
 *     uniformly random choice among ready cases. Unlike Go, this pass
 *     first runs on each channel alone (3a, before step 2) as a try
 *     operation (weft__chan_tryop: a buffered channel's lock-free ring,
 *     an unbuffered one's lock): a ready case costs no sort and at most
 *     one lock. Each case's check is atomic on its own channel; the cases
 *     are not polled at one single instant,
 *     which no caller can tell from a select that happened a little
 *     earlier or later. Only when nothing was ready does step 2 lock all
 *     and poll again, since the queues must be checked and joined under
 *     all locks at once. Before that last poll every case raises its
 *     channel's waiting flag (weft__chan_prewait_locked; chan.c invariant
 *     2), so a lock-free op that publishes after the poll looked is sure
 *     to come for our sudog; a case that fires, or a deadline that
 *     passed, lowers them again (selunwait).
 *  4. Nothing ready: tryselect returns WEFT_EAGAIN, a passed deadline
 *     WEFT_ETIMEDOUT. Otherwise pass 2 queues one sudog per case (all with
 *     the same wait seq, s->idx = case index) and takes a reference on
 *     each distinct channel; park once (WR_SELECT) with an unlock function
 *     that releases every lock (selunlock) after the switch.
 *  5. The first waker to win weft__wait_claim on any of the sudogs (or the
 *     deadline timer) owns the wake-up: it marks its sudog (ticket = 1)
 *     and does the copy (chan.c invariant 3). Wakers that pop another of
 *     our sudogs lose the claim and drop it.
 *  6. After the park: relock all, take the remaining sudogs off their
 *     queues (s->queued), find the marked one, unlock, drop references.
 *     A mark that says "retry" (chan.c invariant 3: a lock-free op took
 *     the item the hand-off was for) means nothing happened: start over
 *     at step 1, on whatever M now runs us.
 *
 * Invariants:
 *  1. Channel locks are taken in increasing address order, each once;
 *     a thread holds several only here, so no two selects (nor a select
 *     and a channel op, which holds one) can deadlock.
 *  2. selunlock unlocks from the highest lock order position down and
 *     reads nothing after the last unlock: from that moment the woken G
 *     may already run on another M, relock, return and reuse the stack
 *     holding the case arrays (Go's selunlock has the same rule).
 *  3. At most one sudog of a select is marked, and only if the wait was
 *     not ended by its deadline.
 *
 * Rejected: sorting with qsort (needs a global or qsort_r for the cases
 * array; a heapsort, as Go's, is short and allocation-free); allocating
 * sudogs from a pool (they live in the caller's frame for small n, in one
 * malloc'd block with the order arrays above SELECT_SMALL cases).
 */
#include <stdlib.h>

#include "runtime.h"


#define SELECT_MAX 65536u
#define SELECT_SMALL 8u

struct selstate {
    weft_select_case_t *cases;
    uint32_t *lockorder;
    uint32_t nlock;
};

/* Randomness for threads that are not Ms (tryselect from anywhere). */
static __thread uint64_t tls_rand;

static uint32_t selrand(struct m *mp)
{
    if (mp != NULL)
        return weft__fastrand(mp);
    if (tls_rand == 0)
        tls_rand = (uint64_t)(uintptr_t)&tls_rand ^
                   (uint64_t)weft__nanotime() ^ 1;
    tls_rand += 0xa0761d6478bd642full;
    __uint128_t r = (__uint128_t)tls_rand * (tls_rand ^ 0xe7037ed1a0b428dbull);
    return (uint32_t)((uint64_t)(r >> 64) ^ (uint64_t)r);
}

static inline uintptr_t chanat(const weft_select_case_t *cases, uint32_t i)
{
    return (uintptr_t)cases[i].chan;
}

/* sortlock - sort order[0..n) by channel address: insertion sort for a
 * few cases, heapsort (Go's) beyond. */
static void sortlock(const weft_select_case_t *cases, uint32_t *order,
                     uint32_t n)
{
    if (n <= SELECT_SMALL) {
        for (uint32_t i = 1; i < n; i++) {
            uint32_t v = order[i];
            uint32_t j = i;
            for (; j > 0 && chanat(cases, order[j - 1]) > chanat(cases, v);
                 j--)
                order[j] = order[j - 1];
            order[j] = v;
        }
        return;
    }
    /* Build a max-heap, then pop it into place. */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = i, v = order[i];
        while (j > 0) {
            uint32_t k = (j - 1) / 2;
            if (chanat(cases, order[k]) >= chanat(cases, v))
                break;
            order[j] = order[k];
            j = k;
        }
        order[j] = v;
    }
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t v = order[i];
        order[i] = order[0];
        uint32_t j = 0;
        for (;;) {
            uint32_t k = 2 * j + 1;
            if (k >= i)
                break;
            if (k + 1 < i &&
                chanat(cases, order[k]) < chanat(cases, order[k + 1]))
                k++;
            if (chanat(cases, v) >= chanat(cases, order[k]))
                break;
            order[j] = order[k];
            j = k;
        }
        order[j] = v;
    }
}

/* sellock - lock every distinct channel in lock order (invariant 1). */
static void sellock(const weft_select_case_t *cases, const uint32_t *order,
                    uint32_t n)
{
    weft_chan_t *last = NULL;
    for (uint32_t i = 0; i < n; i++) {
        weft_chan_t *c = cases[order[i]].chan;
        if (c != last)
            weft__chan_lock(c);
        last = c;
    }
}

/* selunlock - unlock them all, touching nothing afterwards (inv. 2). */
static void selunlock(const weft_select_case_t *cases, const uint32_t *order,
                      uint32_t n)
{
    for (uint32_t i = n; i-- > 0;) {
        weft_chan_t *c = cases[order[i]].chan;
        if (i > 0 && c == cases[order[i - 1]].chan)
            continue; /* unlocked with its first occurrence */
        weft__chan_unlock(c);
    }
}

/* selunlock_arg - selunlock as the park's unlock function. */
static void selunlock_arg(void *arg)
{
    struct selstate *st = arg;
    selunlock(st->cases, st->lockorder, st->nlock);
}

/* selunwait - undo the waiting flags of cases that were not queued. */
static void selunwait(const weft_select_case_t *cases, const uint32_t *order,
                      uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        weft__chan_unwait_locked(cases[order[i]].chan, cases[order[i]].op);
}

/* selref / selunref - a reference on each distinct channel. */
static void selref(const weft_select_case_t *cases, const uint32_t *order,
                   uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (i == 0 || cases[order[i]].chan != cases[order[i - 1]].chan)
            weft__chan_ref_locked(cases[order[i]].chan);
}

static void selunref(const weft_select_case_t *cases, const uint32_t *order,
                     uint32_t n)
{
    /* The duplicate test compares pointers held in cases[], never
     * channel memory, so an unref that frees a channel is safe here. */
    for (uint32_t i = 0; i < n; i++)
        if (i == 0 || cases[order[i]].chan != cases[order[i - 1]].chan)
            weft__chan_unref(cases[order[i]].chan);
}

/* blockforever - a select with no channel: park until deadline (or for
 * good, until shutdown abandons the G). */
static int blockforever(size_t n, int64_t deadline)
{
    struct g *gp = weft__getg();
    weft__wait_prepare(gp);
    weft__wait_park(n == 0 ? WR_SELECT_NO_CASES : WR_SELECT, deadline, NULL,
                    NULL);
    return WEFT_ETIMEDOUT; /* nothing else can claim this wait */
}

/*
 * selectgo - the select of weft.h. block: false for tryselect. Returns the
 * chosen case index (its result set), WEFT_EAGAIN, WEFT_ETIMEDOUT,
 * WEFT_EINVAL, WEFT_ENOTCORO, WEFT_ENOMEM (more than SELECT_SMALL cases
 * and no memory for the order arrays).
 */
static int selectgo(weft_select_case_t *cases, size_t n, int64_t deadline,
                    bool block)
{
    if (n > SELECT_MAX || (cases == NULL && n > 0))
        return WEFT_EINVAL;
    struct m *mp = weft__getm();
    struct g *gp = mp != NULL ? mp->curg : NULL;
    if (gp != NULL && gp->syscallp) {
        gp = NULL;
        mp = NULL; /* its P may be gone: do not use its fastrand */
    } else if (gp == NULL) {
        mp = NULL; /* g0 of an M is no caller of ours either */
    }
    if (block && gp == NULL)
        return WEFT_ENOTCORO;
    /* Yield (if asked to) before validating: a channel checked and then
     * freed while we yield would be used after free. A yield may resume
     * us on another M: mp is read again (its fastrand is per thread;
     * TSan saw two Ms' coroutines share one after a preemption here). */
    if (block) {
        weft_checkpoint();
        mp = weft__getm();
    }
    for (size_t i = 0; i < n; i++) {
        weft_select_case_t *cas = &cases[i];
        if (cas->op != WEFT_SEND && cas->op != WEFT_RECV)
            return WEFT_EINVAL;
        if (cas->chan == NULL)
            continue;
        if (!weft__chan_ok(cas->chan) ||
            (cas->op == WEFT_SEND && cas->elem == NULL))
            return WEFT_EINVAL;
    }

    uint32_t small[2 * SELECT_SMALL];
    struct sudog smallsg[SELECT_SMALL];
    uint32_t *pollorder = small, *lockorder = small + SELECT_SMALL;
    struct sudog *sg = smallsg;
    void *mem = NULL;
    if (n > SELECT_SMALL) {
        mem = malloc(n * (2 * sizeof(uint32_t) + sizeof(struct sudog)));
        if (mem == NULL)
            return WEFT_ENOMEM;
        sg = mem;
        pollorder = (uint32_t *)(sg + n);
        lockorder = pollorder + n;
    }

    bool held = false; /* a reference on each channel, from the first park */
    int ret;
again:;
    /* 1. Poll order: Go's inside-out shuffle over the non-NULL cases. */
    uint32_t norder = 0;
    for (uint32_t i = 0; i < (uint32_t)n; i++) {
        if (cases[i].chan == NULL)
            continue;
        uint32_t j = (uint32_t)(((uint64_t)selrand(mp) * (norder + 1)) >> 32);
        pollorder[norder] = pollorder[j];
        pollorder[j] = i;
        norder++;
    }
    int r;
    if (norder == 0) { /* no channel: nothing was referenced */
        free(mem);
        if (!block)
            return WEFT_EAGAIN;
        if (deadline != WEFT_FOREVER && deadline <= weft__nanotime())
            return WEFT_ETIMEDOUT;
        return blockforever(n, deadline);
    }
    /* 3a. The quick pass: each channel alone, as a try operation (no
     * lock at all for a buffered channel nobody waits on). A ready case
     * needs one channel, not all of them (most selects end here). */
    for (uint32_t k = 0; k < norder; k++) {
        uint32_t i = pollorder[k];
        weft_select_case_t *cas = &cases[i];
        r = weft__chan_tryop(cas->chan, cas->op, cas->elem);
        if (r == WEFT_EAGAIN)
            continue;
        cas->result = r;
        ret = (int)i;
        goto out;
    }
    if (!block) {
        ret = WEFT_EAGAIN;
        goto out;
    }
    for (uint32_t i = 0; i < norder; i++)
        lockorder[i] = pollorder[i];
    sortlock(cases, lockorder, norder);

    /* 2, 3. Lock all, raise every case's waiting flag (chan.c invariant
     * 2: before the last look), take the first ready case in poll order:
     * something may have become ready since the quick pass. */
    sellock(cases, lockorder, norder);
    for (uint32_t k = 0; k < norder; k++)
        weft__chan_prewait_locked(cases[pollorder[k]].chan,
                                  cases[pollorder[k]].op);
    for (uint32_t k = 0; k < norder; k++) {
        uint32_t i = pollorder[k];
        weft_select_case_t *cas = &cases[i];
        struct g *wake = NULL;
        r = cas->op == WEFT_SEND
                ? weft__chan_send_locked(cas->chan, cas->elem, &wake)
                : weft__chan_recv_locked(cas->chan, cas->elem, &wake);
        if (r == WEFT_EAGAIN)
            continue;
        selunwait(cases, pollorder, norder);
        selunlock(cases, lockorder, norder);
        if (wake != NULL)
            weft__ready_any(wake);
        cas->result = r;
        ret = (int)i;
        goto out;
    }

    /* 4. Nothing ready. */
    if (deadline != WEFT_FOREVER && deadline <= weft__nanotime()) {
        selunwait(cases, pollorder, norder);
        selunlock(cases, lockorder, norder);
        ret = WEFT_ETIMEDOUT;
        goto out;
    }
    uint64_t seq = weft__wait_prepare(gp);
    for (uint32_t k = 0; k < norder; k++) {
        uint32_t i = lockorder[k];
        struct sudog *s = &sg[k];
        s->g = gp;
        s->seq = seq;
        s->elem = cases[i].elem;
        s->obj = cases[i].chan;
        s->idx = (int32_t)i;
        s->success = false;
        s->ticket = 0;
        weft__chan_enqueue_locked(cases[i].chan, cases[i].op, s);
    }
    if (!held)
        selref(cases, lockorder, norder);
    held = true;
    struct selstate st = {cases, lockorder, norder};
    gp = NULL; /* not to be used across the park */
    r = weft__wait_park(WR_SELECT, deadline, selunlock_arg, &st);

    /* 6. Dequeue the rest, find the winner. */
    int32_t fired = -1;
    bool success = false, retry = false;
    sellock(cases, lockorder, norder);
    for (uint32_t k = 0; k < norder; k++) {
        struct sudog *s = &sg[k];
        if (s->ticket != 0) {
            fired = s->idx;
            success = s->success;
            retry = weft__chan_retry(s);
        } else {
            weft__chan_dequeue_locked(s->obj, cases[s->idx].op, s);
        }
    }
    selunlock(cases, lockorder, norder);
    if (retry) {
        /* Woken for an item a lock-free op took first (chan.c
         * invariant 3): nothing happened, select again, on whatever M
         * runs us now, keeping the references (we still count as
         * blocked on these channels, which may be freed meanwhile). */
        mp = weft__getm();
        gp = mp->curg;
        goto again;
    }
    if (r == WEFT_ETIMEDOUT) {
        if (fired >= 0)
            weft__throw("weft: select timed out with a case claimed");
        ret = WEFT_ETIMEDOUT;
        goto out;
    }
    if (fired < 0)
        weft__throw("weft: select woken with no case claimed");
    cases[fired].result = success ? 0 : WEFT_ECLOSED;
    ret = fired;
out:
    /* The references of the first park; lockorder still holds the same
     * channels (re-sorted each round from the same cases). */
    if (held)
        selunref(cases, lockorder, norder);
    free(mem);
    return ret;
}

WEFT_EXTERN int weft_select(weft_select_case_t *cases, size_t n)
{
    return selectgo(cases, n, WEFT_FOREVER, true);
}

WEFT_EXTERN int weft_select_dl(weft_select_case_t *cases, size_t n,
                               int64_t deadline)
{
    return selectgo(cases, n, deadline, true);
}

WEFT_EXTERN int weft_tryselect(weft_select_case_t *cases, size_t n)
{
    return selectgo(cases, n, WEFT_FOREVER, false);
}
