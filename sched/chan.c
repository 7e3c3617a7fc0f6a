/*
 * chan.c - Go's channels (runtime/chan.go): a FIFO of fixed-size
 * elements, unbuffered or buffered, with blocked senders and receivers
 * parked on per-channel wait queues through park.c's wait protocol.
 * select.c builds weft_select on the *_locked helpers below.
 *
 * A channel is one allocation: the header, then cap * elemsize bytes of
 * ring buffer. Under c->lock: count/sendx/recvx (the ring), closed, and
 * the two wait queues of sudogs (each on its waiter's stack). A blocked
 * sender's sudog points at its value (s->elem), a blocked receiver's at
 * its destination (NULL: discard), so a partner copies straight to or from
 * the waiter's memory (Go's direct hand-off) without passing the buffer.
 *
 * Invariants:
 *  1. A live waiter on sendq means the buffer is full (count == cap), a
 *     live waiter on recvq that it is empty; both queues may also hold
 *     stale sudogs of waiters that are timing out (see 4), which anyone
 *     popping them skips.
 *  2. Only the party that wins weft__wait_claim(s) touches a waiter's
 *     memory (s->elem, s->success, s->ticket) and readies it. It claims
 *     FIRST and copies AFTER, while still holding c->lock: a claim can
 *     fail (the deadline timer won), and a timed-out receiver must find
 *     its *elem untouched. The waiter cannot observe the copy early: it
 *     runs again only after the winner's weft__ready, which comes after
 *     the copy (the run queue's release store orders it), so park.c's
 *     "fill in before the CAS" is not needed when the filler is also
 *     the only one who can ready the G.
 *  3. s->success: true if the operation happened, false if close woke
 *     the waiter. s->ticket = 1 marks the sudog whose claim woke the G
 *     (select uses it to learn which case fired).
 *  4. A waiter woken by its deadline (WEFT_ETIMEDOUT) may still be
 *     queued: it retakes c->lock and removes its sudog if s->queued. A
 *     waker that popped it already cleared s->queued under the same lock
 *     and, having lost the claim, dropped it.
 *  5. Readying happens after c->lock is released (wake lists are built
 *     under the lock, chained through s->next, and s->g and s->next are
 *     read before the G is readied: after that its stack is not ours).
 *     weft__ready_any is used, so trysend/tryrecv/close from a thread
 *     with no P queue the G globally.
 *
 * Lifetime (weft.h): c->refs counts the creator (until weft_chan_free)
 * plus one per parked operation (taken under c->lock before parking,
 * dropped after the op last touched c). The last drop clears c->magic and
 * frees. weft_chan_free closes the channel (waking every waiter, which
 * still hold their references), sets magic to CHAN_FREED so later calls
 * on the same pointer get WEFT_EINVAL while the memory lives, and drops
 * the creator's reference. Once the memory is gone, the magic check is a
 * best effort (it reads freed memory; reused memory defeats it).
 *
 * Locking: c->lock is a wlock (short sections, never across a switch; the
 * park's unlock function releases it after the switch). Several channel
 * locks are taken only by select, in address order (select.c). Order:
 * channel locks > pp->timerlock (park.c's commit arms the deadline timer
 * before its unlock function releases the channel locks). sched.lock is
 * never taken under a channel lock: Gs are readied after unlocking.
 *
 * Rejected: a lock-free fast path for buffered channels (Go has none for
 * the general case either; the lock is uncontended in the common
 * ping-pong and the hand-off needs it anyway); copying the value into a
 * waiter before its claim (invariant 2: a timing-out receiver would see
 * its buffer overwritten with a value it never received).
 */
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

#define CHAN_MAGIC 0x6368616eu /* "chan" */
#define CHAN_FREED 0x66726565u /* "free": weft_chan_free was called */
#define CHAN_ELEM_MAX 65536u
#define CHAN_CAP_MAX ((size_t)1 << 31)

struct weft_chan {
    wlock lock;
    _Atomic uint32_t magic;  /* CHAN_MAGIC until free, then CHAN_FREED */
    _Atomic uint32_t refs;   /* atomic: creator + parked operations */
    uint32_t elemsize;       /* immutable */
    bool closed;             /* lock */
    size_t cap;              /* immutable */
    _Atomic size_t count;    /* lock writes; len() reads racily */
    size_t sendx, recvx;     /* lock: ring indices */
    struct waitq sendq;      /* lock: blocked senders */
    struct waitq recvq;      /* lock: blocked receivers */
    unsigned char buf[];     /* cap * elemsize, immutable size */
};


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

/* weft__chan_ok - c is a live channel (magic check; see Lifetime). */
bool weft__chan_ok(weft_chan_t *c)
{
    return c != NULL && LOAD(&c->magic) == CHAN_MAGIC;
}

void weft__chan_lock(weft_chan_t *c) { weft__lock(&c->lock); }
void weft__chan_unlock(weft_chan_t *c) { weft__unlock(&c->lock); }

/* weft__chan_unlock_arg - c->lock release as a park unlock function. */
void weft__chan_unlock_arg(void *c)
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
    s->ticket = 1;
    return s->g;
}

/*
 * weft__chan_send_locked - send *elem if that needs no waiting: hand it to
 * a blocked receiver, or append it to the buffer. Caller holds c->lock.
 * Returns 0 (done; *wake is the receiver to ready after unlocking, or
 * stays NULL), WEFT_ECLOSED, or WEFT_EAGAIN (would block).
 */
int weft__chan_send_locked(weft_chan_t *c, const void *elem, struct g **wake)
{
    if (unlikely(c->closed))
        return WEFT_ECLOSED;
    struct sudog *s;
    while ((s = weft__waitq_pop(&c->recvq)) != NULL) {
        if (!weft__wait_claim(s))
            continue; /* timing out: invariant 4 */
        if (s->elem != NULL)
            copyelem(s->elem, elem, c->elemsize);
        *wake = claimed(s, true);
        return 0;
    }
    size_t n = LOAD(&c->count);
    if (n < c->cap) {
        copyelem(c->buf + c->sendx * c->elemsize, elem, c->elemsize);
        if (++c->sendx == c->cap)
            c->sendx = 0;
        STORE(&c->count, n + 1);
        return 0;
    }
    return WEFT_EAGAIN;
}

/*
 * weft__chan_recv_locked - receive into *elem (NULL: discard) if that
 * needs no waiting: from the buffer (refilled from a blocked sender, as
 * Go's recv), from a blocked sender of an unbuffered channel, or the
 * "closed" result of a closed and drained channel (elem zeroed). Caller
 * holds c->lock. Returns 0 (*wake: sender to ready, or NULL),
 * WEFT_ECLOSED, or WEFT_EAGAIN.
 */
int weft__chan_recv_locked(weft_chan_t *c, void *elem, struct g **wake)
{
    struct sudog *s;
    while ((s = weft__waitq_pop(&c->sendq)) != NULL) {
        if (!weft__wait_claim(s))
            continue;
        if (c->cap == 0) {
            if (elem != NULL)
                copyelem(elem, s->elem, c->elemsize);
        } else {
            /* Full buffer (invariant 1): take its head, put the sender's
             * value at its tail, which is the same slot. */
            unsigned char *slot = c->buf + c->recvx * c->elemsize;
            if (elem != NULL)
                copyelem(elem, slot, c->elemsize);
            copyelem(slot, s->elem, c->elemsize);
            if (++c->recvx == c->cap)
                c->recvx = 0;
            c->sendx = c->recvx;
        }
        *wake = claimed(s, true);
        return 0;
    }
    size_t n = LOAD(&c->count);
    if (n > 0) {
        if (elem != NULL)
            copyelem(elem, c->buf + c->recvx * c->elemsize, c->elemsize);
        if (++c->recvx == c->cap)
            c->recvx = 0;
        STORE(&c->count, n - 1);
        return 0;
    }
    if (c->closed) {
        if (elem != NULL)
            memset(elem, 0, c->elemsize);
        return WEFT_ECLOSED;
    }
    return WEFT_EAGAIN;
}

/* weft__chan_enqueue_locked / weft__chan_dequeue_locked - put sudog s on
 * (take it off, if still there) the queue for op (WEFT_SEND/WEFT_RECV).
 * Caller holds c->lock. */
void weft__chan_enqueue_locked(weft_chan_t *c, int op, struct sudog *s)
{
    weft__waitq_push(op == WEFT_SEND ? &c->sendq : &c->recvq, s);
}

void weft__chan_dequeue_locked(weft_chan_t *c, int op, struct sudog *s)
{
    weft__waitq_remove(op == WEFT_SEND ? &c->sendq : &c->recvq, s);
}

/* ------------------------------------------------------------------ API */

WEFT_EXTERN int weft_chan_new(weft_chan_t **out, size_t elemsize, size_t cap)
{
    if (out == NULL || elemsize == 0 || elemsize > CHAN_ELEM_MAX ||
        cap > CHAN_CAP_MAX)
        return WEFT_EINVAL;
    /* elemsize <= 2^16 and cap <= 2^31: the product fits in 2^47. */
    size_t bytes = sizeof(struct weft_chan) + elemsize * cap;
    weft_chan_t *c = malloc(bytes);
    if (c == NULL)
        return WEFT_ENOMEM;
    memset(c, 0, sizeof *c);
    c->elemsize = (uint32_t)elemsize;
    c->cap = cap;
    STORE(&c->refs, 1);
    atomic_store(&c->magic, CHAN_MAGIC);
    *out = c;
    return 0;
}

/* closechan - close c and wake every waiter. Caller holds c->lock;
 * returns the wake list (chained through s->next) to ready after
 * unlocking, via readylist. */
static struct sudog *closechan_locked(weft_chan_t *c)
{
    struct sudog *list = NULL, *s;
    c->closed = true;
    /* Receivers: the buffer is empty if any is blocked (invariant 1). */
    while ((s = weft__waitq_pop(&c->recvq)) != NULL) {
        if (!weft__wait_claim(s))
            continue;
        if (s->elem != NULL)
            memset(s->elem, 0, c->elemsize);
        claimed(s, false);
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
    return list;
}

/* readylist - ready every G of a wake list (invariant 5). */
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
    return weft__chan_ok(c) ? LOAD(&c->count) : 0;
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
 * chanop - the blocking send (op WEFT_SEND) or receive, after argument
 * checks: try under the lock; else queue a sudog, take a reference, and
 * park until a partner claims it, close wakes it, or deadline passes.
 */
static int chanop(weft_chan_t *c, int op, void *elem, int64_t deadline)
{
    struct g *gp = curg();
    if (unlikely(gp == NULL))
        return WEFT_ENOTCORO;
    struct g *wake = NULL;
    weft__lock(&c->lock);
    int r = op == WEFT_SEND ? weft__chan_send_locked(c, elem, &wake)
                            : weft__chan_recv_locked(c, elem, &wake);
    if (r != WEFT_EAGAIN) {
        weft__unlock(&c->lock);
        if (wake != NULL)
            weft__ready(wake);
        return r;
    }
    if (deadline != WEFT_FOREVER && deadline <= weft__nanotime()) {
        weft__unlock(&c->lock);
        return WEFT_ETIMEDOUT;
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
    weft__chan_ref_locked(c);
    r = weft__wait_park(op == WEFT_SEND ? WR_CHAN_SEND : WR_CHAN_RECEIVE,
                        deadline, weft__chan_unlock_arg, c);
    if (r == WEFT_ETIMEDOUT) {
        weft__lock(&c->lock); /* invariant 4 */
        weft__chan_dequeue_locked(c, op, &s);
        weft__unlock(&c->lock);
    } else {
        r = s.success ? 0 : WEFT_ECLOSED;
    }
    weft__chan_unref(c);
    return r;
}

/* tryop - the non-blocking send or receive; any thread. */
static int tryop(weft_chan_t *c, int op, void *elem)
{
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
    return weft_chan_send_dl(c, elem, WEFT_FOREVER);
}

WEFT_EXTERN int weft_chan_send_dl(weft_chan_t *c, const void *elem,
                                  int64_t deadline)
{
    /* Yield (if asked to) before validating c: see weft_select. */
    weft_checkpoint();
    if (unlikely(!weft__chan_ok(c) || elem == NULL))
        return WEFT_EINVAL;
    return chanop(c, WEFT_SEND, (void *)elem, deadline);
}

WEFT_EXTERN int weft_chan_trysend(weft_chan_t *c, const void *elem)
{
    if (unlikely(!weft__chan_ok(c) || elem == NULL))
        return WEFT_EINVAL;
    return tryop(c, WEFT_SEND, (void *)elem);
}

WEFT_EXTERN int weft_chan_recv(weft_chan_t *c, void *elem)
{
    return weft_chan_recv_dl(c, elem, WEFT_FOREVER);
}

WEFT_EXTERN int weft_chan_recv_dl(weft_chan_t *c, void *elem,
                                  int64_t deadline)
{
    /* Yield (if asked to) before validating c: see weft_select. */
    weft_checkpoint();
    if (unlikely(!weft__chan_ok(c)))
        return WEFT_EINVAL;
    return chanop(c, WEFT_RECV, elem, deadline);
}

WEFT_EXTERN int weft_chan_tryrecv(weft_chan_t *c, void *elem)
{
    if (unlikely(!weft__chan_ok(c)))
        return WEFT_EINVAL;
    return tryop(c, WEFT_RECV, elem);
}
