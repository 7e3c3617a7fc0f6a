/*
 * chan.c - Go's channels (runtime/chan.go): a FIFO of fixed-size
 * elements, unbuffered or buffered, with blocked senders and receivers
 * parked on per-channel wait queues through park.c's wait protocol.
 * select.c builds weft_select on the helpers below.
 *
 * A channel is one allocation: the header, then the buffer. c->lock
 * guards the two wait queues of sudogs (each on its waiter's stack) and
 * `closed`. A blocked sender's sudog points at its value (s->elem), a
 * blocked receiver's at its destination (NULL: discard), so a partner
 * copies straight to or from the waiter's memory.
 *
 * Unbuffered channels (cap 0) work as Go's: everything under c->lock, a
 * send hands its value straight to a blocked receiver or waits for one.
 *
 * Buffered channels keep their buffer in a bounded lock-free ring
 * (Vyukov's MPMC queue, in the form of crossbeam-channel's array flavour):
 * every slot has a stamp, `tail` and `head` are lap << bits | index, and
 * a sender claims the slot at tail by CAS when its stamp says "free in
 * this lap", writes the value, then publishes it with stamp = tail + 1; a
 * receiver claims the slot at head when its stamp says "full in this lap"
 * (head + 1), reads, and frees it for the next lap (head + onelap). Who
 * claims a position owns its slot until the stamp store, so FIFO is the
 * order of the CASes. The ring is used by everyone, lock or not; the lock
 * is only needed to park or to wake a parked partner. Close is the mark
 * bit in tail (set under c->lock, with `closed`). A send or receive that
 * finds room or an item and no waiter flagged is: the entry checks, one
 * CAS, the copy, the stamp store, one load of the flag (sendfast /
 * recvfast inline for 4, 8 and 16-byte elements; ring_send / ring_recv,
 * which also wait out lost races and claimed-but-unstamped slots, for the
 * rest).
 *
 * Invariants (buffered):
 *  1. recvwaiting is 1 whenever recvq holds a parked receiver, and
 *     sendwaiting whenever sendq holds a parked sender (set under the
 *     lock before the waiter's last look at the ring; cleared under the
 *     lock once the queue is empty). A spurious 1 costs a lock, no more.
 *  2. No lost wakeup (Dekker, all seq-cst):
 *       sender S (lock-free)            receiver R (under c->lock)
 *       a1. CAS tail: claim a slot      b1. recvwaiting = 1
 *       a2. load recvwaiting            b2. fence; look at the ring: the
 *       a3. write value, stamp              slot stamp, then tail
 *       a4. if 1: lock, wake one R      b3. empty: queue, park; the park
 *                                           unlocks after the switch
 *     Either a2 sees b1 (S then takes the lock, which R holds until it
 *     is parked, and finds it queued), or b2 sees a1's tail. A tail that
 *     moved while the stamp is still old is a slot being written: R waits
 *     for the stamp (a2-a3 are a few instructions, with no switch in
 *     them), it does not park on it. The same with head, sendwaiting and a
 *     parked sender on a full ring.
 *  3. Waking is a hand-off: the waker pops a waiter, wins its claim
 *     (weft__wait_claim), and only then does the ring operation on the
 *     waiter's behalf, under c->lock, into or out of s->elem (claim
 *     first, copy after: a timing-out receiver must find its *elem
 *     untouched). A lock-free op may have taken the item (or the free
 *     slot) meanwhile; then the waiter is woken with s->ticket =
 *     TICKET_RETRY and tries again, which keeps the invariant that a
 *     parked waiter always has a wake coming for every item published
 *     after it looked (the item the wake was for is gone, it went to the
 *     lock-free op). One item published, at most one waiter woken.
 *  4. Closed: once the mark is in tail no CAS on tail can succeed, so
 *     every item is in a slot claimed before close. A receiver reports
 *     closed only when head == tail with the mark (it waits for a
 *     claimed slot to be written), so nothing appears after a receiver
 *     saw "closed", and a drained buffer is reported closed forever.
 *     Close hands the remaining items to parked receivers (3) and
 *     "closed" only once the ring is empty.
 *
 * Invariants (both kinds):
 *  5. s->success: true if the operation happened, false if close woke
 *     the waiter. s->ticket = TICKET_FIRED marks the sudog whose claim
 *     woke the G (select uses it to learn which case fired),
 *     TICKET_RETRY a wake whose item a lock-free op took (3).
 *  6. A waiter woken by its deadline (WEFT_ETIMEDOUT) may still be
 *     queued: it retakes c->lock and removes its sudog if s->queued. A
 *     waker that popped it already cleared s->queued under the same lock
 *     and, having lost the claim, dropped it.
 *  7. Readying happens after c->lock is released (s->g is read before:
 *     after the claim the waiter's stack is not ours once it may run).
 *     weft__ready_any is used when the caller may be a thread with no P.
 *  8. A lock-free op touches c only before its stamp store: from that
 *     store on, its partner may take the item (or the slot), return, and
 *     free the channel, as it could after the old locked op's unlock.
 *     So a2 is read before a3, and an op that must go on to a4 takes a
 *     reference first (dropped by wakepeer).
 *
 * Lifetime (weft.h): c->refs counts the creator (until weft_chan_free)
 * plus one per parked operation (taken under c->lock before parking,
 * dropped after the op last touched c). The last drop clears c->magic and
 * frees. weft_chan_free closes the channel (waking every waiter, which
 * still hold their references), sets magic to CHAN_FREED so later calls
 * on the same pointer get WEFT_EINVAL while the memory lives, and drops
 * the creator's reference. A lock-free op holds no reference: like a
 * locked op it runs inside the caller's call, during which the caller's
 * contract (weft.h) keeps the channel alive. Once the memory is gone, the
 * magic check is a best effort (it reads freed memory).
 *
 * Layout: the fields every op reads (magic, geometry, the waiting flags,
 * written only when waiters come and go) share one line; the lock and
 * queues, head (the receivers'), and tail (the senders') have a line
 * each, so a producer and a consumer on two CPUs share only the slot
 * lines, not a lock word per item.
 *
 * Locking: c->lock is a wlock (short sections, never across a switch; the
 * park's unlock function releases it after the switch). Several channel
 * locks are taken only by select, in address order (select.c). Order:
 * channel locks > pp->timerlock (park.c's commit arms the deadline timer
 * before its unlock function releases the channel locks). sched.lock is
 * never taken under a channel lock: Gs are readied after unlocking.
 *
 * Rejected: the whole buffered channel under c->lock (as Go, and as
 * weft did): ~310 instructions and ~93 cycles per item sent and received
 * on one P (callgrind, perf stat), the lock word and header bouncing
 * between the producer's and the consumer's CPU at 2 Ps; the ring is
 * ~170 instructions and ~45 cycles, one CAS per op on a line only its
 * own side writes. Waking by notification alone (the woken waiter
 * retries, as crossbeam): a woken select would re-poll and might take
 * another case, leaving the item it was woken for with nobody coming;
 * the hand-off of 3 completes the waiter's op, and a retry happens only
 * when the item is already gone. Copying the value into a waiter before
 * its claim (3). Spinning (weft__canspin) before parking on a full or
 * empty ring: it keeps producer and consumer running on two CPUs at
 * once, and the slot lines they share then cost more than the park and
 * hand-off that put both on one P (chanbuf at 2 Ps: 42-46M items/s with
 * it, 51M without). Waiting in the ring with the lock held is bounded:
 * a claimed slot's writer never takes the lock before its stamp store.
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

#define CHAN_MAGIC 0x6368616eu /* "chan" */
#define CHAN_FREED 0x66726565u /* "free": weft_chan_free was called */
#define CHAN_ELEM_MAX 65536u
#define CHAN_CAP_MAX ((size_t)1 << 31)
#define STAMP_SIZE sizeof(uint64_t)

#define LOADSC(p) atomic_load_explicit((p), memory_order_seq_cst)

struct weft_chan {
    /* Read by every operation. */
    _Atomic uint32_t magic;  /* CHAN_MAGIC until free, then CHAN_FREED */
    uint32_t elemsize;       /* immutable */
    uint32_t stride;         /* immutable: bytes per ring slot */
    uint32_t fastsize;       /* immutable: elemsize if buffered and 4, 8
                              * or 16 (the inline path), else 0 */
    _Atomic uint32_t recvwaiting; /* lock writes, anyone reads: inv. 1 */
    _Atomic uint32_t sendwaiting; /* lock writes, anyone reads: inv. 1 */
    size_t cap;              /* immutable */
    uint64_t markbit;        /* immutable: tail's closed bit; above index */
    uint64_t onelap;         /* immutable: one lap of a position */
    uint64_t idxmask;        /* immutable: markbit - 1, a position's index */

    _Alignas(CACHELINE) wlock lock;
    _Atomic uint32_t refs;   /* atomic: creator + parked operations */
    bool closed;             /* lock */
    struct waitq sendq;      /* lock: blocked senders */
    struct waitq recvq;      /* lock: blocked receivers */

    _Alignas(CACHELINE) _Atomic uint64_t head; /* receivers' CAS */
    _Alignas(CACHELINE) _Atomic uint64_t tail; /* senders' CAS; mark */
    /* cap slots of stride bytes: a stamp, then the element */
    _Alignas(CACHELINE) unsigned char buf[];
};

enum { TICKET_FIRED = 1, TICKET_RETRY = 2 };

/* copyelem - n bytes from src to dst; the common sizes inline. */
static inline void copyelem(void *dst, const void *src, uint32_t n)
{
    switch (n) {
    case 4:
        memcpy(dst, src, 4);
        break;
    case 8:
        memcpy(dst, src, 8);
        break;
    case 16:
        memcpy(dst, src, 16);
        break;
    default:
        memcpy(dst, src, n);
    }
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__)
    __asm__ volatile("pause");
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* backoff - wait a little for another thread's few instructions (a CAS
 * lost, a claimed slot not yet stamped); the thread, not the G, waits:
 * there is no switch inside those windows. */
static void backoff(unsigned *n)
{
    if (++*n < 64)
        cpu_relax();
    else
        sched_yield(); /* its writer's thread was descheduled */
}

/* fastcopy - copy n = c->fastsize bytes (4, 8 or 16) with no call. */
static inline void fastcopy(void *dst, const void *src, uint32_t n)
{
    if (likely(n == 8))
        memcpy(dst, src, 8);
    else if (n == 16)
        memcpy(dst, src, 16);
    else
        memcpy(dst, src, 4);
}

static inline _Atomic uint64_t *stampat(weft_chan_t *c, uint64_t idx)
{
    return (_Atomic uint64_t *)(void *)(c->buf + idx * c->stride);
}

static inline unsigned char *elemat(weft_chan_t *c, uint64_t idx)
{
    return c->buf + idx * c->stride + STAMP_SIZE;
}

/* peerwaiting - invariant 2's a3, between the claim and the stamp store
 * (invariant 8): 2 with a reference taken if flag is up, else 0. */
static inline int peerwaiting(weft_chan_t *c, _Atomic uint32_t *flag)
{
    if (likely(!LOADSC(flag)))
        return 0;
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return 2;
}

/*
 * sendfast / recvfast - ring_send / ring_recv's common case, straight
 * line: one try, n = c->fastsize != 0. A closed ring fails the stamp
 * check (the mark is in tail, never in a stamp). Returns 0 (done), 1
 * (use the full ring operation, which knows closed, full, empty and lost
 * races), or 2 (done, and the other side is flagged as waiting: the
 * caller holds a reference and owes wakepeer, invariant 8).
 */
static inline int sendfast(weft_chan_t *c, const void *elem, uint32_t n)
{
    uint64_t tail = LOAD(&c->tail);
    uint64_t idx = tail & c->idxmask;
    _Atomic uint64_t *stamp = stampat(c, idx);
    if (unlikely(LOADACQ(stamp) != tail))
        return 1;
    uint64_t next =
        likely(idx + 1 < c->cap) ? tail + 1 : tail - idx + c->onelap;
    if (unlikely(!atomic_compare_exchange_strong_explicit(
            &c->tail, &tail, next, memory_order_seq_cst,
            memory_order_relaxed)))
        return 1;
    int r = peerwaiting(c, &c->recvwaiting);
    fastcopy(elemat(c, idx), elem, n);
    STOREREL(stamp, tail + 1);
    return r;
}

static inline int recvfast(weft_chan_t *c, void *elem, uint32_t n)
{
    if (unlikely(elem == NULL))
        return 1;
    uint64_t head = LOAD(&c->head);
    uint64_t idx = head & c->idxmask;
    _Atomic uint64_t *stamp = stampat(c, idx);
    if (unlikely(LOADACQ(stamp) != head + 1))
        return 1;
    uint64_t next =
        likely(idx + 1 < c->cap) ? head + 1 : head - idx + c->onelap;
    if (unlikely(!atomic_compare_exchange_strong_explicit(
            &c->head, &head, next, memory_order_seq_cst,
            memory_order_relaxed)))
        return 1;
    int r = peerwaiting(c, &c->sendwaiting);
    fastcopy(elem, elemat(c, idx), n);
    STOREREL(stamp, head + c->onelap);
    return r;
}

/*
 * ring_send - put *elem at the ring's tail. Any thread, lock or not.
 * Returns 0, WEFT_ECLOSED (the mark is in tail), or WEFT_EAGAIN (full).
 * *peer (NULL under c->lock, which keeps c alive): as sendfast's 2.
 */
static inline int ring_send(weft_chan_t *c, const void *elem, bool *peer)
{
    unsigned spins = 0;
    uint64_t tail = LOAD(&c->tail);
    for (;;) {
        if (unlikely(tail & c->markbit))
            return WEFT_ECLOSED;
        uint64_t idx = tail & c->idxmask;
        uint64_t lap = tail & ~(c->onelap - 1);
        _Atomic uint64_t *stamp = stampat(c, idx);
        uint64_t st = LOADACQ(stamp);
        if (likely(st == tail)) {
            uint64_t next = idx + 1 < c->cap ? tail + 1 : lap + c->onelap;
            if (likely(atomic_compare_exchange_weak_explicit(
                    &c->tail, &tail, next, memory_order_seq_cst,
                    memory_order_relaxed))) {
                if (peer != NULL)
                    *peer = peerwaiting(c, &c->recvwaiting) != 0;
                copyelem(elemat(c, idx), elem, c->elemsize);
                STOREREL(stamp, tail + 1);
                return 0;
            }
            backoff(&spins); /* tail reloaded by the CAS */
        } else if (st + c->onelap == tail + 1) {
            /* The slot holds last lap's item: full, unless a receiver
             * has claimed it and not yet freed it (invariant 2). */
            atomic_thread_fence(memory_order_seq_cst);
            uint64_t head = LOAD(&c->head);
            if (head + c->onelap == tail)
                return WEFT_EAGAIN;
            backoff(&spins);
            tail = LOAD(&c->tail);
        } else {
            backoff(&spins); /* tail moved under us */
            tail = LOAD(&c->tail);
        }
    }
}

/*
 * ring_recv - take the ring's head into *elem (NULL: discard). Any
 * thread, lock or not. Returns 0, WEFT_ECLOSED (closed and drained:
 * *elem zeroed), or WEFT_EAGAIN (empty). *peer as ring_send's.
 */
static inline int ring_recv(weft_chan_t *c, void *elem, bool *peer)
{
    unsigned spins = 0;
    uint64_t head = LOAD(&c->head);
    for (;;) {
        uint64_t idx = head & c->idxmask;
        uint64_t lap = head & ~(c->onelap - 1);
        _Atomic uint64_t *stamp = stampat(c, idx);
        uint64_t st = LOADACQ(stamp);
        if (likely(st == head + 1)) {
            uint64_t next = idx + 1 < c->cap ? head + 1 : lap + c->onelap;
            if (likely(atomic_compare_exchange_weak_explicit(
                    &c->head, &head, next, memory_order_seq_cst,
                    memory_order_relaxed))) {
                if (peer != NULL)
                    *peer = peerwaiting(c, &c->sendwaiting) != 0;
                if (elem != NULL)
                    copyelem(elem, elemat(c, idx), c->elemsize);
                STOREREL(stamp, head + c->onelap);
                return 0;
            }
            backoff(&spins);
        } else if (st == head) {
            /* Nothing published here yet: empty, unless a sender has
             * claimed the slot and not yet stamped it (invariant 2). */
            atomic_thread_fence(memory_order_seq_cst);
            uint64_t tail = LOAD(&c->tail);
            if ((tail & ~c->markbit) == head) {
                if (tail & c->markbit) {
                    if (elem != NULL)
                        memset(elem, 0, c->elemsize);
                    return WEFT_ECLOSED;
                }
                return WEFT_EAGAIN;
            }
            backoff(&spins);
            head = LOAD(&c->head);
        } else {
            backoff(&spins);
            head = LOAD(&c->head);
        }
    }
}

/* weft__chan_ok - c is a live channel (magic check; see Lifetime). */
bool weft__chan_ok(weft_chan_t *c)
{
    return c != NULL && LOAD(&c->magic) == CHAN_MAGIC;
}

void weft__chan_lock(weft_chan_t *c) { weft__lock(&c->lock); }
void weft__chan_unlock(weft_chan_t *c) { weft__unlock(&c->lock); }

/* chan_unlock_arg - c->lock release as a park unlock function. */
static void chan_unlock_arg(void *c)
{
    weft__unlock(&((weft_chan_t *)c)->lock);
}

/* weft__chan_ref_locked - take a reference for a parked operation.
 * Caller holds c->lock (so c cannot reach zero meanwhile). */
void weft__chan_ref_locked(weft_chan_t *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

/* weft__chan_unref - drop a reference; the last one frees c. Caller does
 * not hold c->lock and touches c no more. */
void weft__chan_unref(weft_chan_t *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
        STORE(&c->magic, 0);
        free(c);
    }
}

/* claimed - finish a won claim: mark the sudog as the one that fired. */
static inline struct g *claimed(struct sudog *s, bool success)
{
    s->success = success;
    s->ticket = TICKET_FIRED;
    return s->g;
}

static inline _Atomic uint32_t *waitflag(weft_chan_t *c, int op)
{
    return op == WEFT_SEND ? &c->sendwaiting : &c->recvwaiting;
}

static inline struct waitq *waitqof(weft_chan_t *c, int op)
{
    return op == WEFT_SEND ? &c->sendq : &c->recvq;
}

/* settle - recompute op's waiting flag from its queue (invariant 1).
 * Caller holds c->lock. */
static inline void settle(weft_chan_t *c, int op)
{
    uint32_t want = waitqof(c, op)->first != NULL;
    if (LOAD(waitflag(c, op)) != want)
        STORE(waitflag(c, op), want);
}

/*
 * handoff_recv_locked - a buffered item was published and a receiver may
 * be parked: wake one with the ring's head (invariant 3). Caller holds
 * c->lock. Returns the G to ready after unlocking, or NULL.
 */
static struct g *handoff_recv_locked(weft_chan_t *c)
{
    struct g *gp = NULL;
    struct sudog *s;
    while ((s = weft__waitq_pop(&c->recvq)) != NULL) {
        if (!weft__wait_claim(s))
            continue; /* timing out: invariant 6 */
        int r = ring_recv(c, s->elem, NULL);
        if (r == WEFT_EAGAIN) {
            s->success = false;
            s->ticket = TICKET_RETRY;
            gp = s->g;
        } else {
            gp = claimed(s, r == 0);
        }
        break;
    }
    settle(c, WEFT_RECV);
    return gp;
}

/* handoff_send_locked - the same for a parked sender and a freed slot. */
static struct g *handoff_send_locked(weft_chan_t *c)
{
    struct g *gp = NULL;
    struct sudog *s;
    while ((s = weft__waitq_pop(&c->sendq)) != NULL) {
        if (!weft__wait_claim(s))
            continue;
        int r = ring_send(c, s->elem, NULL);
        if (r == WEFT_EAGAIN) {
            s->success = false;
            s->ticket = TICKET_RETRY;
            gp = s->g;
        } else {
            gp = claimed(s, r == 0);
        }
        break;
    }
    settle(c, WEFT_SEND);
    return gp;
}

/* wakepeer - after a lock-free op found op's opposite side flagged as
 * waiting: take the lock and hand off to one waiter, then drop the
 * reference peerwaiting took. anythread: the caller may have no P
 * (weft__ready_any). */
static void __attribute__((noinline)) wakepeer(weft_chan_t *c, int op,
                                               bool anythread)
{
    weft__lock(&c->lock);
    struct g *gp = op == WEFT_SEND ? handoff_recv_locked(c)
                                   : handoff_send_locked(c);
    weft__unlock(&c->lock);
    if (gp != NULL) {
        if (anythread)
            weft__ready_any(gp);
        else
            weft__ready(gp);
    }
    weft__chan_unref(c);
}

/*
 * weft__chan_send_locked - send *elem if that needs no waiting: hand it to
 * a blocked receiver (unbuffered), or put it in the ring (buffered, and
 * hand the ring's head to a parked receiver if one is flagged). Caller
 * holds c->lock. Returns 0 (done; *wake is the receiver to ready after
 * unlocking, or stays NULL), WEFT_ECLOSED, or WEFT_EAGAIN (would block).
 */
int weft__chan_send_locked(weft_chan_t *c, const void *elem, struct g **wake)
{
    if (c->cap != 0) {
        int r = ring_send(c, elem, NULL);
        if (r == 0 && LOAD(&c->recvwaiting))
            *wake = handoff_recv_locked(c);
        return r;
    }
    if (unlikely(c->closed))
        return WEFT_ECLOSED;
    struct sudog *s;
    while ((s = weft__waitq_pop(&c->recvq)) != NULL) {
        if (!weft__wait_claim(s))
            continue; /* timing out: invariant 6 */
        if (s->elem != NULL)
            copyelem(s->elem, elem, c->elemsize);
        *wake = claimed(s, true);
        return 0;
    }
    return WEFT_EAGAIN;
}

/*
 * weft__chan_recv_locked - receive into *elem (NULL: discard) if that
 * needs no waiting: from the ring (and refill it from a parked sender if
 * one is flagged), from a blocked sender of an unbuffered channel, or
 * the "closed" result of a closed and drained channel (elem zeroed).
 * Caller holds c->lock. Returns 0 (*wake: sender to ready, or NULL),
 * WEFT_ECLOSED, or WEFT_EAGAIN.
 */
int weft__chan_recv_locked(weft_chan_t *c, void *elem, struct g **wake)
{
    if (c->cap != 0) {
        int r = ring_recv(c, elem, NULL);
        if (r == 0 && LOAD(&c->sendwaiting))
            *wake = handoff_send_locked(c);
        return r;
    }
    struct sudog *s;
    while ((s = weft__waitq_pop(&c->sendq)) != NULL) {
        if (!weft__wait_claim(s))
            continue;
        if (elem != NULL)
            copyelem(elem, s->elem, c->elemsize);
        *wake = claimed(s, true);
        return 0;
    }
    if (c->closed) {
        if (elem != NULL)
            memset(elem, 0, c->elemsize);
        return WEFT_ECLOSED;
    }
    return WEFT_EAGAIN;
}

/* weft__chan_prewait_locked - about to look at c one last time before
 * queueing an op sudog: raise op's waiting flag first (invariant 2, b1).
 * Caller holds c->lock; must follow up with enqueue or unwait. */
static inline void prewait(weft_chan_t *c, int op)
{
    if (c->cap != 0)
        atomic_store(waitflag(c, op), 1); /* seq-cst: b1 before b2 */
}

void weft__chan_prewait_locked(weft_chan_t *c, int op) { prewait(c, op); }

/* weft__chan_unwait_locked - undo a prewait that did not queue. */
static inline void unwait(weft_chan_t *c, int op)
{
    if (c->cap != 0)
        settle(c, op);
}

void weft__chan_unwait_locked(weft_chan_t *c, int op) { unwait(c, op); }

/* weft__chan_enqueue_locked / weft__chan_dequeue_locked - put sudog s on
 * (take it off, if still there) the queue for op (WEFT_SEND/WEFT_RECV).
 * Caller holds c->lock; enqueue follows a prewait. */
void weft__chan_enqueue_locked(weft_chan_t *c, int op, struct sudog *s)
{
    weft__waitq_push(waitqof(c, op), s);
}

void weft__chan_dequeue_locked(weft_chan_t *c, int op, struct sudog *s)
{
    weft__waitq_remove(waitqof(c, op), s);
    if (c->cap != 0)
        settle(c, op);
}

/* weft__chan_retry - whether a woken sudog's wake asks its op to try
 * again (invariant 3) rather than reporting s->success. */
bool weft__chan_retry(const struct sudog *s)
{
    return s->ticket == TICKET_RETRY;
}

/* ------------------------------------------------------------------ API */

WEFT_EXTERN int weft_chan_new(weft_chan_t **out, size_t elemsize, size_t cap)
{
    if (out == NULL || elemsize == 0 || elemsize > CHAN_ELEM_MAX ||
        cap > CHAN_CAP_MAX)
        return WEFT_EINVAL;
    /* elemsize <= 2^16 and cap <= 2^31: the product fits in 2^48. */
    size_t stride = (STAMP_SIZE + elemsize + 7) & ~(size_t)7;
    size_t bytes = sizeof(struct weft_chan) + stride * cap;
    bytes = (bytes + CACHELINE - 1) & ~(size_t)(CACHELINE - 1);
    weft_chan_t *c = aligned_alloc(CACHELINE, bytes);
    if (c == NULL)
        return WEFT_ENOMEM;
    memset(c, 0, sizeof *c);
    c->elemsize = (uint32_t)elemsize;
    c->stride = (uint32_t)stride;
    if (cap != 0 && (elemsize == 4 || elemsize == 8 || elemsize == 16))
        c->fastsize = (uint32_t)elemsize;
    c->cap = cap;
    /* Positions: index below markbit, the mark, the lap above. */
    uint64_t mark = 1;
    while (mark < (uint64_t)cap + 1)
        mark <<= 1;
    c->markbit = mark;
    c->onelap = mark << 1;
    c->idxmask = mark - 1;
    for (size_t i = 0; i < cap; i++)
        atomic_init(stampat(c, i), (uint64_t)i); /* free in lap 0 */
    STORE(&c->refs, 1);
    atomic_store(&c->magic, CHAN_MAGIC);
    *out = c;
    return 0;
}

/* closechan - close c and wake every waiter: receivers get what is left
 * in the ring first (invariant 4). Caller holds c->lock; returns the
 * wake list (chained through s->next) to ready after unlocking, via
 * readylist. */
static struct sudog *closechan_locked(weft_chan_t *c)
{
    struct sudog *list = NULL, *s;
    c->closed = true;
    if (c->cap != 0)
        atomic_fetch_or(&c->tail, c->markbit);
    while ((s = weft__waitq_pop(&c->recvq)) != NULL) {
        if (!weft__wait_claim(s))
            continue;
        if (c->cap != 0) {
            claimed(s, ring_recv(c, s->elem, NULL) == 0);
        } else {
            if (s->elem != NULL)
                memset(s->elem, 0, c->elemsize);
            claimed(s, false);
        }
        s->next = list;
        list = s;
    }
    while ((s = weft__waitq_pop(&c->sendq)) != NULL) {
        if (!weft__wait_claim(s))
            continue;
        claimed(s, false);
        s->next = list;
        list = s;
    }
    STORE(&c->recvwaiting, 0);
    STORE(&c->sendwaiting, 0);
    return list;
}

/* readylist - ready every G of a wake list (invariant 7). */
static void readylist(struct sudog *s)
{
    while (s != NULL) {
        struct sudog *next = s->next;
        weft__ready_any(s->g); /* s is not ours from here */
        s = next;
    }
}

WEFT_EXTERN int weft_chan_close(weft_chan_t *c)
{
    if (!weft__chan_ok(c))
        return WEFT_EINVAL;
    weft__lock(&c->lock);
    if (c->closed) {
        weft__unlock(&c->lock);
        return WEFT_ECLOSED;
    }
    struct sudog *list = closechan_locked(c);
    weft__unlock(&c->lock);
    readylist(list);
    return 0;
}

WEFT_EXTERN int weft_chan_free(weft_chan_t *c)
{
    if (!weft__chan_ok(c))
        return WEFT_EINVAL; /* also spares a lock word in freed memory */
    weft__lock(&c->lock);
    /* Checked under the lock: of two racing frees exactly one wins. */
    uint32_t want = CHAN_MAGIC;
    if (!atomic_compare_exchange_strong(&c->magic, &want, CHAN_FREED)) {
        weft__unlock(&c->lock);
        return WEFT_EINVAL;
    }
    struct sudog *list = c->closed ? NULL : closechan_locked(c);
    weft__unlock(&c->lock);
    readylist(list);
    weft__chan_unref(c);
    return 0;
}

WEFT_EXTERN size_t weft_chan_len(weft_chan_t *c)
{
    if (!weft__chan_ok(c) || c->cap == 0)
        return 0;
    /* A consistent pair: tail unchanged around the head load. */
    for (;;) {
        uint64_t tail = atomic_load(&c->tail);
        uint64_t head = atomic_load(&c->head);
        if (atomic_load(&c->tail) != tail)
            continue;
        tail &= ~c->markbit;
        uint64_t hix = head & (c->markbit - 1);
        uint64_t tix = tail & (c->markbit - 1);
        if (hix < tix)
            return tix - hix;
        if (hix > tix)
            return c->cap - hix + tix;
        return tail == head ? 0 : c->cap;
    }
}

WEFT_EXTERN size_t weft_chan_cap(weft_chan_t *c)
{
    return weft__chan_ok(c) ? c->cap : 0;
}

/* curg - the calling coroutine, or NULL if none may block here. */
static inline struct g *curg(void)
{
    struct g *gp = weft__getg();
    return gp == NULL || gp->syscallp ? NULL : gp;
}

/*
 * chanop - the blocking send (op WEFT_SEND) or receive of coroutine gp
 * (NULL: look it up; WEFT_ENOTCORO if there is none), after argument
 * checks: raise the waiting flag (buffered), try under the lock; else
 * queue a sudog, take a reference, and park until a partner claims it,
 * close wakes it, or deadline passes. A retry wake (invariant 3) starts
 * over.
 */
static int __attribute__((noinline))
chanop(weft_chan_t *c, int op, void *elem, int64_t deadline, struct g *gp)
{
    if (gp == NULL && (gp = curg()) == NULL)
        return WEFT_ENOTCORO;
    /* The reference taken at the first park is kept across retry wakes:
     * once parked, the caller counts as blocked on c, so c may have been
     * weft_chan_free'd (its creator reference dropped) meanwhile. */
    bool held = false;
    int r;
    for (;;) {
        struct g *wake = NULL;
        weft__lock(&c->lock);
        /* Buffered: the caller's lock-free try just failed, so this is
         * the last look, after the flag (invariant 2, b1). */
        prewait(c, op);
        r = op == WEFT_SEND ? weft__chan_send_locked(c, elem, &wake)
                            : weft__chan_recv_locked(c, elem, &wake);
        if (r != WEFT_EAGAIN) {
            unwait(c, op);
            weft__unlock(&c->lock);
            if (wake != NULL)
                weft__ready(wake);
            break;
        }
        if (deadline != WEFT_FOREVER && deadline <= weft__nanotime()) {
            unwait(c, op);
            weft__unlock(&c->lock);
            r = WEFT_ETIMEDOUT;
            break;
        }
        struct sudog s;
        s.g = gp;
        s.seq = weft__wait_prepare(gp);
        s.elem = elem;
        s.obj = c;
        s.idx = 0;
        s.success = false;
        s.ticket = 0;
        weft__chan_enqueue_locked(c, op, &s);
        if (!held)
            weft__chan_ref_locked(c);
        held = true;
        gp = NULL; /* not to be kept across the park */
        r = weft__wait_park(op == WEFT_SEND ? WR_CHAN_SEND
                                            : WR_CHAN_RECEIVE,
                            deadline, chan_unlock_arg, c);
        if (r == WEFT_ETIMEDOUT) {
            weft__lock(&c->lock); /* invariant 6 */
            weft__chan_dequeue_locked(c, op, &s);
            weft__unlock(&c->lock);
            break;
        }
        if (s.ticket != TICKET_RETRY) {
            r = s.success ? 0 : WEFT_ECLOSED;
            break;
        }
        gp = curg();
    }
    if (held)
        weft__chan_unref(c);
    return r;
}

/* sendslow / recvslow - what a buffered channel's fast path left: odd
 * sizes, lost races, full/empty (park), closed. Out of line so the fast
 * path saves no registers for them. */
static int __attribute__((noinline))
sendslow(weft_chan_t *c, const void *elem, int64_t deadline, struct g *gp)
{
    bool peer = false;
    int r = ring_send(c, elem, &peer);
    if (r == 0) {
        if (peer)
            wakepeer(c, WEFT_SEND, false);
        return 0;
    }
    if (r == WEFT_ECLOSED)
        return r;
    return chanop(c, WEFT_SEND, (void *)elem, deadline, gp);
}

static int __attribute__((noinline))
recvslow(weft_chan_t *c, void *elem, int64_t deadline, struct g *gp)
{
    bool peer = false;
    int r = ring_recv(c, elem, &peer);
    if (r == 0) {
        if (peer)
            wakepeer(c, WEFT_RECV, false);
        return 0;
    }
    if (r == WEFT_ECLOSED)
        return r;
    return chanop(c, WEFT_RECV, elem, deadline, gp);
}

/* sendop / recvop - the blocking forms. The fast path is a buffered
 * channel with room (an item), nobody to wake: checks, one CAS, copy.
 * Unbuffered channels go straight to the lock. */
static inline __attribute__((always_inline)) int
sendop(weft_chan_t *c, const void *elem, int64_t deadline)
{
    /* Yield (if asked to) before validating c: see weft_select. */
    weft_checkpoint();
    if (unlikely(!weft__chan_ok(c) || elem == NULL))
        return WEFT_EINVAL;
    if (c->cap == 0)
        return chanop(c, WEFT_SEND, (void *)elem, deadline, NULL);
    struct g *gp = curg();
    if (unlikely(gp == NULL))
        return WEFT_ENOTCORO;
    uint32_t n = c->fastsize;
    if (likely(n != 0)) {
        int r = sendfast(c, elem, n);
        if (likely(r == 0))
            return 0;
        if (r == 2) {
            wakepeer(c, WEFT_SEND, false);
            return 0;
        }
    }
    return sendslow(c, elem, deadline, gp);
}

static inline __attribute__((always_inline)) int
recvop(weft_chan_t *c, void *elem, int64_t deadline)
{
    weft_checkpoint();
    if (unlikely(!weft__chan_ok(c)))
        return WEFT_EINVAL;
    if (c->cap == 0)
        return chanop(c, WEFT_RECV, elem, deadline, NULL);
    struct g *gp = curg();
    if (unlikely(gp == NULL))
        return WEFT_ENOTCORO;
    uint32_t n = c->fastsize;
    if (likely(n != 0)) {
        int r = recvfast(c, elem, n);
        if (likely(r == 0))
            return 0;
        if (r == 2) {
            wakepeer(c, WEFT_RECV, false);
            return 0;
        }
    }
    return recvslow(c, elem, deadline, gp);
}

/* weft__chan_tryop - the non-blocking send (op WEFT_SEND) or receive;
 * any thread. Buffered channels need no lock unless a waiter is
 * flagged. select.c's first pass uses it. */
int weft__chan_tryop(weft_chan_t *c, int op, void *elem)
{
    if (c->cap != 0) {
        uint32_t n = c->fastsize;
        bool peer = false;
        int r = 1;
        if (n != 0)
            r = op == WEFT_SEND ? sendfast(c, elem, n)
                                : recvfast(c, elem, n);
        if (r == 1) {
            r = op == WEFT_SEND ? ring_send(c, elem, &peer)
                                : ring_recv(c, elem, &peer);
            if (r != 0)
                return r;
        }
        if (r == 2 || peer)
            wakepeer(c, op, true);
        return 0;
    }
    struct g *wake = NULL;
    weft__lock(&c->lock);
    int r = op == WEFT_SEND ? weft__chan_send_locked(c, elem, &wake)
                            : weft__chan_recv_locked(c, elem, &wake);
    weft__unlock(&c->lock);
    if (wake != NULL)
        weft__ready_any(wake);
    return r;
}

WEFT_EXTERN int weft_chan_send(weft_chan_t *c, const void *elem)
{
    return sendop(c, elem, WEFT_FOREVER);
}

WEFT_EXTERN int weft_chan_send_dl(weft_chan_t *c, const void *elem,
                                  int64_t deadline)
{
    return sendop(c, elem, deadline);
}

WEFT_EXTERN int weft_chan_trysend(weft_chan_t *c, const void *elem)
{
    if (unlikely(!weft__chan_ok(c) || elem == NULL))
        return WEFT_EINVAL;
    return weft__chan_tryop(c, WEFT_SEND, (void *)elem);
}

WEFT_EXTERN int weft_chan_recv(weft_chan_t *c, void *elem)
{
    return recvop(c, elem, WEFT_FOREVER);
}

WEFT_EXTERN int weft_chan_recv_dl(weft_chan_t *c, void *elem,
                                  int64_t deadline)
{
    return recvop(c, elem, deadline);
}

WEFT_EXTERN int weft_chan_tryrecv(weft_chan_t *c, void *elem)
{
    if (unlikely(!weft__chan_ok(c)))
        return WEFT_EINVAL;
    return weft__chan_tryop(c, WEFT_RECV, elem);
}
